"""What we know of Odoo's schema, version by version."""
