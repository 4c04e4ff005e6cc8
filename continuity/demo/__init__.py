"""Deterministic Odoo-shaped demo tenants."""
