"""Failover of the local clusters: observe, fence the primary, promote the replica, probe, drill.

Every operation is idempotent, so a retried or replayed activity never does harm twice:
fencing a fenced primary re-confirms the fence; promoting a promoted replica reports it was already
promoted. The fence is ``ALTER SYSTEM SET default_transaction_read_only = on`` + reload + ending
every client session (``mode="read-only"``), optionally followed by a fast shutdown (``mode="stop"``).
The read-only fence stops well-behaved clients (Odoo never overrides the default); a client that
runs ``SET default_transaction_read_only = off`` itself could still write, which is why routing moves
too and ``stop`` exists for when that risk matters.

Zero lost commits: after the fence the old primary's WAL end (``final_lsn``) is recorded and the
replica is promoted only once it has replayed up to it. Every transaction that committed before the
fence is then on the new primary whatever ``synchronous_commit`` says. When the old primary is
unreachable there is no final LSN to wait for, and only ``synchronous_commit = remote_apply`` (or
``on``) with ``synchronous_standby_names`` naming the replica guarantees that acknowledged commits
reached it.

Drill copies live in ``{pg}/drills/{run_id}/``, created already marked (:mod:`continuity.adapters.local.run_folders`,
step ``copy``) and finished by a ``ready`` file: a re-run after a crash reuses a ready copy and redoes an
unfinished one; a folder without this run's marker is refused and left alone. README "Crash guarantees" has
the table of what each step's second attempt does.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from continuity.adapters.local.fault_injection import pause_at
from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.local.processes import kill_processes_naming
from continuity.adapters.local.run_folders import claim, create_marked, read_marker
from continuity.adapters.postgres.connection import connect
from continuity.failover.rules import FenceResult, FenceState, PrimaryObservation, ReplicaObservation, drill_refusal
from continuity.kernel.errors import ContinuityError, ServerUnavailable
from continuity.validation.naming import SWEEP_AFTER_MINUTES

logger = logging.getLogger(__name__)

DRILL_STEP = "copy"  # the step whose marker a drill folder carries
READY_FILE = "ready"  # written last by the copy step: the copy runs and was proved isolated
PROBE_DDL = ("create table if not exists continuity_write_probe "
             "(id bigserial primary key, run_id text not null, at timestamptz not null default now())")


class FailoverError(ContinuityError):
    code = "failover_failed"
    http_status = 409


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class DrillCopy:
    """A promoted-to-be copy of the replica in the sandbox area: unix socket only, private port number."""

    drill_id: str
    data_dir: Path
    socket_dir: Path
    port: int

    def dsn(self, stack: LocalStack, dbname: str = "postgres") -> str:
        return (f"host={self.socket_dir} port={self.port} user={stack.settings.superuser} dbname={dbname} "
                f"passfile={stack.pgpass} connect_timeout=5 application_name=continuity-drill")


class LocalFailover:
    """Failover operations on the local stack's ``primary`` and ``replica`` clusters."""

    def __init__(self, stack: LocalStack | None = None) -> None:
        self.stack = stack or LocalStack()

    # ---- observe ---------------------------------------------------------------------------
    def _current_lsn(self, cluster: str) -> str | None:
        try:
            with connect(self.stack.dsn(cluster)) as conn:
                row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
        except ServerUnavailable:
            return None
        return str(row[0]) if row else None

    def observe_replica(self, server: str, cluster: str = "replica", primary_cluster: str = "primary"
                        ) -> ReplicaObservation:
        """Reachability, recovery state and lag of the replica; lag bytes are measured against the
        primary's current WAL position when the primary answers, else receive-vs-replay on the replica."""
        primary_lsn = self._current_lsn(primary_cluster)
        try:
            with connect(self.stack.dsn(cluster)) as conn:
                in_recovery = bool(conn.execute("select pg_is_in_recovery()").fetchone()[0])  # type: ignore[index]
                if not in_recovery:
                    return ReplicaObservation(server, True, False, detail="not in recovery")
                if primary_lsn is not None:
                    row = conn.execute("select pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()),"
                                       " extract(epoch from now() - pg_last_xact_replay_timestamp())",
                                       (primary_lsn,)).fetchone()
                else:
                    row = conn.execute("select pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()),"
                                       " extract(epoch from now() - pg_last_xact_replay_timestamp())").fetchone()
                receiver = conn.execute("select status from pg_stat_wal_receiver").fetchone()
        except ServerUnavailable as exc:
            return ReplicaObservation(server, False, detail=_first_line(exc))
        assert row is not None
        lag_bytes = max(0, int(row[0] or 0))
        # Replay timestamp age grows while the primary is idle; with nothing left to replay, lag is 0 s.
        lag_seconds = 0.0 if lag_bytes == 0 else (float(row[1]) if row[1] is not None else None)
        detail = f"wal receiver {receiver[0] if receiver else 'not streaming'}"
        return ReplicaObservation(server, True, True, lag_bytes, lag_seconds, detail)

    def observe_primary(self, server: str, cluster: str = "primary") -> PrimaryObservation:
        try:
            with connect(self.stack.dsn(cluster)) as conn:
                row = conn.execute("select current_setting('default_transaction_read_only') = 'on',"
                                   " pg_is_in_recovery()").fetchone()
        except ServerUnavailable as exc:
            return PrimaryObservation(server, False, detail=_first_line(exc))
        assert row is not None
        return PrimaryObservation(server, True, bool(row[0]) or bool(row[1]))

    # ---- fence -----------------------------------------------------------------------------
    def fence_primary(self, server: str, cluster: str = "primary", mode: str = "read-only",
                      timeout: float = 15.0) -> FenceResult:
        """Make the old primary refuse writes, end its client sessions, and return its final WAL position.

        Idempotent. A cluster that is not running is reported STOPPED (on this machine ``pg_ctl status``
        proves it); one that runs but does not answer is UNREACHABLE (not confirmed fenced).
        """
        if mode not in ("read-only", "stop"):
            raise FailoverError(f"fence mode {mode!r} must be 'read-only' or 'stop' (CONTINUITY_FAILOVER_FENCE_MODE)")
        if not self.stack.is_running(cluster):
            return FenceResult(server, FenceState.STOPPED, f"cluster {cluster} is not running")
        try:
            with connect(self.stack.dsn(cluster)) as conn:
                conn.execute("alter system set default_transaction_read_only = on")
                conn.execute("select pg_reload_conf()")
            final_lsn = self._confirm_read_only_and_end_sessions(cluster, timeout)
        except ServerUnavailable as exc:
            return FenceResult(server, FenceState.UNREACHABLE, _first_line(exc))
        if mode == "stop":
            # Fast shutdown: walsenders send the remaining WAL to the standby before they exit.
            self.stack._pg_ctl(cluster, "-m", "fast", "-w", "-t", "60", "stop", check=False, timeout=90)
            if self.stack.is_running(cluster):
                return FenceResult(server, FenceState.NOT_FENCED, "pg_ctl stop did not stop it", final_lsn)
            return FenceResult(server, FenceState.STOPPED, "read-only, sessions ended, then stopped", final_lsn)
        return FenceResult(server, FenceState.READ_ONLY,
                           "default_transaction_read_only=on, client sessions ended", final_lsn)

    def _confirm_read_only_and_end_sessions(self, cluster: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            # A new session reads the reloaded setting: once it is on, every new transaction is read-only.
            with connect(self.stack.dsn(cluster)) as conn:
                on = conn.execute("show default_transaction_read_only").fetchone() == ("on",)
            if on:
                break
            if time.monotonic() > deadline:
                raise FailoverError(f"the {cluster} cluster did not turn read-only within {timeout:.0f} s after reload")
            time.sleep(0.02)
        with connect(self.stack.dsn(cluster)) as conn:
            # Sessions opened before the reload may still be inside a read-write transaction: end them.
            # Their uncommitted work rolls back; what committed is in WAL before final_lsn.
            # Materialised first, so the planner cannot call pg_terminate_backend() on our own pid.
            ended = [r[0] for r in conn.execute(
                "with victims as materialized (select pid from pg_stat_activity where pid <> pg_backend_pid()"
                " and backend_type = 'client backend') select pid from victims where pg_terminate_backend(pid)"
            ).fetchall()]
            gone_deadline = time.monotonic() + timeout
            while ended and conn.execute("select count(*) from pg_stat_activity where pid = any(%s)",
                                         (ended,)).fetchone() != (0,):
                if time.monotonic() > gone_deadline:
                    raise FailoverError(f"client sessions of {cluster} did not end within {timeout:.0f} s")
                time.sleep(0.01)
            row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def unfence_primary(self, cluster: str = "primary") -> None:
        """Undo a read-only fence (tests and stack rebuilds only; never part of a failover)."""
        with connect(self.stack.dsn(cluster)) as conn:
            conn.execute("alter system reset default_transaction_read_only")
            conn.execute("select pg_reload_conf()")

    # ---- promote ---------------------------------------------------------------------------
    def wait_for_replay(self, final_lsn: str, cluster: str = "replica", timeout: float = 30.0) -> float:
        """Wait until the replica has replayed up to ``final_lsn``; returns seconds waited.

        :raises FailoverError: it did not within ``timeout`` (promoting then would lose commits).
        """
        started = time.monotonic()
        with connect(self.stack.dsn(cluster)) as conn:
            while True:
                row = conn.execute("select pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                   (final_lsn,)).fetchone()
                assert row is not None
                if not row[0] or row[1]:
                    return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise FailoverError(f"replica did not replay up to the fenced primary's WAL end {final_lsn} within "
                                        f"{timeout:.0f} s; promoting now would lose commits")
                time.sleep(0.005)

    def promote_replica(self, cluster: str = "replica", timeout: int = 60) -> dict[str, Any]:
        """``pg_promote()`` the replica and wait until it accepts writes; idempotent."""
        started = time.monotonic()
        try:
            with connect(self.stack.dsn(cluster)) as conn:
                in_recovery = bool(conn.execute("select pg_is_in_recovery()").fetchone()[0])  # type: ignore[index]
                if not in_recovery:
                    return {"already_promoted": True, "seconds": 0.0}
                promoted = conn.execute("select pg_promote(true, %s)", (timeout,)).fetchone()
        except ServerUnavailable as exc:
            raise FailoverError(f"cannot reach the replica to promote it: {_first_line(exc)}") from exc
        if not promoted or not promoted[0]:
            raise FailoverError(f"pg_promote() on {cluster} did not finish within {timeout} s; check its log")
        return {"already_promoted": False, "seconds": round(time.monotonic() - started, 3)}

    # ---- verify ----------------------------------------------------------------------------
    def write_probe(self, dsn: str, run_id: str) -> dict[str, Any]:
        """Commit a row on the new primary: the proof it is writable."""
        started = time.monotonic()
        try:
            with connect(dsn) as conn:
                conn.execute(PROBE_DDL)
                row = conn.execute("insert into continuity_write_probe (run_id) values (%s) returning id",
                                   (run_id,)).fetchone()
        except (ServerUnavailable, psycopg.Error) as exc:
            return {"ok": False, "detail": f"write probe failed: {_first_line(exc)}"}
        return {"ok": True, "probe_id": int(row[0]) if row else None,
                "seconds": round(time.monotonic() - started, 3), "detail": "write committed"}

    def refuses_writes(self, cluster: str) -> bool:
        """Whether a plain write on ``cluster`` fails (the old primary after its fence)."""
        try:
            with connect(self.stack.dsn(cluster)) as conn:
                conn.execute("create temporary table continuity_fence_check (x int)")
                conn.execute("insert into pg_temp.continuity_fence_check values (1)")
                conn.execute("create table if not exists continuity_fence_probe (x int)")
        except psycopg.errors.ReadOnlySqlTransaction:
            return True
        except ServerUnavailable:
            return True
        return False

    def smoke(self, dsn_for: dict[str, str], assertions: dict[str, list[tuple[str, str, Any]]]) -> list[dict[str, Any]]:
        """Connect to each tenant's database on the new primary and run its registry assertions."""
        results: list[dict[str, Any]] = []
        for tenant, dsn in sorted(dsn_for.items()):
            entry: dict[str, Any] = {"tenant": tenant, "ok": True, "checks": []}
            try:
                with connect(dsn) as conn:
                    conn.execute("select 1")
                    for name, sql, expect in assertions.get(tenant, []):
                        try:
                            row = conn.execute(sql).fetchone()
                            value = row[0] if row else None
                            ok = value == expect
                            entry["checks"].append({"name": name, "ok": ok, "value": repr(value)[:80]})
                        except psycopg.Error as exc:
                            ok = False
                            entry["checks"].append({"name": name, "ok": False, "value": _first_line(exc)[:200]})
                        entry["ok"] = entry["ok"] and ok
            except ContinuityError as exc:
                entry.update(ok=False, detail=_first_line(exc))
            results.append(entry)
        return results

    # ---- drill -----------------------------------------------------------------------------
    def drill_root(self) -> Path:
        return self.stack.pg_root / "drills"

    def _drill_port(self) -> int:
        # A port number only names the socket file; pick one no socket in the dir uses.
        port = self.stack.port("sandbox") + 1000
        while (self.stack.socket_dir / f".s.PGSQL.{port}").exists():
            port += 1
        return port

    def drill_copy(self, drill_id: str, source_cluster: str = "replica") -> DrillCopy:
        """Copy the replica into the sandbox area and start the copy as a standby with no upstream,
        on a unix socket only.

        Idempotent under at-least-once delivery (``drill_id`` is the failover run's id): the drill folder is
        created already marked (run, step ``copy``) and a ``ready`` file is written once the copy runs and
        proved isolated. A re-run finds the folder and: reuses a ready copy (starting it again if it stopped);
        stops and deletes an unfinished one (a copy killed mid-``pg_basebackup``, or before its start) and
        copies again. A folder of that name without this run's marker is refused and left untouched.

        :raises LeftoverNotOurs: the drill folder exists and is not this run's.
        :raises FailoverError: the started copy is not isolated (it is dropped first).
        """
        root = self.drill_root() / drill_id
        self.sweep_drills(SWEEP_AFTER_MINUTES, keep=drill_id)
        if root.exists():
            claim(root, drill_id, DRILL_STEP)
            copy = self._ready_copy(drill_id)
            if copy is not None:
                if not self._drill_running(copy):
                    self._start_drill(copy)
                logger.info("drill copy reused", extra={"run_id": drill_id})
                return copy
            logger.warning("dropping an unfinished drill copy of an earlier attempt", extra={"run_id": drill_id})
            self._discard(root)
        self.drill_root().mkdir(parents=True, exist_ok=True)
        self.stack._chown(self.drill_root())
        create_marked(root, drill_id, DRILL_STEP)
        self.stack._chown(root)
        data = root / "data"
        self.stack._run_as_pg([
            str(self.stack.bin_dir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.stack.port(source_cluster)),
            "-U", self.stack.settings.superuser, "-D", str(data), "-X", "stream", "--checkpoint=fast", "--no-sync",
        ], timeout=600)
        pause_at("copy.copied")  # copied, not configured or started: a kill here leaves a full, unready copy
        port = self._drill_port()
        # The copy carries the replica's config: override it so the copy is isolated and no standby of anyone.
        overrides = {"port": str(port), "listen_addresses": "''",
                     "unix_socket_directories": f"'{self.stack.socket_dir}'",
                     "cluster_name": "'drill'", "primary_conninfo": "''", "hot_standby": "on",
                     "default_transaction_read_only": "off", "synchronous_standby_names": "''", "fsync": "off"}
        auto = data / "postgresql.auto.conf"
        text = auto.read_text() if auto.exists() else ""
        auto.write_text(text + "".join(f"{k} = {v}\n" for k, v in overrides.items()))
        self.stack._chown(auto)
        (data / "standby.signal").touch()
        self.stack._chown(data / "standby.signal")
        (root / "port").write_text(str(port))
        copy = DrillCopy(drill_id, data, self.stack.socket_dir, port)
        self._start_drill(copy)
        with connect(copy.dsn(self.stack)) as conn:
            listen = conn.execute("show listen_addresses").fetchone()
        live = [str(self.stack.dsn("primary")), str(self.stack.dsn("replica"))]
        reason = drill_refusal(str(copy.socket_dir) + f":{port}", bool(listen and listen[0]), live)
        if reason:
            self.drop_drill(drill_id)
            raise FailoverError(reason)
        (root / READY_FILE).write_text(str(port))
        return copy

    def _ready_copy(self, drill_id: str) -> DrillCopy | None:
        root = self.drill_root() / drill_id
        ready, data = root / READY_FILE, root / "data"
        if not ready.exists() or not (data / "PG_VERSION").exists():
            return None
        try:
            port = int(ready.read_text())
        except ValueError:
            return None
        return DrillCopy(drill_id, data, self.stack.socket_dir, port)

    def _start_drill(self, copy: DrillCopy) -> None:
        log = copy.data_dir.parent / "postgres.log"
        log.touch()
        self.stack._chown(log)
        self.stack._run_as_pg([str(self.stack.bin_dir / "pg_ctl"), "-D", str(copy.data_dir), "-l", str(log), "-w",
                               "-t", "90", "start"], timeout=120)

    def _discard(self, root: Path) -> None:
        """Stop a copy's postmaster if one runs there (a start interrupted or left behind), then delete it all."""
        data = root / "data"
        if (data / "postmaster.pid").exists():
            self.stack._run_as_pg([str(self.stack.bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                   "stop"], check=False, timeout=60)
        left = kill_processes_naming(str(root))  # e.g. a killed attempt's pg_basebackup still writing here
        if left:
            logger.warning("killed processes an earlier attempt left in its drill folder",
                           extra={"pids": left, "folder": str(root)})
        shutil.rmtree(root, ignore_errors=True)

    def _drill_running(self, copy: DrillCopy) -> bool:
        result = self.stack._run_as_pg([str(self.stack.bin_dir / "pg_ctl"), "-D", str(copy.data_dir), "status"],
                                       check=False)
        return result.returncode == 0

    def get_drill(self, drill_id: str) -> DrillCopy:
        copy = self._ready_copy(drill_id)
        if copy is None:
            raise FailoverError(f"no drill copy {drill_id}; the copy step has not run")
        return copy

    def promote_drill(self, drill_id: str) -> dict[str, Any]:
        copy = self.get_drill(drill_id)
        started = time.monotonic()
        with connect(copy.dsn(self.stack)) as conn:
            if not conn.execute("select pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                return {"already_promoted": True, "seconds": 0.0}
            conn.execute("select pg_promote(true, 60)")
        return {"already_promoted": False, "seconds": round(time.monotonic() - started, 3)}

    def drop_drill(self, drill_id: str) -> bool:
        """Stop and delete this run's drill copy; succeeds (False) when it is already gone.

        :raises LeftoverNotOurs: a folder of that name is not this run's (no marker, or another's): untouched.
        """
        root = self.drill_root() / drill_id
        if not root.exists():
            return False
        claim(root, drill_id, DRILL_STEP)
        self._discard(root)
        return True

    def list_drills(self) -> list[str]:
        """Drill folders this code made (marked), whoever's run they belong to."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.name for p in self.drill_root().iterdir()
                          if p.is_dir() and (m := read_marker(p)) is not None and m.names(p.name, DRILL_STEP))
        return []

    def sweep_drills(self, older_than_minutes: int, keep: str | None = None,
                     now: datetime | None = None) -> list[str]:
        """Stop and delete marked drill copies older than ``older_than_minutes`` (runs that crashed and never
        cleaned up) and half-made folders as old; unmarked folders are never touched."""
        cutoff = (now or datetime.now(UTC)) - timedelta(minutes=older_than_minutes)
        swept: list[str] = []
        for name in self.list_drills():
            marker = read_marker(self.drill_root() / name)
            if name != keep and marker is not None and marker.created_at < cutoff:
                self._discard(self.drill_root() / name)
                swept.append(name)
        with contextlib.suppress(FileNotFoundError):
            for half in self.drill_root().glob(".*.tmp"):
                if datetime.fromtimestamp(half.stat().st_mtime, UTC) < cutoff:
                    shutil.rmtree(half, ignore_errors=True)
                    swept.append(half.name)
        if swept:
            logger.warning("swept %d stale drill copies", len(swept), extra={"drills": swept})
        return swept

    # ---- restore the stack (tests, `local up` after a failover) ----------------------------
    def restore_original_roles(self) -> None:
        """Make ``primary`` writable again and rebuild ``replica`` as its streaming standby.

        Used after tests and drills of a real failover on a throwaway stack; the promoted replica's
        writes since the failover are discarded, which is why this is never a step of a failover.
        """
        if not self.stack.is_running("primary"):
            self.stack._start("primary")
        self.unfence_primary("primary")
        self.stack.rebuild_replica()
