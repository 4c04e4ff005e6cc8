"""Odoo's own backup format (database-manager zip, plain SQL or custom dumps) brought in and taken out."""
