"""SQL over the service's own schema: rules, locks, transfers, replicas (one module per table family)."""
