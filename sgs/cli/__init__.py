"""The `sgs` command line."""
