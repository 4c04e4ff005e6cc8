"""Retention planning: which backups to keep, tier colder, lock or delete — a pure function of a snapshot.

:func:`plan_retention` looks at the catalog's backups, the tenants' policies and the legal holds at a
given ``now`` and returns a :class:`RetentionPlan`: one decision per backup (KEEP or DELETE, each with
the rule that caused it as a sentence) plus the SET_TIER and SET_IMMUTABILITY actions the kept backups
need. It reads no clock and does no I/O; applying the plan is another step (Barman: retention produces
a report, deleting is another step).

Guarantees (property-tested in tests/unit/test_retention_planner.py):

- the newest validated backup of a tenant is never deleted;
- nothing under a legal hold (tenant or backup) or before its ``immutable_until`` is deleted;
- a tenant keeps at least ``min_copies`` usable backups (or all it has, if fewer);
- nothing is archived that the policy requires validated first;
- tiers only move colder; immutability is only set or extended, never shortened;
- planning again after applying a plan, at the same ``now``, changes nothing.

Doubt resolves toward keeping: a tenant without a policy, a pending or missing backup, a backup whose
validation failed recently — all are kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from continuity.kernel.errors import InvalidRequest
from continuity.kernel.tenants import TENANT_ID_RE, Registry, RetentionPolicy, StorageTier

PLAN_FORMAT = "continuity.retention-plan/1"


class InvalidRetentionInput(InvalidRequest):
    """A candidate, hold or plan given to the planner is malformed."""

    code = "retention_input_invalid"


class CandidateStatus(StrEnum):
    """The catalog statuses a backup can have, as the planner reads them."""

    AVAILABLE = "AVAILABLE"
    VALIDATED = "VALIDATED"
    FAILED_VALIDATION = "FAILED_VALIDATION"
    PENDING = "PENDING"
    REJECTED = "REJECTED"
    MISSING = "MISSING"
    DELETED = "DELETED"


# Only these count for GFS slots and min_copies: a backup we could restore from.
USABLE_STATUSES = frozenset({CandidateStatus.AVAILABLE, CandidateStatus.VALIDATED})
# Statuses whose blobs we protect with an immutability policy (pending: it may be the next good one).
LOCKABLE_STATUSES = frozenset({CandidateStatus.AVAILABLE, CandidateStatus.VALIDATED, CandidateStatus.PENDING})
# Statuses whose blobs we move between tiers: present in storage and not being read right now.
TIERABLE_STATUSES = frozenset({CandidateStatus.AVAILABLE, CandidateStatus.VALIDATED,
                               CandidateStatus.FAILED_VALIDATION, CandidateStatus.REJECTED})
UNUSABLE_STATUSES = frozenset({CandidateStatus.FAILED_VALIDATION, CandidateStatus.REJECTED})

TIER_ORDER: dict[StorageTier, int] = {
    StorageTier.HOT: 0, StorageTier.COOL: 1, StorageTier.COLD: 2, StorageTier.ARCHIVE: 3,
}


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRetentionInput(f"{what} {value.isoformat()} has no time zone; pass an aware UTC datetime")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, the form plans and outcomes use in JSON."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str, what: str = "time") -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRetentionInput(f"{what} {value!r} is not an ISO 8601 time like 2026-11-14T02:00:00Z") from exc
    return _utc(parsed, what)


@dataclass(frozen=True)
class RetentionCandidate:
    """One cataloged backup as the planner sees it. Times are normalised to UTC.

    :raises InvalidRetentionInput: naming the field, for a bad tenant id, empty backup id, unknown
        status or tier, or a time without a time zone.
    """

    tenant: str
    backup_id: str
    created_at: datetime
    status: str
    tier: str = StorageTier.HOT
    immutable_until: datetime | None = None
    legal_hold: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.tenant, str) or not TENANT_ID_RE.match(self.tenant):
            raise InvalidRetentionInput(f"candidate tenant {self.tenant!r} is not a tenant id "
                                        "(^[a-z][a-z0-9-]{1,39}$)")
        if not isinstance(self.backup_id, str) or not self.backup_id or len(self.backup_id) > 100 \
                or "/" in self.backup_id:
            raise InvalidRetentionInput(f"candidate {self.tenant}: backup_id {self.backup_id!r} must be a "
                                        "non-empty id of at most 100 characters without '/'")
        where = f"candidate {self.tenant}/{self.backup_id}"
        try:
            status = CandidateStatus(self.status)
        except ValueError:
            raise InvalidRetentionInput(
                f"{where}: status {self.status!r} is unknown; use one of "
                f"{', '.join(s.value for s in CandidateStatus)}") from None
        try:
            tier = StorageTier(self.tier)
        except ValueError:
            raise InvalidRetentionInput(
                f"{where}: tier {self.tier!r} is unknown; use one of "
                f"{', '.join(t.value for t in StorageTier)}") from None
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "tier", tier)
        object.__setattr__(self, "created_at", _utc(self.created_at, f"{where}: created_at"))
        if self.immutable_until is not None:
            object.__setattr__(self, "immutable_until", _utc(self.immutable_until, f"{where}: immutable_until"))
        object.__setattr__(self, "legal_hold", bool(self.legal_hold))

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.backup_id)

    @property
    def usable(self) -> bool:
        return self.status in USABLE_STATUSES


@dataclass(frozen=True)
class Holds:
    """Legal holds: whole tenants, and single backups as ``(tenant, backup_id)`` keys."""

    tenants: frozenset[str] = frozenset()
    backups: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def of(cls, tenants: Iterable[str] = (), backups: Iterable[tuple[str, str]] = ()) -> Holds:
        return cls(frozenset(tenants), frozenset((t, b) for t, b in backups))

    @classmethod
    def from_registry(cls, registry: Registry, backups: Iterable[tuple[str, str]] = ()) -> Holds:
        """Tenant holds from the registry's ``legal_hold`` flags, plus the given backup holds."""
        return cls.of((t.id for t in registry.tenants if t.legal_hold), backups)

    def tenant_held(self, tenant: str) -> bool:
        return tenant in self.tenants

    def backup_held(self, tenant: str, backup_id: str) -> bool:
        return (tenant, backup_id) in self.backups


class ActionKind(StrEnum):
    KEEP = "KEEP"
    SET_TIER = "SET_TIER"
    SET_IMMUTABILITY = "SET_IMMUTABILITY"
    DELETE = "DELETE"


@dataclass(frozen=True)
class _Action:
    kind: ClassVar[ActionKind]
    tenant: str
    backup_id: str
    created_at: datetime
    reason: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.backup_id)

    @property
    def changes_storage(self) -> bool:
        return self.kind is not ActionKind.KEEP

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "tenant": self.tenant, "backup_id": self.backup_id,
                "created_at": format_time(self.created_at), "reason": self.reason}


@dataclass(frozen=True)
class Keep(_Action):
    """The backup stays; ``reason`` lists every rule that keeps it."""

    kind: ClassVar[ActionKind] = ActionKind.KEEP


@dataclass(frozen=True)
class Delete(_Action):
    """Delete the backup's blobs: no rule keeps it and nothing protects it."""

    kind: ClassVar[ActionKind] = ActionKind.DELETE


@dataclass(frozen=True)
class SetTier(_Action):
    """Move the backup's blobs to a colder access tier."""

    kind: ClassVar[ActionKind] = ActionKind.SET_TIER
    to: StorageTier

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "to": self.to.value}


@dataclass(frozen=True)
class SetImmutability(_Action):
    """Set or extend a time-based immutability policy on the backup's blobs until ``until``."""

    kind: ClassVar[ActionKind] = ActionKind.SET_IMMUTABILITY
    until: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "until": format_time(self.until)}


RetentionAction = Keep | SetTier | SetImmutability | Delete

# Within one backup: the decision first, then locking before tiering.
_KIND_ORDER = {ActionKind.KEEP: 0, ActionKind.DELETE: 0, ActionKind.SET_IMMUTABILITY: 1, ActionKind.SET_TIER: 2}


def action_from_dict(data: Mapping[str, Any]) -> RetentionAction:
    """The inverse of ``action.to_dict()`` (actions travel as JSON between orchestration steps).

    :raises InvalidRetentionInput: naming the missing or malformed field.
    """
    try:
        kind = ActionKind(data["kind"])
        common: dict[str, Any] = {
            "tenant": str(data["tenant"]), "backup_id": str(data["backup_id"]),
            "created_at": parse_time(str(data["created_at"]), "action created_at"),
            "reason": str(data["reason"]),
        }
        if kind is ActionKind.KEEP:
            return Keep(**common)
        if kind is ActionKind.DELETE:
            return Delete(**common)
        if kind is ActionKind.SET_TIER:
            return SetTier(**common, to=StorageTier(data["to"]))
        return SetImmutability(**common, until=parse_time(str(data["until"]), "action until"))
    except KeyError as exc:
        raise InvalidRetentionInput(f"retention action is missing field {exc.args[0]!r}") from exc
    except ValueError as exc:
        raise InvalidRetentionInput(f"retention action is malformed: {exc}") from exc


@dataclass(frozen=True)
class RetentionPlan:
    """What retention would do at ``now``: deterministic, JSON-serialisable, applied elsewhere."""

    now: datetime
    actions: tuple[RetentionAction, ...]

    @property
    def changes(self) -> tuple[RetentionAction, ...]:
        """The actions that change storage (everything but KEEP)."""
        return tuple(a for a in self.actions if a.changes_storage)

    def for_backup(self, tenant: str, backup_id: str) -> tuple[RetentionAction, ...]:
        return tuple(a for a in self.actions if a.key == (tenant, backup_id))

    def summary(self) -> dict[str, int]:
        counts = {kind.value: 0 for kind in ActionKind}
        for action in self.actions:
            counts[action.kind.value] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "now": format_time(self.now), "summary": self.summary(),
                "actions": [a.to_dict() for a in self.actions]}

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON: the same plan always gives the same text."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetentionPlan:
        """:raises InvalidRetentionInput: for a document that is not a retention plan."""
        if data.get("format") != PLAN_FORMAT:
            raise InvalidRetentionInput(f"not a retention plan: format must be {PLAN_FORMAT!r}")
        actions = data.get("actions")
        if not isinstance(actions, list):
            raise InvalidRetentionInput("retention plan field actions must be a list")
        return cls(parse_time(str(data.get("now")), "plan now"), tuple(action_from_dict(a) for a in actions))

    @classmethod
    def from_json(cls, text: str) -> RetentionPlan:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidRetentionInput(f"retention plan is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidRetentionInput("retention plan must be a JSON object")
        return cls.from_dict(data)


def policies_from_registry(registry: Registry) -> dict[str, RetentionPolicy]:
    """Each tenant's retention policy: the one of its service tier."""
    return {t.id: registry.tier_of(t).retention for t in registry.tenants}


# ---- GFS periods --------------------------------------------------------------------------

def _day(at: datetime) -> str:
    return f"{at:%Y-%m-%d}"


def _week(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def _month(at: datetime) -> str:
    return f"{at:%Y-%m}"


def _year(at: datetime) -> str:
    return f"{at:%Y}"


def _newest_first(backups: Iterable[RetentionCandidate]) -> list[RetentionCandidate]:
    return sorted(backups, key=lambda b: (b.created_at, b.backup_id), reverse=True)


def _ceil_second(value: datetime) -> datetime:
    # Storage keeps immutability dates to the second (RFC 1123): round up so the lock is never
    # shorter than the policy, and so the date read back equals the one planned (idempotence).
    if value.microsecond:
        return value.replace(microsecond=0) + timedelta(seconds=1)
    return value


def immutability_target(created_at: datetime, policy: RetentionPolicy) -> datetime:
    """The date until which the policy locks a backup created at ``created_at``."""
    return _ceil_second(created_at.astimezone(UTC) + timedelta(days=policy.immutable_days))


# ---- the planner --------------------------------------------------------------------------

def plan_retention(backups: Sequence[RetentionCandidate], policies: Mapping[str, RetentionPolicy],
                   holds: Holds, now: datetime) -> RetentionPlan:
    """Decide, for every backup not yet deleted, whether to keep it, and which tier and lock it needs.

    :param backups: the catalog snapshot; DELETED backups are ignored.
    :param policies: the retention policy per tenant id (from the tenant's service tier). A tenant
        missing here has every backup kept and nothing changed.
    :param holds: legal holds on tenants and single backups (``RetentionCandidate.legal_hold`` also counts).
    :param now: the planning time (aware); the planner reads no clock.
    :raises InvalidRetentionInput: for a naive ``now`` or two different candidates with the same key.
    """
    now = _utc(now, "now")
    by_key: dict[tuple[str, str], RetentionCandidate] = {}
    for backup in backups:
        seen = by_key.get(backup.key)
        if seen is not None and seen != backup:
            raise InvalidRetentionInput(f"backup {backup.tenant}/{backup.backup_id} appears twice with different "
                                        "catalog data; rebuild the catalog before planning retention")
        by_key[backup.key] = backup
    by_tenant: dict[str, list[RetentionCandidate]] = {}
    for backup in by_key.values():
        by_tenant.setdefault(backup.tenant, []).append(backup)
    actions: list[RetentionAction] = []
    for tenant in sorted(by_tenant):
        actions.extend(_plan_tenant(tenant, by_tenant[tenant], policies.get(tenant), holds, now))
    actions.sort(key=lambda a: (a.tenant, a.created_at, a.backup_id, _KIND_ORDER[a.kind]))
    return RetentionPlan(now=now, actions=tuple(actions))


def _plan_tenant(tenant: str, backups: list[RetentionCandidate], policy: RetentionPolicy | None, holds: Holds,
                 now: datetime) -> list[RetentionAction]:
    present = _newest_first(b for b in backups if b.status is not CandidateStatus.DELETED)
    if policy is None:
        return [Keep(tenant=b.tenant, backup_id=b.backup_id, created_at=b.created_at,
                     reason=f"kept: no retention policy for tenant {tenant}") for b in present]

    reasons: dict[tuple[str, str], list[str]] = {}

    def keep(backup: RetentionCandidate, why: str) -> None:
        reasons.setdefault(backup.key, []).append(why)

    usable = [b for b in present if b.usable]
    validated = [b for b in usable if b.status is CandidateStatus.VALIDATED]
    if validated:
        keep(validated[0], f"newest validated backup of {tenant}")

    # GFS like restic's --keep-daily/weekly/monthly/yearly: the newest usable backup of each of the
    # N most recent periods that have one.
    for label, count, period_of in (("daily", policy.daily, _day), ("weekly", policy.weekly, _week),
                                    ("monthly", policy.monthly, _month), ("yearly", policy.yearly, _year)):
        periods: set[str] = set()
        for backup in usable:
            if len(periods) >= count:
                break
            period = period_of(backup.created_at)
            if period in periods:
                continue
            periods.add(period)
            keep(backup, f"{label} slot {period}")

    window = timedelta(days=policy.immutable_days)
    inspection = timedelta(days=max(policy.daily, 1))
    for backup in present:
        if holds.tenant_held(tenant):
            keep(backup, f"legal hold on tenant {tenant}")
        if backup.legal_hold or holds.backup_held(tenant, backup.backup_id):
            keep(backup, f"legal hold on backup {backup.backup_id}")
        if backup.immutable_until is not None and backup.immutable_until >= now:
            keep(backup, f"immutable until {format_time(backup.immutable_until)}")
        if backup.status in LOCKABLE_STATUSES and policy.immutable_days and backup.created_at + window > now:
            keep(backup, f"inside the {policy.immutable_days}-day immutability window")
        if backup.status is CandidateStatus.PENDING:
            keep(backup, "pending: not yet cataloged or validated")
        elif backup.status is CandidateStatus.MISSING:
            keep(backup, "missing from storage: nothing to act on until the catalog is reconciled")
        elif backup.status in UNUSABLE_STATUSES and now - backup.created_at < inspection:
            keep(backup, f"{str(backup.status).lower().replace('_', ' ')}, within the {inspection.days}-day "
                         "inspection window")

    kept_usable = sum(1 for b in usable if b.key in reasons)
    for backup in usable:
        if kept_usable >= policy.min_copies:
            break
        if backup.key not in reasons:
            keep(backup, f"min_copies {policy.min_copies} for {tenant}")
            kept_usable += 1

    newest_usable = usable[0].key if usable else None
    newest_validated = validated[0].key if validated else None
    actions: list[RetentionAction] = []
    for backup in present:
        why = reasons.get(backup.key)
        if why is None:
            if backup.status in UNUSABLE_STATUSES:
                rule = (f"{str(backup.status).lower().replace('_', ' ')} and older than the "
                        f"{inspection.days}-day inspection window")
            else:
                rule = (f"outside every keep rule (daily {policy.daily}, weekly {policy.weekly}, monthly "
                        f"{policy.monthly}, yearly {policy.yearly}; {kept_usable} usable kept, min_copies "
                        f"{policy.min_copies})")
            actions.append(Delete(tenant=tenant, backup_id=backup.backup_id, created_at=backup.created_at,
                                  reason=f"deleted: {rule}"))
            continue
        actions.append(Keep(tenant=tenant, backup_id=backup.backup_id, created_at=backup.created_at,
                            reason="kept: " + "; ".join(why)))
        lock = _lock_action(backup, policy, now)
        if lock is not None:
            actions.append(lock)
        tier = _tier_action(backup, policy, now,
                            newest=backup.key in (newest_usable, newest_validated), tenant=tenant)
        if tier is not None:
            actions.append(tier)
    return actions


def _lock_action(backup: RetentionCandidate, policy: RetentionPolicy, now: datetime) -> SetImmutability | None:
    if backup.status not in LOCKABLE_STATUSES or not policy.immutable_days:
        return None
    until = immutability_target(backup.created_at, policy)
    if until <= now or (backup.immutable_until is not None and backup.immutable_until >= until):
        return None
    verb = "extended" if backup.immutable_until is not None else "immutable"
    return SetImmutability(tenant=backup.tenant, backup_id=backup.backup_id, created_at=backup.created_at,
                           until=until, reason=f"{verb} until {format_time(until)}: "
                                               f"{policy.immutable_days}-day immutability from creation")


def _tier_action(backup: RetentionCandidate, policy: RetentionPolicy, now: datetime, *, newest: bool,
                 tenant: str) -> SetTier | None:
    if backup.status not in TIERABLE_STATUSES:
        return None
    age = now - backup.created_at
    target, reason = StorageTier.HOT, ""
    for tier, days in ((StorageTier.ARCHIVE, policy.archive_after_days), (StorageTier.COLD, policy.cold_after_days),
                       (StorageTier.COOL, policy.cool_after_days)):
        if age >= timedelta(days=days):
            target, reason = tier, f"tier {tier.value}: older than {days} days"
            break
    if target is StorageTier.ARCHIVE:
        days = policy.archive_after_days
        if policy.validate_before_archive and backup.status is not CandidateStatus.VALIDATED:
            target = StorageTier.COLD
            reason = (f"tier cold: older than {days} days but not validated, and the policy requires "
                      "validation before archive")
        elif newest:
            # An archived blob needs hours of rehydration before a restore: keep the newest restorable.
            target = StorageTier.COLD
            reason = (f"tier cold: older than {days} days, but the newest backup of {tenant} stays "
                      "out of archive so it restores without rehydration")
    current = StorageTier(backup.tier)
    if TIER_ORDER[target] <= TIER_ORDER[current]:
        return None
    return SetTier(tenant=backup.tenant, backup_id=backup.backup_id, created_at=backup.created_at, to=target,
                   reason=reason)


def apply_plan_to_catalog(backups: Sequence[RetentionCandidate], plan: RetentionPlan) -> list[RetentionCandidate]:
    """What the catalog would hold after every action of ``plan`` succeeded (a pure simulation)."""
    by_key: dict[tuple[str, str], list[RetentionAction]] = {}
    for action in plan.changes:
        by_key.setdefault(action.key, []).append(action)
    result: list[RetentionCandidate] = []
    for backup in backups:
        updated = backup
        for action in by_key.get(backup.key, []):
            if isinstance(action, Delete):
                updated = replace(updated, status=CandidateStatus.DELETED)
            elif isinstance(action, SetTier):
                updated = replace(updated, tier=action.to)
            elif isinstance(action, SetImmutability):
                current = updated.immutable_until
                updated = replace(updated, immutable_until=action.until if current is None
                                  else max(current, action.until))
        result.append(updated)
    return result
