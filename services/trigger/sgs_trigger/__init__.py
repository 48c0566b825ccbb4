"""sgs trigger: Runs created when data arrives (``Pipeline.spec.triggers``), from the archive's events."""
