"""The sgs archive service: datasets by dimensions, collections, replicas and lineage in PostgreSQL."""
