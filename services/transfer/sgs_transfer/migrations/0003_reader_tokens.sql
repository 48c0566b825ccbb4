-- A reader token may call every GET and nothing that changes a rule: what the console reads with, so that
-- it has no rights of its own here (people act with their own tokens).
ALTER TABLE api_token ADD COLUMN is_reader boolean NOT NULL DEFAULT false;
ALTER TABLE api_token ADD CONSTRAINT api_token_reader_not_admin CHECK (NOT (is_admin AND is_reader));
