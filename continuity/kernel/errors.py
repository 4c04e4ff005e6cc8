"""One exception root; subclasses name what a caller can act on.

Triggers map :class:`ContinuityError` to a 4xx ``{"error": {"code", "message"}}``; any other
exception is a 5xx and a bug.
"""

from __future__ import annotations


class ContinuityError(Exception):
    """Root of every error this product raises on purpose."""

    code = "continuity_error"
    http_status = 400


class ConfigError(ContinuityError):
    code = "config_invalid"


class UnknownTenant(ContinuityError):
    code = "unknown_tenant"
    http_status = 404


class DatabaseMissing(ContinuityError):
    code = "database_missing"
    http_status = 409


class BackupNotFound(ContinuityError):
    code = "backup_not_found"
    http_status = 404


class BackupCorrupted(ContinuityError):
    code = "backup_corrupted"
    http_status = 422


class BackupNotValidatable(ContinuityError):
    """The catalog does not hold the backup as restorable (rejected, pending, missing, deleted)."""

    code = "backup_not_validatable"
    http_status = 409


class BackupConflict(ContinuityError):
    """A different manifest arrived under an id that is already cataloged."""

    code = "backup_conflict"
    http_status = 409


class StoreUnavailable(ContinuityError):
    code = "store_unavailable"
    http_status = 503


class ServerUnavailable(ContinuityError):
    code = "server_unavailable"
    http_status = 503


class PortInUse(ContinuityError):
    code = "port_in_use"


class SandboxNotIsolated(ContinuityError):
    code = "sandbox_not_isolated"
    http_status = 409


class ApprovalRefused(ContinuityError):
    code = "approval_refused"
    http_status = 403


class InvalidRequest(ContinuityError):
    code = "invalid_request"


class Unauthorized(ContinuityError):
    code = "unauthorized"
    http_status = 401


class Forbidden(ContinuityError):
    code = "forbidden"
    http_status = 403


class Conflict(ContinuityError):
    code = "conflict"
    http_status = 409


class ToolMissing(ContinuityError):
    code = "tool_missing"
    http_status = 500
