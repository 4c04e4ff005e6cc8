"""Approval-gated regional failover: preflight rules, fencing and promotion decisions, and the use cases."""
