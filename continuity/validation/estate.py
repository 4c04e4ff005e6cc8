"""The estate at a glance: every tenant's standing reduced to one state, worst first (pure).

A tenant's standing (:func:`continuity.validation.service.recoverability`) says whether its newest backup is
within RPO and what its last validation concluded; :func:`state_of` names it in the operators' words, and
:func:`estate_row` keeps what the dashboard shows of it. Nothing here reads a clock or a database: the
caller passes the standings, computed at one ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class EstateState(StrEnum):
    NOT_RECOVERABLE = "not_recoverable"  # the last validation failed a check
    NEVER_VALIDATED = "never_validated"  # no backup, or none validated yet: nothing is proven
    OUTSIDE_OBJECTIVES = "outside_objectives"  # restorable, but RTO or RPO not met (or not proven in full)
    WITHIN_OBJECTIVES = "within_objectives"  # the last validation passed within RTO and the backup is within RPO


LABELS: dict[EstateState, str] = {
    EstateState.NOT_RECOVERABLE: "not recoverable",
    EstateState.NEVER_VALIDATED: "never validated",
    EstateState.OUTSIDE_OBJECTIVES: "recoverable outside objectives",
    EstateState.WITHIN_OBJECTIVES: "recoverable within objectives",
}
WORST_FIRST: tuple[EstateState, ...] = tuple(EstateState)


class SortKey(StrEnum):
    STATE = "state"  # worst first, then tenant id
    TENANT = "tenant"
    BACKUP_AGE = "backup_age"  # oldest newest-backup first (no backup at all first)
    RPO_MARGIN = "rpo_margin"  # least RPO budget left first


@dataclass(frozen=True)
class EstateRow:
    """One tenant's line on the dashboard."""

    tenant: str
    name: str
    tier: str
    state: EstateState
    reason: str
    rto_minutes: int
    rpo_minutes: int
    newest_backup_id: str | None
    backup_age_s: float | None
    rpo_met: bool | None
    validated_backup_id: str | None
    validated_at: str | None
    failed_checks: tuple[str, ...]

    @property
    def label(self) -> str:
        return LABELS[self.state]

    @property
    def rpo_margin_s(self) -> float | None:
        """Seconds of RPO budget left (negative: breached by that much); None without a backup."""
        return None if self.backup_age_s is None else self.rpo_minutes * 60 - self.backup_age_s

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "name": self.name, "tier": self.tier, "state": str(self.state),
                "label": self.label, "reason": self.reason, "rto_minutes": self.rto_minutes,
                "rpo_minutes": self.rpo_minutes, "newest_backup_id": self.newest_backup_id,
                "backup_age_s": self.backup_age_s, "rpo_met": self.rpo_met, "rpo_margin_s": self.rpo_margin_s,
                "validated_backup_id": self.validated_backup_id, "validated_at": self.validated_at,
                "failed_checks": list(self.failed_checks)}


def state_of(standing: Mapping[str, Any]) -> EstateState:
    """The state of one standing: a failed check outranks everything, then whether anything was ever proven."""
    last = standing.get("last_validation")
    if not last:
        return EstateState.NEVER_VALIDATED
    if last.get("verdict") == "not_recoverable":
        return EstateState.NOT_RECOVERABLE
    if standing.get("recoverable_within_objectives"):
        return EstateState.WITHIN_OBJECTIVES
    return EstateState.OUTSIDE_OBJECTIVES


def estate_row(standing: Mapping[str, Any], *, name: str, tier: str) -> EstateRow:
    newest = standing.get("newest_backup") or {}
    last = standing.get("last_validation") or {}
    return EstateRow(
        tenant=str(standing["tenant"]), name=name, tier=tier, state=state_of(standing),
        reason=str(standing.get("reason", "")), rto_minutes=int(standing["rto_minutes"]),
        rpo_minutes=int(standing["rpo_minutes"]), newest_backup_id=newest.get("backup_id"),
        backup_age_s=float(newest["age_s"]) if newest.get("age_s") is not None else None,
        rpo_met=newest.get("rpo_met"), validated_backup_id=last.get("backup_id"),
        validated_at=last.get("finished_at"), failed_checks=tuple(str(c) for c in last.get("failed_checks") or ()))


def sort_rows(rows: Iterable[EstateRow], key: SortKey = SortKey.STATE) -> list[EstateRow]:
    """Rows in the order ``key`` asks for; ties by tenant id, so the order is stable between requests."""
    rank = {state: i for i, state in enumerate(WORST_FIRST)}
    inf = float("inf")
    orders = {
        SortKey.STATE: lambda r: (rank[r.state], r.tenant),
        SortKey.TENANT: lambda r: (0, r.tenant),
        SortKey.BACKUP_AGE: lambda r: (-(inf if r.backup_age_s is None else r.backup_age_s), r.tenant),
        SortKey.RPO_MARGIN: lambda r: (-inf if r.rpo_margin_s is None else r.rpo_margin_s, r.tenant),
    }
    return sorted(rows, key=orders[key])


def count_by_state(rows: Iterable[EstateRow]) -> dict[EstateState, int]:
    counts = dict.fromkeys(WORST_FIRST, 0)
    for row in rows:
        counts[row.state] += 1
    return counts


def as_of(rows: Iterable[EstateRow], now: datetime) -> dict[str, Any]:
    """The estate's JSON summary at ``now``: counts by state and the rows."""
    listed = list(rows)
    return {"at": now.isoformat(), "counts": {str(k): v for k, v in count_by_state(listed).items()},
            "tenants": [r.to_json() for r in listed]}
