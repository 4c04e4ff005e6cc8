"""Reactions to failed backups: RPO exposure, retries and escalation."""
