"""Point-in-time recovery: WAL archive lag under pgbench, and one tenant rewound to a second vs the whole server.

Archive lag (commit -> segment in storage) under a pgbench write load; one tenant taken out of a server rewound to
a second, against a bare whole-server ``barman-cloud-restore`` + replay to the same second.

    .venv/bin/python bench/bench_pitr.py [--seconds 60] [--clients 4] [--pgbench-scale 5] [--scale 2] [--runs 1]
                                         [--probe-interval 0.5] [--port-base 31900]

Brings up a throwaway stack of its own (four clusters and Azurite under ``.local/bench-pitr-<port base>``, ports
from ``--port-base``); its primary archives every WAL segment with ``barman-cloud-wal-archive --gzip`` into
Azurite's ``wal`` container (``archive_timeout`` = ``CONTINUITY_ARCHIVE_TIMEOUT_SECONDS``). It seeds a demo
tenant at ``--scale`` and a pgbench database (``pgbench -i -s --pgbench-scale``: the server's other data), takes
a base backup (``barman-cloud-backup``, what ``continuity pitr base-backup`` does), then:

1. **archive lag** — ``pgbench -T --seconds -c --clients`` (TPC-B-like writes) on the scratch database while this
   process commits a probe row every ``--probe-interval`` seconds and notes the WAL segment holding it
   (``pg_walfile_name(pg_current_wal_flush_lsn())`` right after the commit: the segment of the commit record or,
   rarely, the next one, so the lag is an upper bound). When the segment was archived comes from polling
   ``pg_stat_archiver`` every 50 ms (``last_archived_time``: the archive command, upload included, returned);
   a segment the poll skipped gets the next observed one's time (again an upper bound). Storage's own
   ``Last-Modified`` of each segment (1 s resolution) is printed as a cross-check. Probes whose segment was
   still open when the load stopped are reported apart: a quiet server ships them at ``archive_timeout``.
2. **one tenant to a second** — the target is the last probe committed under load, so replay covers the whole
   load's WAL. Per run, same target, same base backup, same recovery settings:

   * **peer**: a bare ``barman-cloud-restore`` of the base backup into a scratch directory, then PostgreSQL
     started with ``restore_command = barman-cloud-wal-restore`` and ``recovery_target_time``, timed until it
     promotes (:meth:`LocalStack.restore_base_backup` + :meth:`LocalStack.start_rewound`). The whole server.
   * **ours**: in this process, what the recovery workflow runs before it waits for approval: the request's
     archive check (:func:`continuity.recovery.service.point_in_time_refusal`), the ``rewind`` step (a forced
     WAL switch, the archive listed, the same restore + replay, then only the tenant's database dumped, stored
     and cataloged as a point-in-time extract, the copy removed), ``confirm_backup``, ``stage`` (restore of the
     extract beside the live database) and ``checks`` (the nightly validation's checks). Without the devhost.

Prints the archive lag p50/p95/max, pgbench's TPS, each side's seconds and the ratios ours / peer. Every rewound
copy and staged database is removed, and the whole stack with it at the end. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import pct, restore_env, stack_env  # noqa: E402
from continuity.adapters.local.local_stack import LocalStack  # noqa: E402
from continuity.adapters.postgres.connection import connect, ensure_database  # noqa: E402
from continuity.adapters.postgres.wal_archiver import recovery_state  # noqa: E402
from continuity.adapters.storage.blob_store import BlobStore  # noqa: E402
from continuity.adapters.tools import pgbin  # noqa: E402
from continuity.kernel import settings  # noqa: E402
from continuity.kernel.settings import LocalStackSettings  # noqa: E402
from continuity.kernel.tenants import Registry  # noqa: E402
from continuity.pitr.rules import (  # noqa: E402
    SEGMENT_RE,
    BaseBackup,
    choose_base_backup,
    recovery_settings,
    segment_number,
    stop_time_from_log,
)
from tests.recovery_support import seed_demo, write_registry  # noqa: E402

TENANT, DB = "bench-pitr", "odoo_bench_pitr"
SERVER = "weu-primary"
PGBENCH_DB = "bench_pitr_pgbench"
POLL_SECONDS = 0.05  # pg_stat_archiver shows only the newest archived segment: poll faster than one archive call


def bench_env(port_base: int) -> dict[str, str]:
    return stack_env("pitr", port_base)



def spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"p50 {pct(values, 0.5):.2f} s, p95 {pct(values, 0.95):.2f} s, max {max(values):.2f} s (n={len(values)})"


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


# ---- 1. archive lag under a pgbench write load ------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    committed_at: datetime
    segment: str


@dataclass(frozen=True)
class Archived:
    """One change of ``pg_stat_archiver`` as polled: the newest archived segment and when its archiving ended."""

    segment: str
    at: datetime


@dataclass
class LagResult:
    probes: list[Probe]
    archived: list[Archived]
    open_at_end: str
    tps: float
    seconds: float
    segments_during_load: int
    backlog_at_end: int
    failed_archives: int
    stored_at: dict[str, datetime]

    def archived_at(self, segment: str) -> datetime | None:
        """When ``segment`` was archived: its own poll, else the next segment seen archived (the archiver is
        sequential, so that one's time is an upper bound)."""
        wanted = segment_number(segment)
        return next((a.at for a in self.archived if segment_number(a.segment) >= wanted), None)

    @property
    def target(self) -> datetime:
        under_load = [p for p in self.probes if segment_number(p.segment) < segment_number(self.open_at_end)]
        return (under_load or self.probes)[-1].committed_at


def pgbench_env(stack: LocalStack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGPASSFILE": str(stack.pgpass), "LC_ALL": "C"})
    return env


def pgbench(stack: LocalStack, *args: str) -> list[str]:
    return [pgbin.tool("pgbench"), "-h", "127.0.0.1", "-p", str(stack.port("primary")),
            "-U", stack.settings.superuser, *args, PGBENCH_DB]


def init_pgbench(stack: LocalStack, scale: int) -> None:
    ensure_database(stack.dsn("primary"), PGBENCH_DB)
    result = subprocess.run(pgbench(stack, "-i", "-q", "-s", str(scale)), env=pgbench_env(stack), text=True,
                            capture_output=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"pgbench -i failed: {result.stderr.strip()[-600:]}")
    with psycopg.connect(stack.dsn("primary", PGBENCH_DB), autocommit=True) as conn:
        conn.execute("create table if not exists bench_pitr_probe "
                     "(n bigserial primary key, at timestamptz not null default clock_timestamp())")


def archiver_state(conn: psycopg.Connection[Any]) -> tuple[str, datetime | None, int]:
    row = conn.execute("select coalesce(last_archived_wal, ''), last_archived_time, failed_count "
                       "from pg_stat_archiver").fetchone()
    assert row is not None
    return str(row[0]), row[1], int(row[2])


def measure_archive_lag(stack: LocalStack, seconds: int, clients: int, interval: float,
                        tail_timeout: float) -> LagResult:
    probes: list[Probe] = []
    archived: list[Archived] = []

    def observe(conn: psycopg.Connection[Any]) -> int:
        name, at, failed = archiver_state(conn)
        # Only whole segments: a .backup history file or a timeline .history file says nothing about lag.
        if at is not None and len(name) == 24 and SEGMENT_RE.match(name) and \
                (not archived or archived[-1].segment != name):
            archived.append(Archived(name, at))
        return failed

    dsn = stack.dsn("primary", PGBENCH_DB)
    with psycopg.connect(dsn, autocommit=True) as probe, psycopg.connect(dsn, autocommit=True) as watch:
        failed_before = observe(watch)
        threads = str(min(clients, os.cpu_count() or 1))
        loader = subprocess.Popen(pgbench(stack, "-c", str(clients), "-j", threads, "-T", str(seconds)),
                               env=pgbench_env(stack), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started = time.monotonic()
        next_probe = started + 1.0  # after pgbench's own vacuum and connections
        try:
            while loader.poll() is None:
                if time.monotonic() >= next_probe:
                    probe.execute("insert into bench_pitr_probe default values")
                    committed = datetime.now(UTC)
                    row = probe.execute("select pg_walfile_name(pg_current_wal_flush_lsn())").fetchone()
                    assert row is not None
                    probes.append(Probe(committed, str(row[0])))
                    next_probe += interval
                observe(watch)
                time.sleep(POLL_SECONDS)
        except BaseException:
            loader.kill()
            raise
        out, err = loader.communicate()
        elapsed = time.monotonic() - started
        if loader.returncode != 0:
            raise RuntimeError(f"pgbench failed: {err.strip()[-600:]}")
        row = watch.execute("select pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()
        assert row is not None
        open_at_end = str(row[0])
        observe(watch)
        backlog = segment_number(open_at_end) - (segment_number(archived[-1].segment) if archived else 0)
        # The tail: the segment open when the load stopped fills no more; archive_timeout ships it.
        deadline = time.monotonic() + tail_timeout
        newest = max(probes, key=lambda p: segment_number(p.segment)).segment
        while not (archived and segment_number(archived[-1].segment) >= segment_number(newest)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"segment {newest} was not archived within {tail_timeout:.0f} s of the load's end "
                                   f"(last archived {archived[-1].segment if archived else 'none'})")
            observe(watch)
            time.sleep(POLL_SECONDS)
        failed_after = observe(watch)
    found = re.search(r"tps = ([\d.]+)", out)
    first = min(segment_number(p.segment) for p in probes)
    barman = stack.barman()
    stored = {s.name: s.stored_at for s in barman.segments(stack.archive_name(), BlobStore(barman.connection_string))}
    return LagResult(probes=probes, archived=archived, open_at_end=open_at_end,
                     tps=float(found[1]) if found else float("nan"), seconds=elapsed,
                     segments_during_load=segment_number(open_at_end) - first + 1, backlog_at_end=backlog,
                     failed_archives=failed_after - failed_before, stored_at=stored)


def report_lag(lag: LagResult, archive_timeout: int) -> None:
    end = segment_number(lag.open_at_end)
    under: list[float] = []
    tail: list[float] = []
    stored_under: list[float] = []
    missing = sorted({p.segment for p in lag.probes if p.segment not in lag.stored_at})
    for p in lag.probes:
        at = lag.archived_at(p.segment)
        if at is None:
            continue
        seconds = (at - p.committed_at).total_seconds()
        (under if segment_number(p.segment) < end else tail).append(seconds)
        if segment_number(p.segment) < end and p.segment in lag.stored_at:
            stored_under.append((lag.stored_at[p.segment] - p.committed_at).total_seconds())
    wal_mb = lag.segments_during_load * 16
    print(f"pgbench: {lag.tps:.0f} TPS over {lag.seconds:.1f} s; about {wal_mb} MB of WAL "
          f"({lag.segments_during_load} segments, {wal_mb / lag.seconds:.1f} MB/s); {len(lag.probes)} probe commits; "
          f"{lag.failed_archives} failed archive attempts; {load()}", flush=True)
    print(f"archive lag (commit -> segment archived, pg_stat_archiver) under load: {spread(under)}")
    print(f"  cross-check, storage Last-Modified (1 s resolution): {spread(stored_under)}")
    # Where the lag goes: waiting for the segment to fill, then shipping it. A segment closed between its last probe
    # and the next segment's first one, so its shipping time lies between these two bounds.
    low: list[float] = []
    high: list[float] = []
    for segment in sorted({p.segment for p in lag.probes}, key=segment_number):
        later = [p.committed_at for p in lag.probes if segment_number(p.segment) > segment_number(segment)]
        at = lag.archived_at(segment)
        if later and at is not None and segment_number(segment) < end:
            low.append((at - min(later)).total_seconds())
            high.append((at - max(p.committed_at for p in lag.probes if p.segment == segment)).total_seconds())
    shipped = f"{pct(low, 0.5):.2f}-{pct(high, 0.5):.2f} s (p50, n={len(low)})" if low else "not measured"
    start = min(p.committed_at for p in lag.probes)
    for segment in sorted({p.segment for p in lag.probes}, key=segment_number):
        mine = [p.committed_at for p in lag.probes if p.segment == segment]
        at = lag.archived_at(segment)
        archived = f"archived +{(at - start).total_seconds():.1f} s" if at else "not archived"
        print(f"    segment {segment}: {len(mine)} probes committed +{(min(mine) - start).total_seconds():.1f}.."
              f"+{(max(mine) - start).total_seconds():.1f} s, {archived}")
    print(f"  a segment filled every {lag.seconds / lag.segments_during_load:.1f} s under load and took {shipped} from "
          f"closing to archived (barman-cloud-wal-archive --gzip + upload); when the load stopped "
          f"{max(lag.backlog_at_end - 1, 0)} full segment(s) were waiting for the archiver")
    print(f"  tail: {len(tail)} probe(s) in the segment open when the load stopped ({lag.open_at_end}), shipped "
          f"by archive_timeout={archive_timeout}s: {spread(tail)}")
    if missing:
        print(f"  NOT IN STORAGE: {', '.join(missing[:5])}")


# ---- 2. one tenant to a second vs the whole server -----------------------------------------------------------


def wait_promoted(stack: LocalStack, name: str, port: int, timeout: float = 3600) -> None:
    """Poll until the copy leaves recovery (PostgreSQL has no notification for "recovery finished")."""
    deadline = time.monotonic() + timeout
    while True:
        if not stack.rewound_running(name):
            raise RuntimeError(f"the restored copy {name} stopped: {stack.rewound_log(name)[-600:]}")
        state = recovery_state(stack.rewound_dsn(port))
        if state is not None and not state[0]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not reach its target within {timeout:.0f} s")
        time.sleep(0.2)


def run_peer(stack: LocalStack, base: BaseBackup, target: datetime) -> dict[str, Any]:
    """The bare whole-server restore: barman-cloud-restore, then replay to the target with
    barman-cloud-wal-restore, until promotion. The same recovery settings as ours (fsync off, socket only)."""
    name = f"bench-peer-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    try:
        stack.restore_base_backup(name, base.backup_id)
        restored = time.monotonic()
        port = stack.rewound_port(name)
        # start_rewound waits (pg_ctl -w) until the copy is consistent or has stopped; promotion comes later.
        if not stack.start_rewound(name, recovery_settings(port=port, socket_dir=str(stack.socket_dir),
                                                           restore_command=f"{stack.restore_script} %f %p",
                                                           target=target)):
            raise RuntimeError(f"the restored copy {name} stopped: {stack.rewound_log(name)[-600:]}")
        wait_promoted(stack, name, port)
        promoted = time.monotonic()
        log = stack.rewound_log(name)
        segments = len(set(re.findall(r'restored log file "([0-9A-F]{24})" from archive', log)))
        return {"restore": restored - started, "replay": promoted - restored, "total": promoted - started,
                "reached": stop_time_from_log(log), "segments": segments}
    finally:
        removing = time.monotonic()
        stack.remove_rewound(name)
        print(f"  (peer copy removed in {time.monotonic() - removing:.2f} s, not counted)", flush=True)


def run_ours(registry: Registry, target: datetime) -> dict[str, Any]:
    """What the recovery workflow does from the request to "awaiting approval", in process."""
    from continuity.recovery import service as recovery

    tenant = registry.get_tenant(TENANT)
    run_id = str(uuid.uuid4())
    started = time.monotonic()
    refusal = recovery.point_in_time_refusal(tenant.id, target)
    if refusal:
        raise RuntimeError(f"request refused: {refusal}")
    planned = recovery.plan(tenant.id, datetime.now(UTC), run_id, f"point-in-time@{target.isoformat()}")
    requested = time.monotonic()
    base: dict[str, Any] = {"tenant": tenant.id, "run_id": run_id, "backup_id": "", "names": planned["names"],
                            "marker": planned["marker"], "drill": False}
    steps: dict[str, dict[str, Any]] = {}
    swapped = False
    try:
        steps["rewind"] = recovery.rewind({**base, "to": target.isoformat()})
        if not steps["rewind"]["ok"]:
            raise RuntimeError(steps["rewind"]["detail"])
        base = {**base, "backup_id": steps["rewind"]["data"]["extract"]["backup_id"], "point_in_time": True}
        t = time.monotonic()
        recovery.confirm_backup(base)
        confirmed = time.monotonic() - t
        steps["stage"] = recovery.stage(base)
        if not steps["stage"]["ok"]:
            raise RuntimeError(steps["stage"]["detail"])
        steps["checks"] = recovery.check({**base, "restore": steps["stage"]["data"]["restore"]})
        if not steps["checks"]["ok"]:
            raise RuntimeError(steps["checks"]["detail"])
        total = time.monotonic() - started
        # The approval is a person's time, not ours: taken as instant. Then the cutover the workflow runs.
        for step in ("fence", "swap", "reopen", "verify"):
            steps[step] = getattr(recovery, step)(base)
            if not steps[step]["ok"]:
                raise RuntimeError(f"{step}: {steps[step]['detail']}")
        swapped = True
        live = time.monotonic() - started
    finally:
        if base.get("point_in_time") and "swap" not in steps:
            recovery.cleanup(base)  # the staged database; the rewound copy is gone with the rewind step
    if swapped:  # the pre-recovery copy the swap keeps: a bench has no use for it
        with connect(LocalStack().dsn("primary"), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{planned["names"]["pre_recovery"]}" with (force)')
    point = steps["rewind"]["data"]["point_in_time"]
    extract = steps["rewind"]["data"]["extract"]
    return {"request": requested - started, "rewind": float(steps["rewind"]["seconds"]),
            "restore": float(point["restore_seconds"]), "replay": float(point["replay_seconds"]),
            "extract": float(extract["seconds"]), "extract_mb": extract["size"] / 1e6, "confirm": confirmed,
            "stage": float(steps["stage"]["seconds"]), "checks": float(steps["checks"]["seconds"]), "total": total,
            "live": live, "cutover": sum(float(steps[s]["seconds"]) for s in ("fence", "swap", "reopen", "verify")),
            "reached": point["reached"], "segments": point["wal_segments"], "base_backup": point["base_backup"]}


def compare(stack: LocalStack, registry: Registry, base: BaseBackup, target: datetime, runs: int) -> None:
    peers: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    for run in range(1, runs + 1):
        # Alternate who goes first: the second reads a base backup and segments the page cache already holds.
        order = ("peer", "ours") if run % 2 else ("ours", "peer")
        for side in order:
            if side == "peer":
                peers.append(run_peer(stack, base, target))
            else:
                ours.append(run_ours(registry, target))
        p, o = peers[-1], ours[-1]
        print(f"run {run} ({' first, '.join(order)} second; {load()}):", flush=True)
        print(f"  peer: restore {p['restore']:.2f} s + replay {p['replay']:.2f} s ({p['segments']} segments) = "
              f"{p['total']:.2f} s; stopped at {p['reached']}")
        print(f"  ours: request {o['request']:.2f} s; rewind {o['rewind']:.2f} s (restore {o['restore']:.2f} + replay "
              f"{o['replay']:.2f} + extract {o['extract']:.2f} s for {o['extract_mb']:.1f} MB + rest "
              f"{o['rewind'] - o['restore'] - o['replay'] - o['extract']:.2f}); confirm {o['confirm']:.2f} s; "
              f"stage {o['stage']:.2f} s; checks {o['checks']:.2f} s; ready to approve {o['total']:.2f} s; cutover "
              f"{o['cutover']:.2f} s; live {o['live']:.2f} s; stopped at "
              f"{o['reached']}", flush=True)
    peer = statistics.median(p["total"] for p in peers)
    rewind = statistics.median(o["request"] + o["rewind"] for o in ours)
    total = statistics.median(o["total"] for o in ours)
    extra = statistics.median(o["request"] + o["rewind"] - o["restore"] - o["replay"] for o in ours)
    print(f"\nsame target {target.isoformat()}, base backup {base.backup_id}; median of {runs} run(s):")
    print(f"peer (bare barman-cloud-restore + replay of the whole server, until promoted): {peer:.2f} s")
    print(f"ours, request + rewind (one tenant taken out of the rewound server as a cataloged extract): "
          f"{rewind:.2f} s = {rewind / peer:.2f}x the peer")
    print(f"ours, request -> ready to approve (+ confirm, stage beside live, checks): {total:.2f} s = "
          f"{total / peer:.2f}x the peer")
    live = statistics.median(o["live"] for o in ours)
    print(f"ours, request -> live (approval taken as instant; + fence, swap, reopen, verify): {live:.2f} s = "
          f"{live / peer:.2f}x the peer")
    print(f"the rewind's extra over its own restore + replay: {extra:.2f} s (archive listing and request check, "
          f"forced WAL switch + wait for its archiving, pg_dump of the tenant + upload + manifest + catalog, copy "
          f"removal); restore + replay themselves are the peer's work")


def attribute(registry: Registry) -> None:
    """Two parts of the rewind's extra, each timed once on its own (the step does not split its own time)."""
    from continuity.pitr import service as pitr

    t = time.monotonic()
    pitr.force_archive(registry, SERVER)
    shipped = time.monotonic() - t
    t = time.monotonic()
    pitr.facts(registry, SERVER)
    listed = time.monotonic() - t
    print(f"  of which, timed apart once: forced WAL switch until archived {shipped:.2f} s; archive listing "
          f"(barman-cloud-backup-list + the wal container) {listed:.2f} s, done at request time and again in the "
          f"rewind")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="pgbench write load duration")
    parser.add_argument("--clients", type=int, default=4, help="pgbench clients")
    parser.add_argument("--pgbench-scale", type=int, default=5, help="pgbench -i scale (the server's other data)")
    parser.add_argument("--scale", type=int, default=2, help="demo scale of the recovered tenant")
    parser.add_argument("--runs", type=int, default=1, help="peer/ours pairs, alternating who goes first")
    parser.add_argument("--probe-interval", type=float, default=0.5, help="seconds between probe commits")
    parser.add_argument("--port-base", type=int, default=31900)
    args = parser.parse_args()

    env = bench_env(args.port_base)
    saved = {key: os.environ.get(key) for key in (*env, "CONTINUITY_TENANTS_FILE")}
    os.environ.update(env)  # `python -m bench` runs the next benchmark in this process: restored at the end
    stack = LocalStack(LocalStackSettings.from_env())
    stack.down()  # a stack left by an interrupted run of this bench
    stack.delete_files()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tenants_file = Path(tmp) / "tenants.yaml"
            os.environ["CONTINUITY_TENANTS_FILE"] = str(tenants_file)
            registry = write_registry(tenants_file, {TENANT: DB})
            t0 = time.monotonic()
            stack.up_clusters()
            stack.up_azurite()
            stack.ensure_containers()
            archive_timeout = int(settings.get("CONTINUITY_ARCHIVE_TIMEOUT_SECONDS"))
            print(f"bench stack up in {time.monotonic() - t0:.1f}s under {stack.base}; archive "
                  f"{stack.archive_name()} (gzip), archive_timeout {archive_timeout}s; {load()}", flush=True)
            run(stack, registry, args, archive_timeout)
    finally:
        for name in stack.rewound_copies():  # a rewound copy never outlives the bench, whatever failed
            stack.remove_rewound(name)
        stack.down()
        stack.delete_files()
        restore_env(saved)


def run(stack: LocalStack, registry: Registry, args: argparse.Namespace, archive_timeout: int) -> None:
    from continuity.pitr import service as pitr

    t = time.monotonic()
    seeded = seed_demo(registry, TENANT, args.scale)
    init_pgbench(stack, args.pgbench_scale)
    print(f"seeded {TENANT} at scale {args.scale} ({seeded['rows']:,} rows, {seeded['database_bytes'] / 1e6:.1f} MB) "
          f"and pgbench at scale {args.pgbench_scale} in {time.monotonic() - t:.1f}s", flush=True)
    try:
        t = time.monotonic()
        taken = pitr.take_base_backup(registry, SERVER)
        print(f"base backup {taken['base_backup']} in {time.monotonic() - t:.1f}s", flush=True)
        lag = measure_archive_lag(stack, args.seconds, args.clients, args.probe_interval,
                                  tail_timeout=archive_timeout + 300)
        report_lag(lag, archive_timeout)
        target = lag.target
        base = choose_base_backup(pitr.facts(registry, SERVER).backups, target)
        if base is None:
            raise RuntimeError(f"no base backup ended before {target.isoformat()}")
        print(f"\ntarget {target.isoformat()} (the last probe committed under load), base backup {base.backup_id} "
              f"({base.size / 1e6:.0f} MB cluster)", flush=True)
        compare(stack, registry, base, target, args.runs)
        attribute(registry)
    finally:
        with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
            conn.execute(f"drop database if exists {PGBENCH_DB} with (force)")


if __name__ == "__main__":
    main()
