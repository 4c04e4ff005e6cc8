"""Subprocesses: PostgreSQL's client tools (pg_dump, pg_restore) and where to find them."""
