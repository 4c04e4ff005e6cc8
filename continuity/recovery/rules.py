"""Tenant recovery rules: which backup, whether a recovery may run, what it loses, and the cutover.

A tenant's data was corrupted (user error, faulty release, integration defect) and must go back to a
known-good state while every other tenant on the same cluster keeps running. The backup is restored
into a NEW database beside the live one (``{db}_staging_{ts}``), checked like the nightly validation,
shown to a second person with a data-loss summary, and only then swapped in:

    fence live → swap (live → ``{db}_pre_recovery_{ts}``, staged → live, one transaction) → reopen → verify

The rule above all others: **exactly one live database** at every resting point. The cutover is a
state machine over what the server shows (:func:`cutover_position`), advanced one idempotent action
at a time (:func:`next_cutover_action`): a crash anywhere resumes forward or rolls back to the live
database as it was, and never ends with zero or two databases answering under the live name.

Pure: observations come in from :mod:`continuity.adapters.postgres.tenant_recovery`, decisions come out as
sentences (Patroni-style ``*_refusal`` -> ``str | None``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from continuity.kernel.errors import Conflict, ContinuityError, InvalidRequest
from continuity.kernel.steps import Milestones

MAX_REASON_CHARS = 1000
PG_IDENTIFIER_MAX = 63
STAMP_FORMAT = "%Y%m%d%H%M%S"
MARKER_PREFIX = "continuity-recovery"
INVOICE_TYPES = ("out_invoice", "out_refund", "in_invoice", "in_refund")


class RecoveryRefused(ContinuityError):
    """The requested recovery may not run (wrong backup, no such point in time)."""

    code = "recovery_refused"
    http_status = 422


class RecoveryState(StrEnum):
    PICKING = "PICKING"
    REWINDING = "REWINDING"      # point in time: the server rewound in the sandbox, the tenant taken out of it
    STAGING = "STAGING"
    CHECKING = "CHECKING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    CUTTING_OVER = "CUTTING_OVER"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"            # it stopped; the live database is the one it was (rolled back) unless said
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    REFUSED = "REFUSED"          # the staged copy did not pass its checks: nothing was put to an approver


TERMINAL_STATES = frozenset({RecoveryState.COMPLETED, RecoveryState.FAILED, RecoveryState.REJECTED,
                             RecoveryState.EXPIRED, RecoveryState.REFUSED})


class StepName(StrEnum):
    REWIND = "rewind"          # point in time: rewind the server in the sandbox, extract the tenant's database
    STAGE = "stage"            # restore the backup into the staging database, restore missing attachments
    CHECKS = "checks"          # the nightly validation's checks on the staged copy, and the data-loss report
    FENCE = "fence"            # the tenant's live database refuses connections, its sessions are ended
    SWAP = "swap"              # live → pre_recovery and staged → live, in one transaction
    REOPEN = "reopen"          # the recovered live database accepts connections again
    VERIFY = "verify"          # smoke queries on the live database; the pre-recovery copy kept read-only
    BACKUP = "backup"          # a fresh backup of the recovered state, so the next nightly validates it
    ROLLBACK = "rollback"      # back to the live database as it was
    CLEANUP = "cleanup"        # drop the staged copy (drill, refusal, rejection, rollback before reopen)


def plan_steps(drill: bool) -> tuple[StepName, ...]:
    """The steps after approval, in order. A drill never touches the live database: it verifies the
    staged copy and drops it."""
    if drill:
        return (StepName.VERIFY, StepName.CLEANUP)
    return (StepName.FENCE, StepName.SWAP, StepName.REOPEN, StepName.VERIFY, StepName.BACKUP)


def instance_id(tenant: str) -> str:
    """One recovery per tenant: the orchestration instance id."""
    return f"recovery-{tenant}"


# ---- database names ------------------------------------------------------------------------------


def _fit(base: str, suffix: str) -> str:
    """``base + suffix`` within PostgreSQL's 63-byte identifier limit (a long base is cut and hashed)."""
    if len(base) + len(suffix) <= PG_IDENTIFIER_MAX:
        return base + suffix
    tag = f"{zlib.crc32(base.encode()):08x}"
    room = PG_IDENTIFIER_MAX - len(suffix) - len(tag) - 1
    return f"{base[:room].rstrip('_')}_{tag}{suffix}"


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime(STAMP_FORMAT)


@dataclass(frozen=True)
class DatabaseNames:
    """The three names a recovery juggles; all derived from the live name and the run's time stamp."""

    live: str
    staged: str
    pre_recovery: str

    @classmethod
    def of(cls, live: str, at: datetime) -> DatabaseNames:
        ts = stamp(at)
        return cls(live=live, staged=_fit(live, f"_staging_{ts}"), pre_recovery=_fit(live, f"_pre_recovery_{ts}"))

    def to_json(self) -> dict[str, str]:
        return {"live": self.live, "staged": self.staged, "pre_recovery": self.pre_recovery}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DatabaseNames:
        return cls(live=str(raw["live"]), staged=str(raw["staged"]), pre_recovery=str(raw["pre_recovery"]))


STAGED_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*_staging_[0-9]{14}$")


def marker(run_id: str, backup_id: str) -> str:
    """The comment put on the staged database; it travels with the database through renames, so the
    cutover can tell the recovered database from the original whatever their names are."""
    return f"{MARKER_PREFIX} run={run_id} backup={backup_id}"


# ---- choosing the backup ------------------------------------------------------------------------


class BackupChoice(StrEnum):
    EXPLICIT = "explicit"          # the request named a backup id
    POINT_IN_TIME = "point_in_time"  # the request named a second: rewound from the WAL archive
    NEWEST_BEFORE = "newest_before"  # the newest validated backup created before a time
    NEWEST = "newest"              # neither given: the newest validated backup


@dataclass(frozen=True)
class BackupCandidate:
    """A backup as the catalog knows it (``status`` is a :class:`continuity.catalog.model.BackupStatus` value)."""

    tenant: str
    backup_id: str
    status: str
    created_at: datetime
    status_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "backup_id": self.backup_id, "status": self.status,
                "created_at": self.created_at.isoformat(), "status_reason": self.status_reason}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> BackupCandidate:
        return cls(tenant=str(raw["tenant"]), backup_id=str(raw["backup_id"]), status=str(raw["status"]),
                   created_at=datetime.fromisoformat(raw["created_at"]),
                   status_reason=str(raw.get("status_reason", "")))


VALIDATED = "validated"
FAILED_VALIDATION = "failed_validation"


def _choice_refusal(tenant: str, backups: Sequence[BackupCandidate], backup_id: str | None,
                    before: datetime | None, owner_of_backup: str | None,
                    running: str | None) -> tuple[type[ContinuityError], str] | BackupCandidate:
    if running:
        return Conflict, (f"a recovery of {tenant} is already running ({running}); follow it, or reject it "
                          "before requesting another")
    if backup_id and before is not None:
        return InvalidRequest, "give either backup_id or before, not both"
    if before is not None and before.tzinfo is None:
        return InvalidRequest, "field before: needs a time zone, e.g. 2026-03-01T12:00:00Z"
    if backup_id:
        found = next((b for b in backups if b.backup_id == backup_id), None)
        if found is None:
            if owner_of_backup and owner_of_backup != tenant:
                return RecoveryRefused, (f"backup {backup_id} belongs to tenant {owner_of_backup}, not {tenant}: a "
                                         "tenant is only ever recovered from its own backups")
            return RecoveryRefused, (f"tenant {tenant} has no backup {backup_id[:40]!r} in the catalog; list them "
                                     f"with `continuity catalog list --tenant {tenant}`")
        if found.status == FAILED_VALIDATION:
            why = f" ({found.status_reason})" if found.status_reason else ""
            return RecoveryRefused, (f"backup {backup_id} failed validation{why}: recovering to it would restore a "
                                     "state already proven unusable; choose a validated backup")
        if found.status != VALIDATED:
            return RecoveryRefused, (f"backup {backup_id} is {found.status}, not validated: validate it first "
                                     f"(`continuity validate {tenant} --backup {backup_id}`) or choose a "
                                     "validated backup")
        return found
    if not backups:
        return RecoveryRefused, (f"tenant {tenant} has no backup in the catalog; nothing to recover to")
    oldest = min(b.created_at for b in backups)
    if before is not None and before <= oldest:
        return RecoveryRefused, (f"{before.isoformat()} is before the oldest backup of {tenant} "
                                 f"({oldest.isoformat()}): there is no state that old to recover to")
    eligible = [b for b in backups if b.status == VALIDATED and (before is None or b.created_at < before)]
    if not eligible:
        when = f" before {before.isoformat()}" if before is not None else ""
        return RecoveryRefused, (f"tenant {tenant} has no validated backup{when}; validate one first "
                                 f"(`continuity validate {tenant}`)")
    return max(eligible, key=lambda b: (b.created_at, b.backup_id))


def recovery_refusal(tenant: str, backups: Sequence[BackupCandidate], *, backup_id: str | None = None,
                     before: datetime | None = None, owner_of_backup: str | None = None,
                     running: str | None = None) -> str | None:
    """Why this recovery may not run, or None.

    Refused: a recovery of the tenant already running, a backup of another tenant, an unknown backup,
    a backup that failed validation or is not validated, a time at or before the oldest backup, no
    validated backup before the time.

    :param backups: the tenant's own backups (any status).
    :param owner_of_backup: the tenant that owns ``backup_id`` when the catalog knows it under another one.
    :param running: the id and state of the tenant's recovery in progress, if any.
    """
    found = _choice_refusal(tenant, backups, backup_id, before, owner_of_backup, running)
    return None if isinstance(found, BackupCandidate) else found[1]


def choose_backup(tenant: str, backups: Sequence[BackupCandidate], *, backup_id: str | None = None,
                  before: datetime | None = None, owner_of_backup: str | None = None,
                  running: str | None = None) -> BackupCandidate:
    """The backup to recover to: the named one, else the newest validated one before ``before`` (or at all).

    :raises Conflict: a recovery of the tenant is already running.
    :raises InvalidRequest: both a backup id and a time were given.
    :raises RecoveryRefused: every other refusal of :func:`recovery_refusal`.
    """
    found = _choice_refusal(tenant, backups, backup_id, before, owner_of_backup, running)
    if isinstance(found, BackupCandidate):
        return found
    raise found[0](found[1])


def how_chosen(backup_id: str | None, before: datetime | None) -> BackupChoice:
    if backup_id:
        return BackupChoice.EXPLICIT
    return BackupChoice.NEWEST_BEFORE if before is not None else BackupChoice.NEWEST


# ---- what going back loses ---------------------------------------------------------------------


@dataclass(frozen=True)
class TableFacts:
    """Counts measured on the live database against the staged copy of the backup.

    ``created_after``: live rows with an id above the backup's highest id (created after the snapshot);
    ``modified_after``: live rows the backup also has whose write_date is after the backup was taken;
    ``missing_from_live``: rows the backup has and the live database lost (what the recovery brings back).
    """

    name: str
    live_rows: int
    backup_rows: int
    created_after: int
    modified_after: int
    missing_from_live: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "live_rows": self.live_rows, "backup_rows": self.backup_rows,
                "created_after": self.created_after, "modified_after": self.modified_after,
                "missing_from_live": self.missing_from_live}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TableFacts:
        return cls(**{k: raw[k] for k in ("name", "live_rows", "backup_rows", "created_after", "modified_after",
                                          "missing_from_live")})


@dataclass(frozen=True)
class DataLossSummary:
    """What the approver is told the recovery discards and brings back."""

    backup_id: str
    backup_created_at: datetime
    measured_at: datetime
    tables: tuple[TableFacts, ...]

    @property
    def discards(self) -> int:
        return sum(t.created_after + t.modified_after for t in self.tables)

    @property
    def sentence(self) -> str:
        age = (self.measured_at - self.backup_created_at).total_seconds() / 60
        lost = ", ".join(f"{t.created_after} {t.name} created and {t.modified_after} changed" for t in self.tables)
        back = ", ".join(f"{t.missing_from_live} {t.name}" for t in self.tables if t.missing_from_live)
        text = (f"going back to backup {self.backup_id} ({age:.0f} min before this measurement) discards what the "
                f"live database received since: {lost}")
        return text + (f"; it brings back {back} missing from the live database" if back else "")

    def to_json(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "backup_created_at": self.backup_created_at.isoformat(),
                "measured_at": self.measured_at.isoformat(), "tables": [t.to_json() for t in self.tables],
                "discards": self.discards, "summary": self.sentence}


def summarize_data_loss(backup_id: str, backup_created_at: datetime, measured_at: datetime,
                        tables: Sequence[TableFacts]) -> DataLossSummary:
    return DataLossSummary(backup_id, backup_created_at, measured_at, tuple(tables))


# ---- the cutover state machine ------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseState:
    """One database as ``pg_database`` shows it."""

    name: str
    allow_connections: bool
    marker: str = ""  # its comment (the staged database carries :func:`marker`)
    sessions: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "allow_connections": self.allow_connections, "marker": self.marker,
                "sessions": self.sessions}


@dataclass(frozen=True)
class CutoverObservation:
    """The three names of one recovery on the tenant's server: each database, or None when absent."""

    names: DatabaseNames
    marker: str
    live: DatabaseState | None
    staged: DatabaseState | None
    pre_recovery: DatabaseState | None

    def to_json(self) -> dict[str, Any]:
        return {"live": self.live.to_json() if self.live else None,
                "staged": self.staged.to_json() if self.staged else None,
                "pre_recovery": self.pre_recovery.to_json() if self.pre_recovery else None}


class CutoverPosition(StrEnum):
    """Where the cutover stands, in the order it moves forward."""

    STAGED = "STAGED"              # live is the original, open; the staged copy waits beside it
    FENCED = "FENCED"              # live is the original, closed and without sessions; staged waits
    HALF_SWAPPED = "HALF_SWAPPED"  # no database under the live name: original set aside, staged not yet in
    SWAPPED = "SWAPPED"            # live is the recovered copy, still closed; the original is kept aside
    REOPENED = "REOPENED"          # live is the recovered copy, open
    UNKNOWN = "UNKNOWN"            # a combination this recovery did not make: stop and let a person look


ORDER = (CutoverPosition.STAGED, CutoverPosition.FENCED, CutoverPosition.HALF_SWAPPED, CutoverPosition.SWAPPED,
         CutoverPosition.REOPENED)


class CutoverAction(StrEnum):
    FENCE_LIVE = "fence_live"            # ALLOW_CONNECTIONS false on live, end its sessions
    UNFENCE_LIVE = "unfence_live"        # ALLOW_CONNECTIONS true on live (the original, on the way back)
    SWAP = "swap"                        # one transaction: live → pre_recovery, staged → live
    SWAP_BACK = "swap_back"              # one transaction: live → staged, pre_recovery → live
    FINISH_SWAP = "finish_swap"          # staged → live (resuming a half-made swap)
    UNDO_SET_ASIDE = "undo_set_aside"    # pre_recovery → live (rolling a half-made swap back)
    REOPEN_LIVE = "reopen_live"          # ALLOW_CONNECTIONS true on live (the recovered copy)


def cutover_position(obs: CutoverObservation) -> tuple[CutoverPosition, str]:
    """Where the cutover stands, and the sentence that says why."""
    live, staged, pre = obs.live, obs.staged, obs.pre_recovery
    names = obs.names
    if live is not None and live.marker == obs.marker:
        if pre is None:
            return CutoverPosition.UNKNOWN, (f"{names.live} is the recovered copy but the original "
                                             f"({names.pre_recovery}) is gone; a person must look before going on")
        if staged is not None:
            return CutoverPosition.UNKNOWN, (f"{names.live} is the recovered copy and {names.staged} exists too; "
                                             "a person must look before going on")
        if live.allow_connections:
            return CutoverPosition.REOPENED, f"{names.live} is the recovered copy and accepts connections"
        return CutoverPosition.SWAPPED, f"{names.live} is the recovered copy, still closed; original kept aside"
    if live is not None:
        if staged is None or staged.marker != obs.marker:
            return CutoverPosition.UNKNOWN, (f"{names.live} is the original and there is no staged copy "
                                             f"{names.staged} of this recovery")
        if pre is not None:
            return CutoverPosition.UNKNOWN, (f"{names.live} is the original but {names.pre_recovery} exists too; "
                                             "a person must look before going on")
        if live.allow_connections:
            return CutoverPosition.STAGED, f"{names.live} is the original and open; {names.staged} waits beside it"
        if live.sessions:
            # Closed to new connections but sessions remain: still fencing, not fenced.
            return CutoverPosition.STAGED, f"{names.live} is closed but {live.sessions} session(s) remain"
        return CutoverPosition.FENCED, f"{names.live} is the original, closed and without sessions"
    if pre is not None and staged is not None and staged.marker == obs.marker:
        return CutoverPosition.HALF_SWAPPED, (f"no database is named {names.live}: the original is set aside as "
                                              f"{names.pre_recovery}, {names.staged} is not yet in place")
    return CutoverPosition.UNKNOWN, (f"no database is named {names.live} and the staged copy or the original is "
                                     "missing; a person must look before going on")


_FORWARD = {
    CutoverPosition.STAGED: CutoverAction.FENCE_LIVE,
    CutoverPosition.FENCED: CutoverAction.SWAP,
    CutoverPosition.HALF_SWAPPED: CutoverAction.FINISH_SWAP,
    CutoverPosition.SWAPPED: CutoverAction.REOPEN_LIVE,
}
_BACKWARD = {
    CutoverPosition.REOPENED: CutoverAction.FENCE_LIVE,
    CutoverPosition.SWAPPED: CutoverAction.SWAP_BACK,
    CutoverPosition.HALF_SWAPPED: CutoverAction.UNDO_SET_ASIDE,
    CutoverPosition.FENCED: CutoverAction.UNFENCE_LIVE,
}


def next_cutover_action(position: CutoverPosition, target: CutoverPosition,
                        forward_only: bool = False) -> CutoverAction | None:
    """The one action that moves ``position`` toward ``target``; None when there already.

    ``forward_only``: a forward step re-run after the cutover went further (a replayed activity) does
    nothing rather than walk back: only a rollback moves backward.
    HALF_SWAPPED is never a target: it only exists between two renames and is always left at once.

    :raises ContinuityError: the position is UNKNOWN, or the target is UNKNOWN or HALF_SWAPPED.
    """
    if position is CutoverPosition.UNKNOWN:
        raise ContinuityError("the cutover is in a state this recovery did not make; nothing was changed, a "
                              "person must look at the tenant's databases")
    if target in (CutoverPosition.UNKNOWN, CutoverPosition.HALF_SWAPPED):
        raise ContinuityError(f"{target} is not a place a cutover may rest")
    if position is target:
        return None
    if ORDER.index(position) < ORDER.index(target):
        return _FORWARD[position]
    if forward_only:
        return None
    return _BACKWARD[position]


def live_count(obs: CutoverObservation) -> int:
    """How many databases answer to the tenant under the live name and accept connections (0 or 1)."""
    return 1 if obs.live is not None and obs.live.allow_connections else 0


def resting_refusal(obs: CutoverObservation) -> str | None:
    """Why this observation is not a safe resting point (exactly one live database, the old one closed to
    writers), or None."""
    position, why = cutover_position(obs)
    if position is CutoverPosition.UNKNOWN:
        return why
    if position is CutoverPosition.HALF_SWAPPED:
        return why
    if obs.live is None:
        return f"no database is named {obs.names.live}"
    if obs.pre_recovery is not None and obs.pre_recovery.sessions and position is CutoverPosition.REOPENED:
        return (f"{obs.pre_recovery.sessions} session(s) still write to the original ({obs.names.pre_recovery}) "
                "after the swap: two databases would take the tenant's writes")
    return None


# ---- timings --------------------------------------------------------------------------------------


# Approval → live again ends with the first successful reopen; the tenant is unavailable from the fence's start.
MILESTONES = Milestones(live_key="approval_to_live", live_step=StepName.REOPEN, outage_key="tenant_unavailable",
                        outage_from=StepName.FENCE)
