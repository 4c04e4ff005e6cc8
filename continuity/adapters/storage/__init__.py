"""Blob storage: backups, retention tiers and the evidence container."""
