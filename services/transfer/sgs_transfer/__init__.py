"""The transfer service: replication rules as rows, verified copies between Sites, ingestion on arrival."""
