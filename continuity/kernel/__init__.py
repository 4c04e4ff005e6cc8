"""What every capability shares: errors, settings, the tenant registry, identity and outgoing events."""
