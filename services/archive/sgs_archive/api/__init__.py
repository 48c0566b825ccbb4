"""HTTP routers, one per resource: parse, call the registry, map the answer."""
