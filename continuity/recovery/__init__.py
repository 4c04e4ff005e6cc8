"""Per-tenant recovery to a known-good backup: rules and use cases."""
