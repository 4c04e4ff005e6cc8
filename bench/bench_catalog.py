"""Catalog rebuild of 100,000 backups against a bare listing of the same container, and the tenant query at 1M rows.

    .venv/bin/python bench/bench_catalog.py [--tenants 1000] [--per-tenant 100] [--legacy 0.0] [--rows 1000000]
                                            [--sample 500] [--queries 300] [--threads 8] [--port-base 25400]

Brings up a throwaway stack of its own (clusters and Azurite under ``.local/bench-catalog-<port base>``, ports
from ``--port-base``), then:

1. Writes ``tenants x per-tenant`` synthetic backups (a 64-byte db.dump and a valid manifest each, tagged
   as a verified backup would be) into a scratch container, with a generated tenant registry. Manifests go
   through the backup job's own writer (``backup_taker.write_manifest``: the manifest's copy rides in the
   blob's metadata); a ``--legacy`` share is written without the copy, as backups taken before it were.
2. Times a bare ``list_blobs`` of that container (the peer), the listing as the rebuild lists it (tags and
   metadata), then the catalog's bulk path (:meth:`CatalogService.rebuild`: one listing, every manifest
   taken from its copy or read, validated against the JSON Schema and the model, batched COPY inserts)
   into an empty control database, and prints the ratio to the bare listing.
3. Times the per-event path (:meth:`CatalogService.ingest_blob`: lock, blob facts, manifest, streamed
   dump hash, evidence append, tags) on ``--sample`` backups: what each BlobCreated event costs.
4. Fills a second scratch database with ``--rows`` catalog rows in one ``INSERT ... SELECT
   generate_series`` and times ``list_backups`` for random tenants (first page, next page by cursor,
   status filter): p50/p95 of the API call and of the query's execution time alone.

Not part of ``make test``: it takes minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import restore_env, stack_env  # noqa: E402
from continuity.adapters.local.local_stack import LocalStack  # noqa: E402
from continuity.adapters.postgres.catalog_store import PgCatalogStore  # noqa: E402
from continuity.adapters.postgres.connection import connect, ensure_database  # noqa: E402
from continuity.adapters.storage.blob_listing import list_container  # noqa: E402
from continuity.adapters.storage.blob_store import BlobStore  # noqa: E402
from continuity.adapters.tools.backup_taker import write_manifest  # noqa: E402
from continuity.catalog.model import BackupStatus  # noqa: E402
from continuity.catalog.service import open_catalog  # noqa: E402
from continuity.kernel.settings import LocalStackSettings  # noqa: E402


def registry_file(tenants: list[str], directory: Path) -> Path:
    path = directory / "tenants.yaml"
    path.write_text(yaml.safe_dump({
        "tiers": {"gold": {"rto_minutes": 60, "rpo_minutes": 15}},
        "servers": {"weu-primary": {"kind": "local-cluster", "cluster": "primary", "region": "westeurope"}},
        "tenants": [{"id": t, "name": t, "tier": "gold", "server": "weu-primary", "database": t.replace("-", "_"),
                     "primary_region": "westeurope", "secondary_region": "northeurope"} for t in tenants],
    }))
    return path


def manifest(tenant: str, backup_id: str, created: datetime, dump: bytes) -> bytes:
    return json.dumps({
        "format": "continuity.backup-manifest/1", "tenant": tenant, "backup_id": backup_id, "kind": "full",
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "completed_at": (created + timedelta(seconds=30)).isoformat().replace("+00:00", "Z"),
        "source": {"server": "weu-primary", "region": "westeurope", "database": tenant.replace("-", "_"),
                   "pg_version": "16.4"},
        "files": [{"name": "db.dump", "role": "database", "sha256": hashlib.sha256(dump).hexdigest(),
                   "size": len(dump)}],
        "row_counts": {"account_move": 1}, "attachments": {"container": "attachments", "prefix": f"{tenant}/",
                                                           "count": 0, "bytes": 0},
        "ledger": {"fingerprint": "0" * 64, "posted_moves": 1, "posted_lines": 2, "debit_total": "1.00",
                   "credit_total": "1.00"},
    }).encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(store: PgCatalogStore, tenants: list[str], rng: random.Random, queries: int) -> dict[str, list[float]]:
    """Milliseconds per list_backups call: first page, the next page by cursor, a status filter."""
    api: dict[str, list[float]] = {"first page": [], "next page": [], "status filter": []}
    for _ in range(queries):
        tenant = tenants[rng.randrange(len(tenants))]
        t0 = time.perf_counter()
        _, cursor = store.list_backups(tenant, limit=50)
        api["first page"].append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        store.list_backups(tenant, limit=50, cursor=cursor)
        api["next page"].append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        store.list_backups(tenant, status=BackupStatus.VALIDATED, limit=50)
        api["status filter"].append(1000 * (time.perf_counter() - t0))
    return api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--per-tenant", type=int, default=100)
    parser.add_argument("--legacy", type=float, default=0.0,
                        help="share of backups written without the manifest copy in metadata (0..1)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=500, help="backups ingested one event at a time")
    parser.add_argument("--queries", type=int, default=300, help="tenant queries per kind")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--port-base", type=int, default=25400)
    args = parser.parse_args()

    env = stack_env("catalog", args.port_base)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # `python -m bench` runs the next benchmark in this process: restored at the end
    stack = LocalStack(LocalStackSettings.from_env())
    stack.down()  # a stack left by an interrupted run of this bench
    stack.delete_files()
    try:
        t0 = time.monotonic()
        stack.up_clusters()
        stack.up_azurite()
        print(f"bench stack up in {time.monotonic() - t0:.1f}s under {stack.base}; load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        run(stack, args)
    finally:
        stack.down()
        stack.delete_files()
        restore_env(saved)


def run(stack: LocalStack, args: argparse.Namespace) -> None:
    blobs = BlobStore()
    suffix = uuid.uuid4().hex[:8]
    backups, evidence, evidence2 = f"bench-backups-{suffix}", f"bench-evidence-{suffix}", f"bench-ev2-{suffix}"
    databases = [f"bench_ingest_{suffix}", f"bench_events_{suffix}", f"bench_query_{suffix}"]
    blobs.ensure_containers([backups, evidence, evidence2])
    tenants = [f"t{i:04d}-bench" for i in range(args.tenants)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            registry = registry_file(tenants, Path(tmp))
            for db in databases:
                ensure_database(stack.dsn("control"), db)

            # ---- 1. write the backups ------------------------------------------------------
            dump = b"PGDMP" + b"\x00" * 59
            base = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)
            work = [(t, n) for t in tenants for n in range(args.per_tenant)]
            container = blobs.container(backups)
            legacy_every = round(1 / args.legacy) if args.legacy > 0 else 0

            def write(item: tuple[str, int]) -> None:
                tenant, n = item
                created = base + timedelta(days=n, seconds=hash(tenant) % 3600)
                backup_id = f"{created:%Y%m%dT%H%M%SZ}-{n:06x}"
                prefix = f"{tenant}/{created:%Y/%m/%d}/{backup_id}/"
                tags = {"tenant": tenant, "backup_id": backup_id, "kind": "full", "status": "available"}
                container.upload_blob(prefix + "db.dump", dump, overwrite=True, tags=tags)
                data = manifest(tenant, backup_id, created, dump)
                if legacy_every and n % legacy_every == 0:
                    container.upload_blob(prefix + "manifest.json", data, overwrite=True, tags=tags)
                else:
                    write_manifest(blobs, backups, prefix + "manifest.json", data, tags)

            started = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(write, work))
            legacy = sum(1 for _, n in work if legacy_every and n % legacy_every == 0)
            print(f"wrote {len(work)} backups ({2 * len(work)} blobs; {legacy} without the manifest copy in "
                  f"metadata) in {time.perf_counter() - started:.1f} s "
                  f"(store: {'Azurite' if blobs.is_azurite else 'Azure Storage'})", flush=True)

            # ---- 2. bare listing vs rebuild -------------------------------------------------
            started = time.perf_counter()
            listed = sum(1 for _ in container.list_blobs())
            raw_list = time.perf_counter() - started
            print(f"bare list_blobs (SDK, no tags or metadata): {listed} blobs in {raw_list:.2f} s", flush=True)
            started = time.perf_counter()
            fast = sum(1 for _ in list_container(blobs, backups))
            fast_list = time.perf_counter() - started
            print(f"listing as rebuild lists (tags + metadata, blob_listing.list_container): {fast} blobs in "
                  f"{fast_list:.2f} s", flush=True)

            service = open_catalog(stack.dsn("control", databases[0]), blobs, backup_container=backups,
                                   evidence_container=evidence, tenants_file=registry, actor="bench")
            started = time.perf_counter()
            report = service.rebuild(workers=args.threads)
            ingest = time.perf_counter() - started
            count = PgCatalogStore(stack.dsn("control", databases[0])).count()
            print(f"rebuild: {report.inserted} cataloged ({count} rows; manifests from metadata "
                  f"{report.manifests_from_metadata}, read blob by blob {report.manifests_read}, ingested one at a "
                  f"time {dict(report.ingested)}) in {ingest:.2f} s = {report.inserted / ingest:.0f} backups/s",
                  flush=True)
            print(f"ratio rebuild / bare listing: {ingest / raw_list:.2f}x (goal < 1.5x: "
                  f"{'met' if ingest / raw_list < 1.5 else 'NOT met'}); rebuild / its own listing "
                  f"{ingest / fast_list:.2f}x", flush=True)

            # ---- 3. per-event ingest on a sample -----------------------------------------------
            events = open_catalog(stack.dsn("control", databases[1]), blobs, backup_container=backups,
                                  evidence_container=evidence2, tenants_file=registry, actor="bench")
            names: list[str] = []
            for blob in container.list_blobs():
                if blob.name.endswith("manifest.json"):
                    names.append(blob.name)
                    if len(names) >= args.sample:
                        break
            started = time.perf_counter()
            actions: dict[str, int] = {}
            for name in names:
                outcome = events.ingest_blob(name)
                actions[str(outcome.action)] = actions.get(str(outcome.action), 0) + 1
            per_event = time.perf_counter() - started
            print(f"per-event ingest (BlobCreated path, sequential): {len(names)} in {per_event:.2f} s = "
                  f"{1000 * per_event / max(1, len(names)):.1f} ms/backup {actions}", flush=True)

            # ---- 4. tenant query at --rows ------------------------------------------------------
            qdsn = stack.dsn("control", databases[2])
            from continuity.adapters.postgres.control_db import migrate

            migrate(qdsn)
            per = max(1, args.rows // args.tenants)
            started = time.perf_counter()
            with connect(qdsn) as conn:
                conn.execute("""
                    insert into catalog.backups (tenant, backup_id, status, container, prefix, created_at,
                                                 dump_size, dump_sha256, manifest_sha256, source_server,
                                                 source_region, storage_tier)
                    select 't' || lpad((g %% %(t)s)::text, 4, '0') || '-bench',
                           to_char(ts, 'YYYYMMDD"T"HH24MISS"Z"') || '-' || lpad(to_hex(g %% 16777216), 6, '0'),
                           (array['available','validated','validated','failed_validation','deleted'])
                               [1 + (g / %(t)s) %% 5],
                           'backups', 'p/', ts, 1000 + g, md5(g::text) || md5(g::text), md5(g::text) || md5('m'),
                           'weu-primary', 'westeurope', 'Hot'
                    from generate_series(0, %(n)s - 1) g,
                         lateral (select timestamptz '2020-01-01' + (g / %(t)s) * interval '1 day'
                                         + (g %% %(t)s) * interval '1 second') s(ts)
                """, {"t": args.tenants, "n": per * args.tenants})
                conn.execute("vacuum analyze catalog.backups")
                rows = conn.execute("select count(*) from catalog.backups").fetchone()[0]  # type: ignore[index]
            print(f"generated {rows} catalog rows in {time.perf_counter() - started:.1f} s")

            rng = random.Random(7)
            for keep in (False, True):
                store = PgCatalogStore(qdsn, keep_connection=keep)
                api = measure(store, tenants, rng, args.queries)
                label = "kept connection" if keep else "connect per call"
                for kind, values in api.items():
                    print(f"list_backups {kind:<13} ({label}): p50 {statistics.median(values):.2f} ms, "
                          f"p95 {pct(values, 0.95):.2f} ms over {len(values)}")
                store.close()
            execution: list[float] = []
            with connect(qdsn) as conn:
                for _ in range(args.queries):
                    tenant = tenants[rng.randrange(args.tenants)]
                    plan = conn.execute(
                        "explain (analyze, format json) select * from catalog.backups where tenant = %s "
                        "order by created_at desc, backup_id desc limit 51", (tenant,)).fetchone()[0]  # type: ignore[index]
                    execution.append(float(plan[0]["Execution Time"]))
            print(f"tenant query execution alone: p50 {statistics.median(execution):.3f} ms, "
                  f"p95 {pct(execution, 0.95):.3f} ms over {len(execution)}")
    finally:
        for c in (backups, evidence, evidence2):
            blobs.container(c).delete_container()
        with connect(stack.dsn("control")) as conn:
            for db in databases:
                conn.execute(f"drop database if exists {db} with (force)")


if __name__ == "__main__":
    main()
