"""Recovery control plane for multi-tenant Odoo-on-PostgreSQL hosting.

The domain modules here are pure Python; everything that touches a socket, an SDK or a
subprocess lives in :mod:`continuity.adapters`.
"""
