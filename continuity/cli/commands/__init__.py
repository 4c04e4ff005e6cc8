"""Subcommands of the ``continuity`` CLI, one module per area; each exposes ``register(subparsers)``."""
