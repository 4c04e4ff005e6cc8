"""Retention bookkeeping in the control database: legal holds, retention runs, action outcomes.

Tables (migration 3 in :mod:`continuity.adapters.postgres.control_db`): ``catalog.legal_holds``,
``catalog.retention_runs`` (one row per run, the plan's batches, a lease so only one run applies at a
time) and the outcome columns of ``catalog.retention_actions``. Recording an outcome and updating the
catalog entry it changed happen in one transaction, so the catalog never claims a change the
bookkeeping lacks (or the reverse).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from continuity.adapters.postgres.connection import connect
from continuity.catalog.model import BackupStatus, transition_refusal
from continuity.kernel.errors import Conflict
from continuity.retention.holds import LegalHold
from continuity.retention.planner import Delete, RetentionAction, SetImmutability, SetTier

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key serialising run starts ("retn" "runs" in ASCII).
RUN_LOCK = 0x7265746E_72756E73
LEASE_MINUTES = 30
DONE_STATUSES = frozenset({"APPLIED", "NOT_ENFORCED", "NOTHING_TO_DO"})


def sdk_tier(tier: str) -> str:
    """The tier as storage spells it (``Cool``), the form catalog ingest records from blob properties."""
    return tier[:1].upper() + tier[1:].lower()


def action_target(action: RetentionAction) -> str | None:
    if isinstance(action, SetTier):
        return action.to.value
    if isinstance(action, SetImmutability):
        return action.until.isoformat()
    return None


@dataclass(frozen=True)
class RunRow:
    run_id: str
    as_of: datetime
    requested_by: str
    state: str
    started_at: datetime
    finished_at: datetime | None
    plan_sha256: str | None
    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "as_of": self.as_of.isoformat(), "requested_by": self.requested_by,
                "state": self.state, "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "plan_sha256": self.plan_sha256, "summary": self.summary}


def _run(row: dict[str, Any]) -> RunRow:
    return RunRow(run_id=row["run_id"], as_of=row["as_of"], requested_by=row["requested_by"], state=row["state"],
                  started_at=row["started_at"], finished_at=row["finished_at"], plan_sha256=row["plan_sha256"],
                  summary=row["summary"] or {})


def _hold(row: dict[str, Any]) -> LegalHold:
    return LegalHold(tenant=row["tenant"], backup_id=row["backup_id"], reason=row["reason"], set_by=row["set_by"],
                     set_at=row["set_at"], cleared_by=row["cleared_by"], cleared_at=row["cleared_at"],
                     clear_reason=row["clear_reason"])


class HoldStore:
    """Legal holds as recorded (set through the API); the registry's ``legal_hold`` flags live in the registry."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def list_holds(self, tenant: str | None = None, *, active_only: bool = True) -> list[LegalHold]:
        """Holds, oldest first; empty if none."""
        where = ["true"]
        params: list[Any] = []
        if tenant is not None:
            where.append("tenant = %s")
            params.append(tenant)
        if active_only:
            where.append("cleared_at is null")
        with connect(self.dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(f"select * from catalog.legal_holds where {' and '.join(where)} order by id",
                               params).fetchall()
        return [_hold(r) for r in rows]

    def get_active(self, tenant: str, backup_id: str | None) -> LegalHold | None:
        with connect(self.dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from catalog.legal_holds where tenant = %s and coalesce(backup_id, '') = %s "
                              "and cleared_at is null", (tenant, backup_id or "")).fetchone()
        return _hold(row) if row else None

    def set_hold(self, hold: LegalHold) -> tuple[LegalHold, bool]:
        """Record ``hold`` unless the same tenant/backup is already held; returns the active hold and
        whether it is new (an existing hold keeps its first reason)."""
        with connect(self.dsn) as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                """insert into catalog.legal_holds (tenant, backup_id, reason, set_by, set_at)
                   values (%s, %s, %s, %s, %s)
                   on conflict (tenant, coalesce(backup_id, '')) where cleared_at is null do nothing
                   returning *""",
                (hold.tenant, hold.backup_id, hold.reason, hold.set_by, hold.set_at)).fetchone()
            if row is not None:
                return _hold(row), True
            existing = cur.execute("select * from catalog.legal_holds where tenant = %s "
                                   "and coalesce(backup_id, '') = %s and cleared_at is null",
                                   (hold.tenant, hold.backup_id or "")).fetchone()
        assert existing is not None
        return _hold(existing), False

    def clear_hold(self, tenant: str, backup_id: str | None, by: str, reason: str, at: datetime) -> LegalHold | None:
        """Clear the active hold; returns it cleared, or None if there was none (nothing changed)."""
        with connect(self.dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                """update catalog.legal_holds set cleared_by = %s, cleared_at = %s, clear_reason = %s
                   where tenant = %s and coalesce(backup_id, '') = %s and cleared_at is null returning *""",
                (by, at, reason, tenant, backup_id or "")).fetchone()
        return _hold(row) if row else None


class RetentionRecords:
    """Retention runs and action outcomes; applying an outcome to the catalog entry in the same transaction."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        with connect(self.dsn) as conn, conn.transaction():
            yield conn

    # ---- runs ------------------------------------------------------------------------------
    def begin_run(self, run_id: str, as_of: datetime, requested_by: str) -> tuple[str, RunRow]:
        """Take the one-run-at-a-time lease for ``run_id``.

        :returns: ("started" | "resumed" | "completed", the run). A completed run is not started again.
        :raises Conflict: another run holds an unexpired lease (nothing is changed).
        """
        with self._tx() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute("select pg_advisory_xact_lock(%s)", (RUN_LOCK,))
            others = cur.execute("select *, lease_until > now() as leased from catalog.retention_runs "
                                 "where state = 'running' and run_id <> %s", (run_id,)).fetchall()
            for other in others:
                if other["leased"]:
                    raise Conflict(f"retention run {other['run_id']} is applying (since "
                                   f"{other['started_at']:%Y-%m-%d %H:%M:%S} UTC, requested by "
                                   f"{other['requested_by']}); wait for it to finish, then start again")
                cur.execute("update catalog.retention_runs set state = 'failed', finished_at = now(), "
                            "summary = summary || %s where run_id = %s",
                            (Jsonb({"error": "lease expired: the run stopped without finishing"}), other["run_id"]))
            row = cur.execute("select * from catalog.retention_runs where run_id = %s for update",
                              (run_id,)).fetchone()
            if row is not None and row["state"] == "completed":
                return "completed", _run(row)
            if row is None:
                row = cur.execute(
                    """insert into catalog.retention_runs (run_id, as_of, requested_by, state, lease_until)
                       values (%s, %s, %s, 'running', now() + make_interval(mins => %s)) returning *""",
                    (run_id, as_of, requested_by, LEASE_MINUTES)).fetchone()
                assert row is not None
                return "started", _run(row)
            row = cur.execute(
                """update catalog.retention_runs set state = 'running', finished_at = null,
                       lease_until = now() + make_interval(mins => %s) where run_id = %s returning *""",
                (LEASE_MINUTES, run_id)).fetchone()
            assert row is not None
            return "resumed", _run(row)

    def running_run(self) -> RunRow | None:
        """The run holding an unexpired lease, if any."""
        with connect(self.dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from catalog.retention_runs where state = 'running' "
                              "and lease_until > now()").fetchone()
        return _run(row) if row else None

    def get_run(self, run_id: str) -> RunRow | None:
        with connect(self.dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from catalog.retention_runs where run_id = %s", (run_id,)).fetchone()
        return _run(row) if row else None

    def last_completed(self) -> RunRow | None:
        with connect(self.dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from catalog.retention_runs where state = 'completed' "
                              "order by finished_at desc limit 1").fetchone()
        return _run(row) if row else None

    def store_plan(self, run_id: str, batches: Sequence[Sequence[dict[str, Any]]], summary: dict[str, Any]) -> str:
        """Keep the run's storage-changing actions in batches; returns the sha256 of the stored plan."""
        document = {"batches": [list(b) for b in batches]}
        sha = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        with self._tx() as conn:
            conn.execute("update catalog.retention_runs set plan = %s, plan_sha256 = %s, summary = %s, "
                         "lease_until = now() + make_interval(mins => %s) where run_id = %s",
                         (Jsonb(document), sha, Jsonb(summary), LEASE_MINUTES, run_id))
        return sha

    def renew_lease(self, run_id: str) -> None:
        """Extend a running run's lease (each batch does, so a long run keeps it)."""
        with connect(self.dsn) as conn:
            conn.execute("update catalog.retention_runs set lease_until = now() + make_interval(mins => %s) "
                         "where run_id = %s and state = 'running'", (LEASE_MINUTES, run_id))

    def load_batch(self, run_id: str, batch: int) -> list[dict[str, Any]]:
        with connect(self.dsn) as conn:
            row = conn.execute("select plan -> 'batches' -> %s from catalog.retention_runs where run_id = %s",
                               (batch, run_id)).fetchone()
        if row is None or row[0] is None:
            raise Conflict(f"retention run {run_id} has no planned batch {batch}; plan the run first")
        actions: list[dict[str, Any]] = row[0]
        return actions

    def finish_run(self, run_id: str, state: str, summary: dict[str, Any]) -> RunRow:
        with self._tx() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("update catalog.retention_runs set state = %s, finished_at = now(), lease_until = null, "
                              "summary = summary || %s where run_id = %s returning *",
                              (state, Jsonb(summary), run_id)).fetchone()
        if row is None:
            raise Conflict(f"no retention run {run_id} to finish")
        return _run(row)

    # ---- actions ---------------------------------------------------------------------------
    def done_keys(self, run_id: str) -> set[tuple[str, str, str]]:
        """(tenant, backup_id, kind) of this run's actions already done (resumes skip them)."""
        with connect(self.dsn) as conn:
            rows = conn.execute("select tenant, backup_id, action from catalog.retention_actions "
                                "where run_id = %s and status = any(%s)", (run_id, list(DONE_STATUSES))).fetchall()
        return {(str(t), str(b), str(a)) for t, b, a in rows}

    def outcomes(self, run_id: str) -> list[dict[str, Any]]:
        with connect(self.dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute("select tenant, backup_id, action, target, status, detail, batch, attempts, reason, "
                               "applied_at from catalog.retention_actions where run_id = %s order by id",
                               (run_id,)).fetchall()

    def record_outcomes(self, run_id: str, batch: int, planned_at: datetime,
                        outcomes: Sequence[tuple[RetentionAction, str, str]]) -> None:
        """Record each (action, status, detail) and, for those done, the change in the catalog entry, all in
        one transaction."""
        with self._tx() as conn:
            for action, status, detail in outcomes:
                done = status in DONE_STATUSES
                conn.execute(
                    """insert into catalog.retention_actions
                           (run_id, tenant, backup_id, action, reason, planned_at, applied_at, status, detail,
                            target, batch, attempts)
                       values (%s, %s, %s, %s, %s, %s, case when %s then now() end, %s, %s, %s, %s, 1)
                       on conflict (run_id, tenant, backup_id, action) do update set
                           status = excluded.status, detail = excluded.detail, applied_at = excluded.applied_at,
                           batch = excluded.batch, attempts = catalog.retention_actions.attempts + 1""",
                    (run_id, action.tenant, action.backup_id, action.kind.value, action.reason, planned_at, done,
                     status, detail[:2000], action_target(action), batch))
                if done:
                    self._apply_to_catalog(conn, action)

    @staticmethod
    def _apply_to_catalog(conn: psycopg.Connection, action: RetentionAction) -> None:
        key = (action.tenant, action.backup_id)
        if isinstance(action, SetTier):
            conn.execute("update catalog.backups set storage_tier = %s, updated_at = now() "
                         "where tenant = %s and backup_id = %s", (sdk_tier(action.to.value), *key))
        elif isinstance(action, SetImmutability):
            conn.execute("update catalog.backups set immutable_until = greatest(immutable_until, %s), "
                         "updated_at = now() where tenant = %s and backup_id = %s", (action.until, *key))
        elif isinstance(action, Delete):
            row = conn.execute("select status from catalog.backups where tenant = %s and backup_id = %s for update",
                               key).fetchone()
            if row is None:
                return
            old = BackupStatus(row[0])
            if old is BackupStatus.DELETED:
                return
            refusal = transition_refusal(old, BackupStatus.DELETED)
            if refusal:
                raise Conflict(f"{action.tenant}/{action.backup_id}: {refusal}")
            conn.execute("update catalog.backups set status = 'deleted', status_reason = %s, updated_at = now() "
                         "where tenant = %s and backup_id = %s", (f"retention: {action.reason}"[:500], *key))
