"""Adapters: the only code that does I/O (storage, PostgreSQL, ARM, Key Vault, subprocesses)."""
