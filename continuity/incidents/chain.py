"""A broken recovery chain is an incident: what counts as broken, and up to when a server can still be
rewound (pure decisions, no I/O).

The chain a point-in-time recovery needs is a complete base backup and every WAL segment after it. It is
broken when the archive lacks a segment (``RecoveryWindow.gap``) or when the server's archiver is failing
(``pg_stat_archiver``: the last failure is newer than the last success), since every write from then on is
in no archive. Either raises the "recovery chain broken" incident (``orchestrations.recovery_chain_incident``),
with the retries, escalation and events of a failed backup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from continuity.pitr.rules import BaseBackup, RecoveryWindow, first_gap


class ChainCause(StrEnum):
    MISSING_SEGMENT = "missing-segment"
    ARCHIVER_FAILING = "archiver-failing"


@dataclass(frozen=True)
class ArchiverState:
    """The server's ``pg_stat_archiver`` row."""

    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"archived_count": self.archived_count, "last_archived_wal": self.last_archived_wal,
                "last_archived_time": self.last_archived_time.isoformat() if self.last_archived_time else None,
                "failed_count": self.failed_count, "last_failed_wal": self.last_failed_wal,
                "last_failed_time": self.last_failed_time.isoformat() if self.last_failed_time else None}


@dataclass(frozen=True)
class ChainBreak:
    """Why a server's recovery chain is broken; ``key`` names this break (one incident per key)."""

    server: str
    cause: ChainCause
    segment: str
    reason: str

    @property
    def key(self) -> str:
        return f"{self.server}-{self.cause}-{self.segment}"

    def to_json(self) -> dict[str, Any]:
        return {"server": self.server, "cause": str(self.cause), "segment": self.segment, "reason": self.reason,
                "key": self.key}


def archiver_failing(state: ArchiverState | None, previous_failed_count: int | None = None) -> bool:
    """The archiver is failing now: its newest failure is newer than its newest success (or it never
    succeeded), or its failure count rose since ``previous_failed_count``."""
    if state is None:
        return False
    if previous_failed_count is not None and state.failed_count > previous_failed_count:
        return True
    if state.last_failed_time is None:
        return False
    return state.last_archived_time is None or state.last_failed_time > state.last_archived_time


def chain_break(window: RecoveryWindow, archiver: ArchiverState | None,
                previous_failed_count: int | None = None) -> ChainBreak | None:
    """The break of the server's recovery chain, or None when it is whole. A failing archiver comes first:
    a segment it cannot ship is also missing from the archive, and a new base backup would not help."""
    if archiver is not None and archiver_failing(archiver, previous_failed_count):
        segment = (archiver.last_failed_wal or "")[:24] or "unknown"
        at = archiver.last_failed_time.isoformat() if archiver.last_failed_time else "unknown time"
        last_ok = archiver.last_archived_time.isoformat() if archiver.last_archived_time else "never"
        return ChainBreak(window.server, ChainCause.ARCHIVER_FAILING, segment,
                          f"the WAL archiver of {window.server} is failing: segment {segment} failed at {at} "
                          f"({archiver.failed_count} failures; last success {last_ok}); writes since are in no "
                          "archive")
    if window.gap:
        return ChainBreak(window.server, ChainCause.MISSING_SEGMENT, window.gap,
                          f"WAL segment {window.gap} of {window.server} is missing from the archive: replay "
                          f"cannot pass it (newest archived segment {window.newest_segment})")
    return None


def restorable_until(window: RecoveryWindow, backups: Sequence[BaseBackup],
                     segment_names: Sequence[str]) -> datetime | None:
    """The latest moment replay from the newest complete base backup is known to reach: the newest archived
    WAL when the chain after it is whole; else the end of that base backup (a lower bound: the segments
    before the gap hold commits of unknown times); None without a usable base backup."""
    done = [b for b in backups if b.done]
    if not done or window.newest_segment is None:
        return None
    newest = max(done, key=lambda b: (b.end_time, b.backup_id))
    if first_gap(segment_names, newest.begin_wal, newest.end_wal) is not None:
        return None
    if first_gap(segment_names, newest.begin_wal, window.newest_segment) is None:
        return window.latest
    return newest.end_time
