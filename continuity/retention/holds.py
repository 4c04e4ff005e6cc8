"""Legal holds: a tenant or one backup that retention must not delete, with who set it and why.

Pure rules (no I/O, no clock): :func:`hold_refusal` and :func:`clear_refusal` return the reason a
request is refused (or None), Patroni-style; :func:`check_set` / :func:`check_clear` raise it as the
error a caller can act on. Persistence is :mod:`continuity.adapters.hold_store`.

Rules:

- a hold names a tenant of the registry, and optionally one of its cataloged backups that is not
  yet deleted (a hold on something unknown is refused: it would protect nothing and mislead);
- a reason (1-500 characters) and an actor holding the approver or admin role are required, to set
  and to clear;
- setting a hold that is already active changes nothing (the first one stays, with its reason);
- clearing needs an active hold set through the API: a hold declared in the tenant registry
  (``legal_hold: true``) is cleared by changing the registry in version control, not over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from continuity.kernel.errors import BackupNotFound, Conflict, ContinuityError, Forbidden, InvalidRequest, UnknownTenant
from continuity.kernel.identity import Principal, Role
from continuity.kernel.tenants import TENANT_ID_RE, Registry
from continuity.retention.planner import Holds

MAX_REASON_CHARS = 500
# Roles that may set or clear a hold (admin implies approver).
HOLD_ROLE = Role.APPROVER


class HoldNotFound(Conflict):
    """Clearing a hold that is not active."""

    code = "hold_not_found"
    http_status = 404


@dataclass(frozen=True)
class LegalHold:
    """One hold as recorded; ``backup_id`` None means the whole tenant."""

    tenant: str
    backup_id: str | None
    reason: str
    set_by: str
    set_at: datetime
    cleared_by: str | None = None
    cleared_at: datetime | None = None
    clear_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.tenant, self.backup_id)

    @property
    def subject(self) -> str:
        """The evidence subject of this hold."""
        return f"hold/{self.tenant}" + (f"/{self.backup_id}" if self.backup_id else "")

    def to_json(self) -> dict[str, Any]:
        def ts(value: datetime | None) -> str | None:
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None

        return {"tenant": self.tenant, "backup_id": self.backup_id, "scope": "backup" if self.backup_id else "tenant",
                "reason": self.reason, "set_by": self.set_by, "set_at": ts(self.set_at), "active": self.active,
                "cleared_by": self.cleared_by, "cleared_at": ts(self.cleared_at), "clear_reason": self.clear_reason}


Problem = tuple[type[ContinuityError], str]


def _reason_problem(reason: str) -> Problem | None:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        return InvalidRequest, "a legal hold needs a reason (e.g. the case or ticket it is for)"
    if len(text) > MAX_REASON_CHARS:
        return InvalidRequest, f"the reason is {len(text)} characters; at most {MAX_REASON_CHARS}"
    return None


def _actor_problem(actor: Principal, verb: str) -> Problem | None:
    if actor.has(HOLD_ROLE):
        return None
    held = ", ".join(sorted(str(r) for r in actor.roles)) or "none"
    return Forbidden, f"{actor.name} may not {verb} legal holds: it needs the approver or admin role (holds: {held})"


def _tenant_problem(registry: Registry, tenant: str) -> Problem | None:
    if isinstance(tenant, str) and TENANT_ID_RE.fullmatch(tenant) and any(t.id == tenant for t in registry.tenants):
        return None
    shown = tenant if isinstance(tenant, str) and TENANT_ID_RE.fullmatch(tenant) else repr(str(tenant)[:60])
    return UnknownTenant, f"unknown tenant {shown}; known tenants: {', '.join(t.id for t in registry.tenants)}"


def _set_problem(registry: Registry, tenant: str, backup_id: str | None, reason: str, actor: Principal,
                 backup_status: str | None) -> Problem | None:
    problem = _actor_problem(actor, "set") or _tenant_problem(registry, tenant)
    if problem:
        return problem
    if backup_id is not None:
        if backup_status is None:
            return BackupNotFound, (f"tenant {tenant} has no backup {backup_id[:40]!r} in the catalog; a hold on it "
                                    f"would protect nothing (list them with `continuity catalog list --tenant "
                                    f"{tenant}`)")
        if backup_status == "deleted":
            return Conflict, f"backup {tenant}/{backup_id} was already deleted by retention; there is nothing to hold"
    return _reason_problem(reason)


def _clear_problem(registry: Registry, tenant: str, backup_id: str | None, reason: str, actor: Principal,
                   active: LegalHold | None) -> Problem | None:
    problem = _actor_problem(actor, "clear") or _tenant_problem(registry, tenant)
    if problem:
        return problem
    if active is None:
        if backup_id is None and registry.get_tenant(tenant).legal_hold:
            return Conflict, (f"the legal hold on tenant {tenant} is declared in the tenant registry "
                              "(legal_hold: true); clear it there, through version control")
        what = f"backup {tenant}/{backup_id}" if backup_id else f"tenant {tenant}"
        return HoldNotFound, f"there is no active legal hold on {what} to clear"
    return _reason_problem(reason)


def hold_refusal(registry: Registry, tenant: str, backup_id: str | None, reason: str, actor: Principal,
                 backup_status: str | None) -> str | None:
    """Why this hold may not be set, or None.

    :param backup_status: the catalog status of ``backup_id`` (None when the catalog has no such backup);
        ignored for a tenant hold.
    """
    problem = _set_problem(registry, tenant, backup_id, reason, actor, backup_status)
    return problem[1] if problem else None


def clear_refusal(registry: Registry, tenant: str, backup_id: str | None, reason: str, actor: Principal,
                  active: LegalHold | None) -> str | None:
    """Why this hold may not be cleared, or None."""
    problem = _clear_problem(registry, tenant, backup_id, reason, actor, active)
    return problem[1] if problem else None


def check_set(registry: Registry, tenant: str, backup_id: str | None, reason: str, actor: Principal,
              backup_status: str | None) -> None:
    """:raises Forbidden, UnknownTenant, BackupNotFound, Conflict, InvalidRequest: naming the rule."""
    problem = _set_problem(registry, tenant, backup_id, reason, actor, backup_status)
    if problem:
        raise problem[0](problem[1])


def check_clear(registry: Registry, tenant: str, backup_id: str | None, reason: str, actor: Principal,
                active: LegalHold | None) -> None:
    """:raises Forbidden, UnknownTenant, HoldNotFound, Conflict, InvalidRequest: naming the rule."""
    problem = _clear_problem(registry, tenant, backup_id, reason, actor, active)
    if problem:
        raise problem[0](problem[1])


def new_hold(tenant: str, backup_id: str | None, reason: str, actor: Principal, at: datetime) -> LegalHold:
    return LegalHold(tenant=tenant, backup_id=backup_id, reason=reason.strip(), set_by=actor.name, set_at=at)


def planning_holds(registry: Registry, active: Iterable[LegalHold]) -> Holds:
    """What the retention planner must respect: registry tenant holds plus every active recorded hold."""
    holds = [h for h in active if h.active]
    tenants = {t.id for t in registry.tenants if t.legal_hold} | {h.tenant for h in holds if h.backup_id is None}
    backups = {(h.tenant, h.backup_id) for h in holds if h.backup_id is not None}
    return Holds.of(tenants, backups)


def held_reason(holds: Holds, tenant: str, backup_id: str) -> str | None:
    """Why a backup is under a legal hold now, or None (used to re-check a delete right before it runs)."""
    if holds.tenant_held(tenant):
        return f"legal hold on tenant {tenant}"
    if holds.backup_held(tenant, backup_id):
        return f"legal hold on backup {tenant}/{backup_id}"
    return None
