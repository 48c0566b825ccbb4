"""Registry operations: each module owns one resource's SQL, called by the thin HTTP routers."""
