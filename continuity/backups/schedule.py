"""Backups on each tier's schedule: what is due now, per tenant (a dump) and per archived server (a base
backup), decided without I/O.

Time is cut into slots of the interval, on a grid fixed per subject (the epoch plus a phase taken from the
subject's name, so that five hundred hourly tenants do not all dump at the same minute). A subject is due
when its newest backup was taken before the start of the current slot: at most one backup per slot, and no
drift (a dump taken a few minutes into its slot does not push the next one later). A subject whose newest
backup is older than its interval is always due, since the current slot began less than an interval ago.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BackupKind(StrEnum):
    DUMP = "dump"
    BASE_BACKUP = "base-backup"


@dataclass(frozen=True)
class Decision:
    """Whether one subject's backup is due now, and why (a sentence)."""

    kind: BackupKind
    subject: str  # a tenant id (dump) or a server id (base backup)
    due: bool
    interval: timedelta
    slot_start: datetime
    next_slot: datetime
    newest: datetime | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "subject": self.subject, "due": self.due,
                "interval_minutes": round(self.interval.total_seconds() / 60, 2),
                "slot_start": self.slot_start.isoformat(), "next_slot": self.next_slot.isoformat(),
                "newest": self.newest.isoformat() if self.newest else None, "reason": self.reason}


def phase_of(subject: str, interval: timedelta) -> timedelta:
    """A stable offset of ``subject``'s slot grid, in whole minutes below ``interval`` (spreads the load)."""
    minutes = int(interval.total_seconds() // 60)
    if minutes <= 1:
        return timedelta(0)
    digest = int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big")
    return timedelta(minutes=digest % minutes)


def slot_start(now: datetime, interval: timedelta, phase: timedelta = timedelta(0)) -> datetime:
    """The start of the slot holding ``now`` on the grid ``EPOCH + phase + k * interval``."""
    if interval <= timedelta(0):
        raise ValueError("a schedule interval must be positive")
    if now.tzinfo is None:
        raise ValueError("now needs a time zone")
    origin = EPOCH + phase
    slots = (now - origin) // interval
    return origin + slots * interval


def decide(kind: BackupKind, subject: str, interval: timedelta, newest: datetime | None,
           now: datetime) -> Decision:
    """Is a backup of ``subject`` due at ``now``, given when its newest one was taken?"""
    start = slot_start(now, interval, phase_of(subject, interval))
    nxt = start + interval
    what = "dump" if kind is BackupKind.DUMP else "base backup"
    every = _span(interval)
    if newest is None:
        return Decision(kind, subject, True, interval, start, nxt, None,
                        f"{subject}: {what} due: none taken yet (every {every})")
    age = _span(max(now - newest, timedelta(0)))
    if newest < start:
        return Decision(kind, subject, True, interval, start, nxt, newest,
                        f"{subject}: {what} due: newest is {age} old, taken before this slot "
                        f"(every {every}, slot from {start:%Y-%m-%dT%H:%MZ})")
    return Decision(kind, subject, False, interval, start, nxt, newest,
                    f"{subject}: {what} not due: newest is {age} old, taken in this slot "
                    f"(every {every}); next slot {nxt:%Y-%m-%dT%H:%MZ}")


def dumps_due(intervals: Mapping[str, int], newest: Mapping[str, datetime | None],
              now: datetime) -> list[Decision]:
    """A decision per tenant. :param intervals: tenant -> its tier's ``dump_minutes``;
    :param newest: tenant -> when its newest dump was taken (missing: none)."""
    return [decide(BackupKind.DUMP, tenant, timedelta(minutes=minutes), newest.get(tenant), now)
            for tenant, minutes in sorted(intervals.items())]


def server_intervals(tenants: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Server -> base-backup interval in hours: the shortest of the tiers of the tenants it hosts.
    :param tenants: ``(server, base_backup_hours)`` of each tenant."""
    out: dict[str, int] = {}
    for server, hours in tenants:
        out[server] = min(hours, out.get(server, hours))
    return out


def base_backups_due(intervals: Mapping[str, int], newest: Mapping[str, datetime | None],
                     now: datetime) -> list[Decision]:
    """A decision per archived server. :param intervals: server -> hours (:func:`server_intervals`);
    :param newest: server -> when its newest complete base backup began (missing: none)."""
    return [decide(BackupKind.BASE_BACKUP, server, timedelta(hours=hours), newest.get(server), now)
            for server, hours in sorted(intervals.items())]


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"
