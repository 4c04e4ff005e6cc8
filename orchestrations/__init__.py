"""Durable orchestrators: short deterministic generators, one workflow per file."""
