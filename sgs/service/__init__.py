"""What the sgs services (archive, transfer) share: errors in FastAPI's shape, SQL migrations, bearer tokens."""
