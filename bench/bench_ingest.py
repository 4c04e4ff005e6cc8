"""Catalog ingest per backup: the devhost's BlobCreated path against ``ingest_blob`` called in-process.

    .venv/bin/python bench/bench_ingest.py [--backups 60] [--port-base 63300] [--load 0] [--timeout 600]
                                           [--e2e-start] [--keep-files]

Brings up a throwaway stack of its own (four clusters and Azurite under ``.local/bench-ingest-<port base>``,
ports from ``--port-base``; a devhost on port base + 20 with that stack as its local dir), so neither a
developer's ``make run`` stack and devhost nor a running test session is touched. Synthetic backups for the
three demo tenants (a small db.dump, then a valid manifest, as a backup job writes them) are ingested:

1. **peer** — uploaded first, then ``open_catalog(...).ingest_blob(manifest)`` one backup at a time, no host
   (the catalog opened once); and the same with the catalog opened anew for every backup, as each
   ``ingest_backup_blob`` activity does (``catalog.service.ingest``: migrate check, registry, clients).
2. **devhost** — function_app.py on the devhost, as tests/e2e/test_retention_e2e.py runs it: the backups are
   uploaded to a watched container (8 threads, as the test does) → the blob watcher emits
   ``Microsoft.Storage.BlobCreated`` → ``catalog_blob_created`` → ``catalog_ingest`` → activity → catalog
   row. Timed from the first upload until the catalog holds every backup as ``available`` (polled). The
   uploads wait for the watcher's first listing (its baseline); ``--e2e-start`` uploads as soon as the host
   answers ping, as the test does. A pass that makes no progress for 45 s with nothing running is reported
   as stalled (blobs that never got an event are counted).
3. with ``--load N``, the devhost pass again while N processes burn CPU.

Each devhost pass runs on a control database, containers and task hub of its own. After each pass the
event log (``<stack>/devhost/events.jsonl``), the task hub, the catalog and the devhost log are read for
retries, failed or dead-lettered deliveries, duplicate BlobCreated events, failed activities and timers
that fired, and the progress is split into quarters to show whether per-backup time grows with the
backlog. The stack is torn down at the end (``--keep-files`` keeps its files to inspect). Not part of
``make test``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import restore_env, stack_env  # noqa: E402
from continuity.adapters.local.local_stack import LocalStack  # noqa: E402
from continuity.adapters.postgres.connection import ensure_database  # noqa: E402
from continuity.adapters.postgres.control_db import prepare  # noqa: E402
from continuity.adapters.storage.blob_store import BlobStore  # noqa: E402
from continuity.backups.rules import build_manifest  # noqa: E402
from continuity.catalog.manifest import Attachments, Ledger, Source  # noqa: E402
from continuity.catalog.service import open_catalog  # noqa: E402
from continuity.kernel.settings import LocalStackSettings  # noqa: E402
from devhost import process  # noqa: E402

TENANTS = ("acme-finance", "globex", "initech")  # in config/tenants.yaml, which both paths read
POLL_SECONDS = 0.2
UPLOAD_THREADS = 8


def bench_env(port_base: int) -> dict[str, str]:
    return stack_env("ingest", port_base, CONTINUITY_TENANTS_FILE="config/tenants.yaml")


def make_manifest(tenant: str, backup_id: str, dump: bytes) -> bytes:
    """A valid manifest describing ``dump``, built by the product's own builder (as a backup job writes it)."""
    created = datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    manifest = build_manifest(
        tenant=tenant, backup_id=backup_id, created_at=created, completed_at=created + timedelta(seconds=42),
        source=Source(server="weu-primary", region="westeurope", database="odoo_acme", pg_version="16.4"),
        dump_sha256=hashlib.sha256(dump).hexdigest(), dump_size=len(dump),
        row_counts={"account_move": 10, "account_move_line": 40},
        ledger=Ledger(fingerprint="ab" * 32, posted_moves=10, posted_lines=40, debit_total="100.00",
                      credit_total="100.00"),
        attachments=Attachments(container="attachments", prefix=f"{tenant}/", count=0, bytes=0))
    return manifest.model_dump_json(indent=2).encode()


def backup_jobs(count: int) -> list[tuple[str, datetime]]:
    """``count`` backups spread over the tenants, one a day per tenant at 01:00 UTC going back from today."""
    today = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    return [(TENANTS[n % len(TENANTS)], today - timedelta(days=n // len(TENANTS))) for n in range(count)]


def put(blobs: BlobStore, container: str, tenant: str, created: datetime) -> tuple[str, float]:
    """One backup as the e2e test's ``_put`` writes it: db.dump, then manifest.json. Returns (manifest, time)."""
    backup_id = f"{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    prefix = f"{tenant}/{created:%Y/%m/%d}/{backup_id}/"
    dump = b"PGDMP" + uuid.uuid4().bytes * 16
    blobs.upload(container, prefix + "db.dump", dump)
    blobs.upload(container, prefix + "manifest.json", make_manifest(tenant, backup_id, dump))
    return prefix + "manifest.json", time.time()


def upload_all(blobs: BlobStore, container: str, count: int, threads: int) -> list[tuple[str, float]]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda job: put(blobs, container, *job), backup_jobs(count)))


def fresh_database(stack: LocalStack, name: str) -> str:
    with psycopg.connect(stack.dsn("control"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")
    ensure_database(stack.dsn("control"), name)
    return prepare(stack.dsn("control", name))


def available(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from catalog.backups where status = 'available'").fetchone()
    return int(row[0]) if row else 0


def unfinished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from taskhub.instances where name = 'catalog_ingest' "
                       "and status in ('Pending', 'Running')").fetchone()
    return int(row[0]) if row else 0


# ---- the peer: in-process ingest ---------------------------------------------------------------------
def run_peer(stack: LocalStack, blobs: BlobStore, count: int, *, reopen: bool) -> dict[str, Any]:
    tag = "reopen" if reopen else "inproc"
    backups, evidence = f"{tag}-backups", f"{tag}-evidence"
    blobs.ensure_containers([backups, evidence])
    dsn = fresh_database(stack, f"bench_ingest_{tag}")
    started = time.monotonic()
    manifests = [name for name, _ in upload_all(blobs, backups, count, UPLOAD_THREADS)]
    uploaded = time.monotonic() - started
    actions: Counter[str] = Counter()
    each: list[float] = []
    service = None if reopen else open_catalog(dsn, blobs, backup_container=backups, evidence_container=evidence,
                                               actor="bench")
    started = time.monotonic()
    for name in manifests:
        t0 = time.monotonic()
        catalog = service or open_catalog(dsn, None, backup_container=backups, evidence_container=evidence,
                                          actor="bench")
        actions[str(catalog.ingest_blob(name, event_id=str(uuid.uuid4())).action)] += 1
        each.append(time.monotonic() - t0)
    wall = time.monotonic() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = available(conn)
    if done != count:
        raise RuntimeError(f"in-process ingest ({tag}) cataloged {done} of {count}: {dict(actions)}")
    return {"wall": wall, "upload": uploaded, "each": each, "actions": dict(actions)}


# ---- the devhost path ----------------------------------------------------------------------------
def burn(stop: Any) -> None:
    """A busy worker for --load: spins until told to stop."""
    while not stop.is_set():
        total = 0
        for i in range(200_000):
            total += i * i


def wait_for(predicate: Any, timeout: float, what: str, interval: float = POLL_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s")


def watcher_has_baseline(devhost_dir: Path, container: str) -> bool:
    try:
        state = json.loads((devhost_dir / "blobwatch.json").read_text())
    except (OSError, ValueError):
        return False
    return container in state.get("containers", {})


def watch_baseline(devhost_dir: Path, container: str, since: float, out: dict[str, Any]) -> None:
    """Background: note when the blob watcher's baseline of ``container`` appears (seconds after ``since``)."""
    try:
        wait_for(lambda: watcher_has_baseline(devhost_dir, container), 60, "baseline", interval=0.01)
        out["baseline_after_ping"] = time.monotonic() - since
    except TimeoutError:
        out["baseline_after_ping"] = None


def run_devhost(stack: LocalStack, blobs: BlobStore, count: int, tag: str, port: int, load: int,
                timeout: float, *, e2e_start: bool = False, stall: float = 45.0) -> dict[str, Any]:
    backups, evidence = f"{tag}-backups", f"{tag}-evidence"
    blobs.ensure_containers([backups, evidence])
    dsn = fresh_database(stack, f"bench_ingest_{tag.replace('-', '_')}")
    devhost_dir = stack.base / "devhost"
    env = {
        **bench_env(stack.settings.azurite_blob_port),
        "CONTINUITY_CONTROL_DSN": dsn, "CONTINUITY_BACKUP_CONTAINER": backups,
        "CONTINUITY_EVIDENCE_CONTAINER": evidence,
        "CONTINUITY_DEVHOST_WATCHED_CONTAINERS": backups, "CONTINUITY_DEVHOST_BLOB_POLL_SECONDS": "1",
        "CONTINUITY_DEVHOST_SUBSCRIPTIONS": json.dumps([{
            "name": f"{tag}-created", "source": "storage", "function": "catalog_blob_created",
            "includedEventTypes": ["Microsoft.Storage.BlobCreated"],
            "subjectBeginsWith": f"/blobServices/default/containers/{backups}/"}]),
    }
    events_log, host_log = devhost_dir / "events.jsonl", devhost_dir / "devhost.log"
    offsets = {p: (p.stat().st_size if p.exists() else 0) for p in (events_log, host_log)}
    burners: list[Any] = []
    stop_burners = multiprocessing.Event()
    for _ in range(load):  # busy before the devhost starts, as in a loaded test session
        proc = multiprocessing.Process(target=burn, args=(stop_burners,), daemon=True)
        proc.start()
        burners.append(proc)
    result: dict[str, Any] = {"container": backups}
    t0 = time.monotonic()
    try:
        process.start(app="function_app:app", port=port, env=env, timeout=90)
        answered = time.monotonic()
        result["devhost_start"] = answered - t0
        # The watcher's first listing is a baseline: blobs already there get no BlobCreated event, ever (only
        # the reconcile timer catalogs them). By default wait for it; --e2e-start uploads at once, as the test.
        baseline = threading.Thread(target=watch_baseline, args=(devhost_dir, backups, answered, result),
                                    daemon=True)
        baseline.start()
        if not e2e_start:
            baseline.join()
            if result.get("baseline_after_ping") is None:
                raise TimeoutError("the blob watcher took no baseline of the container within 60 s")
        progress: list[tuple[float, int]] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            started_wall, started = time.time(), time.monotonic()
            uploads = upload_all(blobs, backups, count, UPLOAD_THREADS)
            result["upload"] = time.monotonic() - started
            deadline = started + timeout
            while True:
                done = available(conn)
                now = time.monotonic()
                if not progress or progress[-1][1] != done:
                    progress.append((now - started, done))
                if done >= count:
                    break
                if now > deadline:
                    result["timeout"] = f"only {done} of {count} cataloged after {timeout:.0f}s"
                    break
                if now - started - progress[-1][0] > stall and unfinished(conn) == 0:
                    result["timeout"] = (f"stalled: {done} of {count} cataloged, nothing changed for {stall:.0f}s "
                                         f"and no catalog_ingest orchestration running")
                    break
                time.sleep(POLL_SECONDS)
            result["wall"] = time.monotonic() - started
            result["progress"] = progress
            # The rest of the path (duplicate events' orchestrations, the publish activity) keeps the host busy
            # after the last row is available: wait until every catalog_ingest orchestration has ended.
            if "timeout" not in result:
                try:
                    wait_for(lambda: unfinished(conn) == 0, max(60.0, timeout - result["wall"]),
                             "every catalog_ingest orchestration ended")
                    result["drained"] = time.monotonic() - started
                except TimeoutError:
                    result["drained"] = None
            baseline.join(timeout=1)
            result.update(diagnose_catalog(conn, uploads, started_wall))
    finally:
        stop_burners.set()
        for proc in burners:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        process.stop(env=env)
    result.update(diagnose_logs(events_log, host_log, offsets, backups))
    result["blobs"] = 2 * count
    return result


def _pcts(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"p50 {statistics.median(ordered):.2f}s p95 {p95:.2f}s max {ordered[-1]:.2f}s"


def diagnose_catalog(conn: psycopg.Connection[Any], uploads: list[tuple[str, float]],
                     started_wall: float) -> dict[str, Any]:
    """Catalog and task hub state after a devhost pass: latencies, orchestrations, failed activities."""
    uploaded_at = {name.rsplit("/", 1)[0] + "/": at for name, at in uploads}
    rows = conn.execute("select prefix, status, extract(epoch from updated_at)::float8 from catalog.backups").fetchall()
    statuses = Counter(str(r[1]) for r in rows)
    latency = [float(r[2]) - uploaded_at[r[0]] for r in rows if r[1] == "available" and r[0] in uploaded_at]
    rejections = conn.execute("select code, count(*) from catalog.rejections group by code").fetchall()
    instances = conn.execute(
        "select name, status, count(*), "
        "       percentile_cont(0.5) within group (order by extract(epoch from completed_at - created_at)::float8), "
        "       max(extract(epoch from completed_at - created_at)::float8), "
        "       min(extract(epoch from created_at))::float8, max(extract(epoch from created_at))::float8 "
        "from taskhub.instances group by name, status order by name, status").fetchall()
    actions: Counter[str] = Counter()
    for (custom,) in conn.execute("select custom_status from taskhub.instances where name = 'catalog_ingest'"):
        try:
            value = json.loads(custom) if custom else {}
            while isinstance(value, str):
                value = json.loads(value)
        except ValueError:
            value = {}
        actions[str(value.get("action")) if isinstance(value, dict) else "?"] += 1
    failed_tasks = conn.execute(
        "select count(*) from taskhub.history where (event::jsonb->>'EventType')::int = 6").fetchone()
    per_instance = conn.execute(
        "select input, extract(epoch from created_at)::float8, extract(epoch from completed_at)::float8 "
        "from taskhub.instances where name = 'catalog_ingest'").fetchall()
    # BlobCreated → orchestration created (watcher + delivery), and created → completed (engine + activity).
    to_created, to_completed = [], []
    for raw, created, completed in per_instance:
        try:
            payload = json.loads(raw or "{}")
            while isinstance(payload, str):  # the input may be stored JSON-encoded twice
                payload = json.loads(payload)
        except ValueError:
            continue
        prefix = str(payload.get("blob", "")).rsplit("/", 1)[0] + "/" if isinstance(payload, dict) else ""
        if prefix in uploaded_at and created is not None:
            to_created.append(float(created) - uploaded_at[prefix])
            if completed is not None:
                to_completed.append(float(completed) - float(created))
    return {
        "statuses": dict(statuses), "latency": latency, "rejections": {str(c): int(n) for c, n in rejections},
        "instances": [(str(n), str(s), int(c), p50, mx, (first or started_wall) - started_wall,
                       (last or started_wall) - started_wall) for n, s, c, p50, mx, first, last in instances],
        "failed_tasks": int(failed_tasks[0]) if failed_tasks else 0, "actions": dict(actions),
        "to_created": to_created, "to_completed": to_completed,
    }


def _read_from(path: Path, offset: int) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace").splitlines()


def diagnose_logs(events_log: Path, host_log: Path, offsets: dict[Path, int], container: str) -> dict[str, Any]:
    """The pass's part of events.jsonl (deliveries, retries, duplicates) and of the devhost log."""
    outcomes: Counter[str] = Counter()
    per_blob: Counter[str] = Counter()
    retried, errors = 0, Counter[str]()
    for line in _read_from(events_log, offsets[events_log]):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        outcome = str(entry.get("outcome"))
        outcomes[f"{entry.get('source')}:{outcome}"] += 1
        if int(entry.get("attempt") or 0) > 1:
            retried += 1
        if entry.get("error"):
            errors[str(entry["error"])[:160]] += 1
        event = entry.get("event") or {}
        subject = str(event.get("subject", ""))
        if (entry.get("source") == "storage" and outcome == "delivered"
                and subject.startswith(f"/blobServices/default/containers/{container}/")):
            per_blob[subject] += 1
    levels: Counter[str] = Counter()
    timers: list[str] = []
    problems: Counter[str] = Counter()
    for line in _read_from(host_log, offsets[host_log]):
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                problems[line.strip()[:160]] += 1
            continue
        level = str(entry.get("level") or entry.get("levelname") or entry.get("severity") or "?")
        levels[level] += 1
        message = str(entry.get("message") or entry.get("msg") or entry.get("body") or "")
        if message.startswith("timer ") and " fires" in message:
            timers.append(message)
        if level.upper() in ("WARNING", "ERROR", "CRITICAL"):
            problems[message[:160]] += 1
    return {"outcomes": dict(outcomes), "retried": retried, "delivery_errors": dict(errors.most_common(3)),
            "events_per_blob": Counter(per_blob.values()), "blobs_with_event": len(per_blob),
            "log_levels": dict(levels), "timers": timers,
            "log_problems": dict(problems.most_common(5))}


# ---- report ----------------------------------------------------------------------------------------
def quarters(progress: list[tuple[float, int]], count: int) -> str:
    """Seconds per backup in each quarter of the backups, in the order they were cataloged."""
    marks = [(0.0, 0)]
    for q in (1, 2, 3, 4):
        target = q * count // 4
        hit = next(((t, n) for t, n in progress if n >= target), None)
        if hit is None:
            break
        marks.append((hit[0], target))
    parts = [f"{(t1 - t0) / max(1, n1 - n0):.2f}" for (t0, n0), (t1, n1) in zip(marks, marks[1:], strict=False)]
    return " / ".join(parts)


def print_devhost(label: str, r: dict[str, Any], count: int) -> None:
    ended = (f"** {r['timeout']} ** after {r['wall']:.1f}s" if "timeout" in r
             else f"all cataloged after {r['wall']:.1f}s")
    print(f"\n[{label}] devhost start {r['devhost_start']:.1f}s, upload of {count} backups "
          f"({2 * count} blobs, {UPLOAD_THREADS} threads) {r['upload']:.2f}s, {ended}")
    after = r.get("baseline_after_ping")
    print(f"  blob watcher baseline of {r['container']} taken "
          f"{f'{after:.2f}s' if after is not None else 'NOT within 60s'} after the devhost answered ping; "
          f"blobs that got a BlobCreated event: {r['blobs_with_event']} of {r['blobs']}")
    drained = r.get("drained")
    if "drained" in r:
        print(f"  every catalog_ingest orchestration ended after "
              f"{f'{drained:.1f}s' if drained is not None else 'NOT within the timeout'}")
    print(f"  s/backup by quarter of the backups (first..last): {quarters(r['progress'], count)}")
    print(f"  upload -> row available: {_pcts(r['latency'])}")
    print(f"  upload -> catalog_ingest created (watcher + delivery): {_pcts(r['to_created'])}; "
          f"created -> completed (engine + activities): {_pcts(r['to_completed'])}")
    print(f"  catalog statuses {r['statuses']}, rejections {r['rejections'] or 'none'}")
    for name, status, n, p50, mx, first, last in r["instances"]:
        run = f"; run p50 {p50:.2f}s max {mx:.2f}s" if p50 is not None else ""
        print(f"  orchestrations {name} {status}: {n} (created {first:.1f}..{last:.1f}s after the first upload"
              f"{run})")
    print(f"  catalog_ingest outcomes (custom status): {r['actions']}; failed activity attempts (TaskFailed in "
          f"history): {r['failed_tasks']}")
    per_blob = ", ".join(f"{k} event(s): {v} blob(s)" for k, v in sorted(r["events_per_blob"].items()))
    print(f"  events.jsonl: {r['outcomes']}, retried attempts {r['retried']}; BlobCreated per blob: {per_blob}")
    if r["delivery_errors"]:
        print(f"  delivery errors: {r['delivery_errors']}")
    print(f"  devhost log levels {r['log_levels']}; timers fired: {r['timers'] or 'none'}")
    if r["log_problems"]:
        print(f"  devhost log warnings/errors: {r['log_problems']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=60)
    parser.add_argument("--port-base", type=int, default=63300)
    parser.add_argument("--load", type=int, default=0, help="busy CPU processes during a second devhost pass")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a devhost pass may take")
    parser.add_argument("--e2e-start", action="store_true",
                        help="upload as soon as the devhost answers ping, as test_retention_e2e.py does, instead of "
                             "waiting for the blob watcher's baseline")
    parser.add_argument("--keep-files", action="store_true",
                        help="stop the stack but keep its files (devhost/events.jsonl, devhost.log) to inspect")
    args = parser.parse_args()
    total_started = time.monotonic()

    env = bench_env(args.port_base)
    saved = {key: os.environ.get(key) for key in env}  # `python -m bench` runs the next benchmark in this process
    os.environ.update(env)  # this process reads the bench stack too: BlobStore(), control_dsn(), keys
    stack = LocalStack(LocalStackSettings.from_env())
    port = stack.settings.devhost_port
    process.stop(env=env)  # a devhost left by an interrupted run of this bench, by its own pidfile
    stack.down()
    stack.delete_files()
    try:
        t0 = time.monotonic()
        stack.up_clusters()
        stack.up_azurite()
        stack.ensure_containers()
        print(f"bench stack up in {time.monotonic() - t0:.1f}s under {stack.base} "
              f"(Azurite {args.port_base}, control {stack.settings.control_port}, devhost {port}); "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        blobs = BlobStore(stack.settings.azurite_connection_string)

        peer = run_peer(stack, blobs, args.backups, reopen=False)
        print(f"in-process ingest_blob (catalog kept): {args.backups} in {peer['wall']:.2f}s = "
              f"{peer['wall'] / args.backups:.3f} s/backup (per call {_pcts(peer['each'])}) {peer['actions']}",
              flush=True)
        reopened = run_peer(stack, blobs, args.backups, reopen=True)
        print(f"in-process ingest_blob (catalog reopened per backup, as the activity does): {args.backups} in "
              f"{reopened['wall']:.2f}s = {reopened['wall'] / args.backups:.3f} s/backup", flush=True)

        passes: list[tuple[str, dict[str, Any]]] = []
        host = run_devhost(stack, blobs, args.backups, "devhost", port, 0, args.timeout, e2e_start=args.e2e_start)
        passes.append(("devhost BlobCreated path", host))
        print_devhost("devhost", host, args.backups)
        if args.load > 0:
            loaded = run_devhost(stack, blobs, args.backups, "devhost-load", port, args.load, args.timeout,
                                 e2e_start=args.e2e_start)
            passes.append((f"devhost BlobCreated path, {args.load} busy procs", loaded))
            print_devhost(f"devhost under --load {args.load}", loaded, args.backups)

        base = peer["wall"] / args.backups
        print(f"\n{'path':<58} {'backups':>7} {'wall s':>8} {'s/backup':>9} {'backups/s':>9} {'x peer':>7}")
        rows = [("in-process ingest_blob, catalog kept (peer)", peer),
                ("in-process ingest_blob, catalog reopened per backup", reopened), *passes]
        for label, r in rows:
            label = f"{label} (INCOMPLETE)" if "timeout" in r else label
            per = r["wall"] / args.backups
            print(f"{label:<58} {args.backups:>7} {r['wall']:>8.2f} {per:>9.3f} {args.backups / r['wall']:>9.2f} "
                  f"{per / base:>7.1f}")
        print(f"total wall time {time.monotonic() - total_started:.1f}s; load average now "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if any("timeout" in r for _, r in passes):
            raise SystemExit(1)
    finally:
        process.stop(env=env)
        stack.down()
        if args.keep_files:
            print(f"stack stopped; files kept under {stack.base}")
        else:
            stack.delete_files()
        restore_env(saved)


if __name__ == "__main__":
    main()
