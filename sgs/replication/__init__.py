"""Replication as pure functions: rule selectors, where copies go, where they come from, when to retry.

The transfer service translates between the outside world (PostgreSQL rows, JetStream messages, object
stores) and these functions; nothing here does I/O or reads a clock.
"""
