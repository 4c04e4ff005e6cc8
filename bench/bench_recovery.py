"""Tenant recovery, request → approved → live again, split by step, against a bare restore over the live database.

    .venv/bin/python bench/bench_recovery.py [--scale 10] [--runs 2] [--port-base 62500]

Brings up a throwaway stack of its own (four clusters and Azurite under ``.local/bench-recovery``, ports from
``--port-base``) and the devhost running function_app.py, seeds a demo tenant at ``--scale`` (the demo
generator: ~4.45 MB on disk and ~585 kB of dump per scale unit) and a small neighbour on the same cluster,
takes a backup and validates it with the real nightly validation. Per run: corrupt the tenant (delete
posted moves), then

1. **peer** — what a hurried DBA does: ``pg_restore -j2`` of the same dump into a new database (downloaded
   once, timed from the download to the restore's end). No checks, no fence, no approval, no evidence.
2. **governed** — through the devhost: request over HTTP → stage + checks (the tenant stays live) →
   approval by a second user → fence → swap → reopen → verify → backup of the recovered state.

Prints each step's seconds from the orchestration's own timings, approval → live again, how long the tenant
was unavailable (fence start → reopen end), and the neighbour tenant's committed writes during the run
(refused or failed writes are counted too: they must be 0). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from continuity.adapters.local.identity_store import IdentityStore  # noqa: E402
from continuity.adapters.local.local_stack import LocalStack  # noqa: E402
from continuity.adapters.storage.blob_store import BlobStore  # noqa: E402
from continuity.kernel.identity import Role  # noqa: E402
from continuity.kernel.settings import LocalStackSettings  # noqa: E402
from tests.failover_support import Host, Writer  # noqa: E402
from tests.recovery_support import (  # noqa: E402
    backup_and_validate,
    delete_posted_moves,
    ledger_fingerprint,
    manifest_of,
    seed_demo,
    write_registry,
)

TENANT, NEIGHBOUR = "bench-acme", "bench-neighbour"
DB, NEIGHBOUR_DB = "odoo_bench_acme", "odoo_bench_neighbour"
STEPS = ("stage", "checks", "approval_wait", "fence", "swap", "reopen", "verify", "backup")


def make_stack(port_base: int) -> LocalStack:
    base = LocalStackSettings.from_env()
    settings = replace(base, base_dir=ROOT / ".local" / "bench-recovery", azurite_blob_port=port_base,
                       azurite_queue_port=port_base + 1, azurite_table_port=port_base + 2,
                       primary_port=port_base + 10, replica_port=port_base + 11, control_port=port_base + 12,
                       sandbox_port=port_base + 13, devhost_port=port_base + 20)
    return LocalStack(settings)


def stack_env(stack: LocalStack, tenants_file: Path) -> dict[str, str]:
    s = stack.settings
    return {"CONTINUITY_LOCAL_DIR": str(s.base_dir), "CONTINUITY_PRIMARY_PORT": str(s.primary_port),
            "CONTINUITY_REPLICA_PORT": str(s.replica_port), "CONTINUITY_CONTROL_PORT": str(s.control_port),
            "CONTINUITY_SANDBOX_PORT": str(s.sandbox_port), "CONTINUITY_DEVHOST_PORT": str(s.devhost_port),
            "CONTINUITY_AZURITE_BLOB_PORT": str(s.azurite_blob_port),
            "CONTINUITY_AZURITE_QUEUE_PORT": str(s.azurite_queue_port),
            "CONTINUITY_AZURITE_TABLE_PORT": str(s.azurite_table_port),
            "CONTINUITY_STORAGE_CONNECTION": "", "CONTINUITY_CONTROL_DSN": "",
            "CONTINUITY_TENANTS_FILE": str(tenants_file)}


def run_peer(stack: LocalStack, blobs: BlobStore, backup_id: str) -> float:
    """Download the dump and ``pg_restore -j2`` it into a new database: the unguarded minimum."""
    from continuity.adapters.tools.restore_runner import StorageBackupSource, download_with_hash, restore

    started = time.monotonic()
    source = StorageBackupSource(blobs)
    ref = source.get_backup(TENANT, backup_id)
    dump = download_with_hash(source.dump_chunks(ref))
    try:
        with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
            conn.execute("drop database if exists bench_peer_restore with (force)")
            conn.execute("create database bench_peer_restore")
        outcome = restore(dump.path, stack.dsn("primary", "bench_peer_restore"), 2, 3600)
        if outcome.returncode != 0:
            raise RuntimeError(f"peer restore failed: {outcome.errors[:3]}")
        return time.monotonic() - started
    finally:
        dump.path.unlink(missing_ok=True)
        with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
            conn.execute("drop database if exists bench_peer_restore with (force)")


def run_governed(stack: LocalStack, host: Host, manifest: dict[str, Any]) -> dict[str, Any]:
    writer = Writer(stack.dsn("primary", NEIGHBOUR_DB), table="bench_neighbour_writes")
    writer.start()
    try:
        started = time.monotonic()
        code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", "olivia", {"reason": "bench"})
        if code != 202:
            raise RuntimeError(f"request refused: {body}")
        iid = body["id"]
        pending = wait(host, iid, {"AWAITING_APPROVAL", "FAILED", "REFUSED"})
        if pending["state"] != "AWAITING_APPROVAL":
            raise RuntimeError(f"recovery stopped before approval: {pending.get('reason')}")
        to_approval = time.monotonic() - started
        code, answer = host.call("POST", f"/api/recoveries/{iid}/approve", "amir", {"comment": "bench"})
        if code != 202:
            raise RuntimeError(f"approval refused: {answer}")
        done = wait(host, iid, {"COMPLETED", "FAILED"}, timeout=3600)
        total = time.monotonic() - started
    finally:
        writer.stop()
    if done["state"] != "COMPLETED":
        raise RuntimeError(f"recovery ended {done['state']}: {done.get('reason')}")
    fingerprint = ledger_fingerprint(stack.dsn("primary", DB))[0]
    return {"timings": done["timings"], "to_approval": to_approval, "total": total,
            "ledger_matches": fingerprint == manifest["ledger"]["fingerprint"], "neighbour_writes": len(writer.acked),
            "neighbour_failed": writer.errors + writer.refused,
            "neighbour_lost": len(writer.lost_on(stack.dsn("primary", NEIGHBOUR_DB)))}


def wait(host: Host, iid: str, states: set[str], timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = host.call("GET", f"/api/recoveries/{iid}", "amir")
        if code == 200 and body.get("state") in states:
            return dict(body)
        time.sleep(0.1)
    raise TimeoutError(f"{iid} never reached {states}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="demo scale of the recovered tenant")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--port-base", type=int, default=22500)  # below the ephemeral port range
    args = parser.parse_args()

    stack = make_stack(args.port_base)
    tenants_file = Path(tempfile.mkdtemp(prefix="bench-recovery-")) / "tenants.yaml"
    registry = write_registry(tenants_file, {TENANT: DB, NEIGHBOUR: NEIGHBOUR_DB})
    saved = dict(os.environ)
    os.environ.update(stack_env(stack, tenants_file))
    host: Host | None = None
    try:
        stack.up_clusters()
        stack.up_azurite()
        stack.ensure_containers()
        blobs = BlobStore()
        t = time.monotonic()
        seeded = seed_demo(registry, TENANT, args.scale)
        seed_demo(registry, NEIGHBOUR, 1)
        print(f"seeded {TENANT} at scale {args.scale}: {seeded['rows']:,} rows, "
              f"{seeded['database_bytes'] / 1e6:.1f} MB on disk ({time.monotonic() - t:.1f}s)", flush=True)
        t = time.monotonic()
        backup_id = backup_and_validate(registry, TENANT, blobs)
        manifest = manifest_of(blobs, TENANT, backup_id)
        print(f"backup {backup_id}: {manifest['files'][0]['size'] / 1e6:.1f} MB dump, validated "
              f"({time.monotonic() - t:.1f}s)", flush=True)
        keys = {n: IdentityStore(stack.base).add_user(n, r, replace=True)
                for n, r in (("olivia", [Role.OPERATOR]), ("amir", [Role.APPROVER]))}
        host = Host(stack, keys, stack.settings.devhost_port)
        host.env.update({**stack_env(stack, tenants_file), "CONTINUITY_APPROVAL_WINDOW_MINUTES": "30"})
        host.start()
        peers: list[float] = []
        runs: list[dict[str, Any]] = []
        for run in range(1, args.runs + 1):
            delete_posted_moves(stack.dsn("primary", DB), 25)
            peers.append(run_peer(stack, blobs, backup_id))
            runs.append(run_governed(stack, host, manifest))
            r = runs[-1]
            print(f"run {run}: peer restore {peers[-1]:.2f}s; governed: request->approval {r['to_approval']:.2f}s, "
                  f"approval->live {r['timings']['approval_to_live']:.3f}s, total {r['total']:.2f}s, "
                  f"ledger matches manifest: {r['ledger_matches']}, neighbour writes {r['neighbour_writes']} "
                  f"(failed {r['neighbour_failed']}, lost {r['neighbour_lost']})", flush=True)

        print(f"\ntenant at scale {args.scale}: {seeded['rows']:,} rows, {seeded['database_bytes'] / 1e6:.1f} MB on "
              f"disk, {manifest['files'][0]['size'] / 1e6:.1f} MB dump; median of {len(runs)} run(s)")
        print(f"{'step':<28} {'median s':>9} {'max s':>8}")
        for step in (*STEPS, "approval_to_live", "tenant_unavailable"):
            values = [float(r["timings"][step]) for r in runs if r["timings"].get(step) is not None]
            if values:
                print(f"{step:<28} {statistics.median(values):>9.3f} {max(values):>8.3f}")
        peer = statistics.median(peers)
        unavailable = statistics.median(float(r["timings"]["tenant_unavailable"]) for r in runs)
        requested = statistics.median(float(r["timings"]["approval_wait"]) for r in runs)
        live_again = statistics.median(float(r["timings"]["approval_to_live"]) for r in runs)
        print(f"request -> approved {requested:.2f}s (stage + checks while the tenant stays live, then the approval); "
              f"approved -> live again {live_again:.3f}s; total {statistics.median(r['total'] for r in runs):.2f}s")
        print(f"tenant unavailable {unavailable:.3f}s vs a bare restore over live {peer:.3f}s "
              f"({peer / max(unavailable, 1e-6):.0f}x shorter)")
        print(f"neighbour tenant: {sum(r['neighbour_writes'] for r in runs)} writes committed during recoveries, "
              f"{sum(r['neighbour_failed'] for r in runs)} failed, {sum(r['neighbour_lost'] for r in runs)} lost")
    finally:
        if host is not None:
            host.stop()
        stack.down()
        stack.delete_files()
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    main()
