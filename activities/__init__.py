"""Durable activities: thin wrappers that call into :mod:`continuity`."""
