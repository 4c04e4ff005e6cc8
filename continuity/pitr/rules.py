"""Point-in-time recovery from our own WAL archive: pure decisions, no I/O.

A server we run ourselves (a local cluster here, PostgreSQL on a VM or AKS in Azure) ships every WAL segment
to Blob with Barman's cloud clients (``barman-cloud-wal-archive``) and takes base backups with
``barman-cloud-backup``. Going back to a second T means: the newest base backup that *ended* before T,
then every WAL segment from that backup's first one up to the one holding T, replayed with
``recovery_target_time = T`` into a throwaway cluster in the sandbox. This module decides, without I/O:

* :func:`segment_after` / :func:`segments_between` / :func:`first_gap`: WAL segment arithmetic (16 MiB
  segments, the file names PostgreSQL gives them), and the first segment missing from an archive;
* :func:`window_of`: the server's recovery window, from its base backups and archived segments
  (earliest restorable point … newest archived WAL), the same facts whether read now or rebuilt from storage;
* :func:`choose_base_backup` / :func:`point_in_time_refusal`: which base backup serves a target, or why the
  target cannot be served (in the future, before the window, past the newest archived WAL, a gap);
* :func:`recovery_settings`: the throwaway cluster's settings (never on TCP, never archiving into the
  production archive, stop at the target and promote);
* :func:`archive_exposure_seconds`: a tenant's RPO exposure measured from the archive.

Single-database point-in-time recovery is built *on top* of this: PostgreSQL replays a whole cluster, so the
whole server is rewound in the sandbox and only the tenant's database is taken out of it (see
:mod:`continuity.pitr.service`); no other tenant's database is touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
# 16 MiB segments (PostgreSQL's default, and what initdb gives the clusters we run): 256 per "log" number.
SEGMENTS_PER_LOG = 0x100
# A target must be this far inside the newest archived WAL: the segment holding a commit just before the
# newest archive time may not be complete in storage yet.
ARCHIVE_SETTLE = timedelta(seconds=1)
# How far in the future a requested time may be (clock skew between the requester and us).
FUTURE_SKEW = timedelta(seconds=5)


class PointInTimeRefused(ValueError):
    """The target cannot be served from this archive; the message says why and what would."""


# ---- WAL segment arithmetic ------------------------------------------------------------------------


def parse_segment(name: str) -> tuple[int, int, int]:
    """(timeline, log, segment) of a WAL file name such as ``000000010000000000000003``."""
    found = SEGMENT_RE.match(name)
    if not found:
        raise ValueError(f"not a WAL segment name: {name[:40]!r}")
    return int(found[1], 16), int(found[2], 16), int(found[3], 16)


def segment_name(timeline: int, log: int, seg: int) -> str:
    return f"{timeline:08X}{log:08X}{seg:08X}"


def segment_after(name: str) -> str:
    timeline, log, seg = parse_segment(name)
    if seg + 1 >= SEGMENTS_PER_LOG:
        return segment_name(timeline, log + 1, 0)
    return segment_name(timeline, log, seg + 1)


def segment_number(name: str) -> int:
    """The segment's position on its timeline (comparable across log numbers)."""
    _, log, seg = parse_segment(name)
    return log * SEGMENTS_PER_LOG + seg


def segments_between(first: str, last: str) -> list[str]:
    """Every segment from ``first`` to ``last`` inclusive, on ``first``'s timeline."""
    if segment_number(last) < segment_number(first):
        return []
    out = [first]
    while out[-1][8:] != last[8:]:
        out.append(segment_after(out[-1]))
    return out


def first_gap(archived: Iterable[str], first: str, last: str) -> str | None:
    """The first segment from ``first`` to ``last`` the archive lacks, or None when the chain is whole."""
    have = {name[8:] for name in archived if SEGMENT_RE.match(name)}
    return next((s for s in segments_between(first, last) if s[8:] not in have), None)


# ---- the archive's facts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseBackup:
    """One ``barman-cloud-backup`` of a server, as ``barman-cloud-backup-list`` describes it."""

    backup_id: str
    status: str
    begin_time: datetime
    end_time: datetime
    begin_wal: str
    end_wal: str
    timeline: int
    size: int
    system_identifier: str

    @property
    def done(self) -> bool:
        return self.status == "DONE"

    def to_json(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "status": self.status, "begin_time": self.begin_time.isoformat(),
                "end_time": self.end_time.isoformat(), "begin_wal": self.begin_wal, "end_wal": self.end_wal,
                "timeline": self.timeline, "size": self.size, "system_identifier": self.system_identifier}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BaseBackup:
        return cls(backup_id=str(raw["backup_id"]), status=str(raw["status"]),
                   begin_time=datetime.fromisoformat(raw["begin_time"]),
                   end_time=datetime.fromisoformat(raw["end_time"]), begin_wal=str(raw["begin_wal"]),
                   end_wal=str(raw["end_wal"]), timeline=int(raw["timeline"]), size=int(raw["size"]),
                   system_identifier=str(raw["system_identifier"]))


@dataclass(frozen=True)
class ArchivedSegment:
    """One WAL segment in the archive and when storage received it."""

    name: str
    stored_at: datetime
    size: int


@dataclass(frozen=True)
class RecoveryWindow:
    """What a server can be rewound to: any second from ``earliest`` to ``latest``."""

    server: str
    earliest: datetime | None
    latest: datetime | None
    base_backups: int
    segments: int
    newest_segment: str | None
    oldest_base_backup: str | None
    newest_base_backup: str | None
    gap: str | None

    @property
    def restorable(self) -> bool:
        return self.earliest is not None and self.latest is not None and self.earliest <= self.latest

    def to_json(self) -> dict[str, Any]:
        return {"server": self.server, "earliest": self.earliest.isoformat() if self.earliest else None,
                "latest": self.latest.isoformat() if self.latest else None, "base_backups": self.base_backups,
                "segments": self.segments, "newest_segment": self.newest_segment,
                "oldest_base_backup": self.oldest_base_backup, "newest_base_backup": self.newest_base_backup,
                "gap": self.gap, "restorable": self.restorable}


def window_of(server: str, backups: Sequence[BaseBackup], segments: Sequence[ArchivedSegment]) -> RecoveryWindow:
    """The recovery window: from the end of the oldest complete base backup whose WAL chain is whole to the
    newest archived segment's arrival. A gap after a base backup cuts the window back to the last segment
    before the gap (replay cannot cross it) unless a later base backup starts after the gap."""
    done = sorted((b for b in backups if b.done), key=lambda b: b.end_time)
    names = [s.name for s in segments if SEGMENT_RE.match(s.name)]
    newest = max(segments, key=lambda s: (segment_number(s.name) if SEGMENT_RE.match(s.name) else -1, s.stored_at),
                 default=None)
    if not done or newest is None:
        return RecoveryWindow(server, None, None, len(done), len(names), newest.name if newest else None,
                              None, None, None)
    usable: list[BaseBackup] = []
    gap: str | None = None
    for backup in done:
        missing = first_gap(names, backup.begin_wal, newest.name)
        if missing is None:
            usable.append(backup)
        elif gap is None or segment_number(missing) > segment_number(gap):
            gap = missing
    if not usable:
        return RecoveryWindow(server, None, None, len(done), len(names), newest.name, done[0].backup_id,
                              done[-1].backup_id, gap)
    # A base backup's end is itself restorable (its last segment is archived before it ends): right after one,
    # before any newer segment arrives, the window is that instant, not empty. Storage times are to the second.
    latest = max(max(s.stored_at for s in segments if s.name == newest.name), usable[-1].end_time)
    return RecoveryWindow(server, usable[0].end_time, latest, len(done), len(names), newest.name,
                          usable[0].backup_id, usable[-1].backup_id, gap)


def choose_base_backup(backups: Sequence[BaseBackup], target: datetime) -> BaseBackup | None:
    """The newest complete base backup that ended strictly before ``target`` (replay must start from a
    consistent point before the target)."""
    eligible = [b for b in backups if b.done and b.end_time < target]
    return max(eligible, key=lambda b: (b.end_time, b.backup_id), default=None)


def point_in_time_refusal(window: RecoveryWindow, target: datetime, now: datetime,
                          live_can_ship: bool = False) -> str | None:
    """Why ``target`` cannot be served from this archive, or None.

    :param live_can_ship: the live server will be asked to ship its current WAL first (at request time: the
        rewind step does it), so a target newer than the newest archived segment is not refused yet.
    """
    if target.tzinfo is None:
        return "the target time needs a time zone, e.g. 2026-11-30T14:31:59Z"
    if target > now + FUTURE_SKEW:
        return f"{target.isoformat()} is in the future (now {now.isoformat(timespec='seconds')})"
    if window.earliest is None or window.latest is None:
        if window.base_backups == 0:
            return (f"server {window.server} has no complete base backup in its WAL archive: take one "
                    f"(`continuity pitr base-backup {window.server}`) before recovering to a point in time")
        why = f"segment {window.gap} is missing" if window.gap else "no WAL segment is archived"
        return f"server {window.server} cannot be rewound: {why}"
    if target < window.earliest:
        return (f"{target.isoformat()} is before the earliest restorable point of {window.server} "
                f"({window.earliest.isoformat()}, the end of base backup {window.oldest_base_backup})")
    if target > window.latest - ARCHIVE_SETTLE and not live_can_ship:
        return (f"{target.isoformat()} is after the newest archived WAL of {window.server} "
                f"({window.latest.isoformat()}, segment {window.newest_segment}); wait for the archiver "
                "or choose an earlier time")
    return None


def archive_exposure_seconds(window: RecoveryWindow, now: datetime) -> float | None:
    """A tenant's RPO exposure on an archived server: seconds of writes not yet in the archive (an upper
    bound: the newest segment's arrival, not its last commit)."""
    if window.latest is None:
        return None
    return max(0.0, (now - window.latest).total_seconds())


# ---- the throwaway cluster --------------------------------------------------------------------------


def recovery_settings(*, port: int, socket_dir: str, restore_command: str, target: datetime | None,
                      target_name: str | None = None) -> dict[str, str]:
    """postgresql.conf lines for the rewound copy. It replaces the production settings the base backup
    carried: never on TCP, never archiving (its new timeline must not reach the production archive), no
    replication, and promotion at the target so the tenant's database can be read."""
    conf = {
        "port": str(port),
        "listen_addresses": "''",
        "unix_socket_directories": _quote(socket_dir),
        "archive_mode": "off",
        "archive_command": "''",
        "max_wal_senders": "0",
        "hot_standby": "off",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "autovacuum": "off",
        "cluster_name": "'rewound'",
        "restore_command": _quote(restore_command),
        "recovery_target_action": "'promote'",
        "recovery_target_timeline": "'current'",
    }
    if target_name is not None:
        conf["recovery_target_name"] = _quote(target_name)
    elif target is not None:
        conf["recovery_target_time"] = _quote(target.astimezone(UTC).isoformat())
        conf["recovery_target_inclusive"] = "true"
    else:
        raise ValueError("a rewind needs a target time or a restore point name")
    return conf


def _quote(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError("a setting value cannot span lines")
    return "'" + value.replace("'", "''") + "'"


# ---- retention of the archive -------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveRetention:
    """Which base backups the archive keeps and which go (with why), and from which segment WAL is kept."""

    keep: list[str]
    delete: list[tuple[str, str]]
    promised_from: datetime
    wal_kept_from: str | None

    def to_json(self) -> dict[str, Any]:
        return {"keep": self.keep, "delete": [{"backup_id": b, "reason": r} for b, r in self.delete],
                "promised_from": self.promised_from.isoformat(), "wal_kept_from": self.wal_kept_from}


def plan_archive_retention(backups: Sequence[BaseBackup], *, window_days: int, min_base_backups: int,
                           immutable_days: int, now: datetime) -> ArchiveRetention:
    """Base backups the archive may delete without breaking what the tiers promise.

    Kept: the newest complete base backup that ended before ``now - window_days`` (it serves the oldest
    promised second) and every newer one; the newest ``min_base_backups`` complete ones whatever their age;
    every base backup still inside its immutability period; every backup not complete (running or failed
    ones are Barman's to judge). WAL is kept from the oldest kept complete base backup's first segment: every
    segment a kept base backup needs to replay is kept (Barman deletes only older ones).
    """
    promised_from = now - timedelta(days=window_days)
    done = sorted((b for b in backups if b.done), key=lambda b: (b.end_time, b.backup_id))
    serving = [b for b in done if b.end_time < promised_from]  # as choose_base_backup: strictly before
    anchor = serving[-1] if serving else (done[0] if done else None)
    keep: set[str] = {b.backup_id for b in backups if not b.done}
    if anchor is not None:
        keep |= {b.backup_id for b in done if (b.end_time, b.backup_id) >= (anchor.end_time, anchor.backup_id)}
    keep |= {b.backup_id for b in done[-max(1, min_base_backups):]}
    immutable_until = timedelta(days=immutable_days)
    keep |= {b.backup_id for b in done if b.end_time + immutable_until > now}
    delete = [(b.backup_id, f"ended {b.end_time.isoformat()}, before {anchor.backup_id} which serves the oldest "
                            f"promised point {promised_from.isoformat()}")
              for b in done if b.backup_id not in keep and anchor is not None]
    kept_done = [b for b in done if b.backup_id in keep]
    wal_from = min((b.begin_wal for b in kept_done), key=segment_number) if kept_done else None
    return ArchiveRetention(sorted(keep), delete, promised_from, wal_from)


RESTORE_POINT_RE = re.compile(r"^continuity-[a-z0-9-]{1,50}$")


def restore_point_name(run_id: str) -> str:
    """The named restore point a nightly archive proof creates on the live server and replays to."""
    cleaned = re.sub(r"[^a-z0-9-]", "-", run_id.lower())[:50].strip("-") or "proof"
    return f"continuity-{cleaned}"


STOP_RE = re.compile(r"recovery stopping (?:before|after) (?:commit|abort) of transaction \d+, time (\S+ \S+)")


def stop_time_from_log(log: str) -> datetime | None:
    """The commit time PostgreSQL says recovery stopped at (``recovery stopping before commit ... time T``)."""
    matches = list(STOP_RE.finditer(log))
    found = matches[-1] if matches else None
    if found is None:
        return None
    try:
        return datetime.fromisoformat(found[1].replace(" ", "T"))
    except ValueError:
        return None


MISSING_RE = re.compile(r"WAL file ([0-9A-F]{24}) for server \S+ does not exist")


def missing_segment_from_log(log: str) -> str | None:
    """The first WAL *segment* (not a timeline history file) the restore command could not find."""
    found = MISSING_RE.search(log)
    return found[1] if found else None
