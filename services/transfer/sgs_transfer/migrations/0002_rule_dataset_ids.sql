-- A rule may select exactly a list of datasets (a Run's stage-in) instead of type / collections / expression.
ALTER TABLE rule ADD COLUMN dataset_ids uuid[] NOT NULL DEFAULT '{}';
