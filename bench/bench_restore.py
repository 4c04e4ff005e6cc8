"""Full restore validation against a plain ``pg_restore -j2`` of the same dump into a default-configured cluster.

    .venv/bin/python bench/bench_restore.py [--scale 1500] [--jobs 2] [--sample-rate 1.0] [--keep]

1. Seeds a bench tenant with the demo generator at ``--scale`` (scale 1500 gives a dump of about 1 GB;
   smaller scales run in seconds) and takes a real backup of it (``pg_dump -Fc`` to blob storage + manifest).
2. Peer: a fresh cluster made by ``initdb`` with default settings (fsync on, full_page_writes on,
   autovacuum on), and ``pg_restore -j2 --no-owner`` of the dump, already on local disk, into an empty
   database. Only the pg_restore is timed.
3. Ours: :func:`continuity.validation.service.validate` end to end: stream the dump from storage while
   hashing it, ``pg_restore --list``, restore into a scratch database of the sandbox (tuned for
   throwaway restores), every check (row counts, ledger, numbering, attachments, amcheck, assertions),
   and the drop.
4. Prints both times and the ratio ours / peer (goal < 1.0: proving a backup costs less than a plain
   restore would on an untuned server).

Uses the configured local stack (brought up if needed). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.connection import ensure_database, libpq_env
from continuity.adapters.postgres.demo_seed import seed_tenant
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.tools import pgbin
from continuity.adapters.tools.backup_taker import take_backup
from continuity.adapters.tools.restore_runner import download_with_hash
from continuity.kernel.tenants import load_registry
from continuity.validation.service import validate
from continuity.validation.wiring import local_ports

TENANT = "bench-restore"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registry_file(directory: Path) -> Path:
    path = directory / "tenants.yaml"
    path.write_text(yaml.safe_dump({
        "tiers": {"gold": {"rto_minutes": 240, "rpo_minutes": 1440}},
        "servers": {"weu-primary": {"kind": "local-cluster", "cluster": "primary", "region": "westeurope"}},
        "tenants": [{"id": TENANT, "name": "Restore bench", "tier": "gold", "server": "weu-primary",
                     "database": "odoo_bench_restore", "primary_region": "westeurope",
                     "secondary_region": "northeurope",
                     "assertions": [{"name": "has-companies", "sql": "select count(*) > 0 from res_company"}]}],
    }))
    return path


def default_cluster(stack: LocalStack, base: Path) -> LocalStack:
    """A cluster with PostgreSQL's default settings (the 'control' profile adds only a cluster name)."""
    settings = dataclasses.replace(stack.settings, base_dir=base, control_port=free_port())
    peer = LocalStack(settings)
    peer.pg_root.mkdir(parents=True, exist_ok=True)
    peer._chown(base)
    peer._chown(peer.pg_root)
    peer.socket_dir.mkdir(parents=True, exist_ok=True)
    peer._chown(peer.socket_dir)
    peer._write_pgpass()
    peer._initdb("control")
    peer._start("control")
    return peer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1500, help="demo scale (1500 ≈ 1 GB dump)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sample-rate", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true", help="keep the peer cluster's files")
    args = parser.parse_args()

    stack = LocalStack()
    stack.up_clusters()
    stack.up_azurite()
    blobs = BlobStore()
    blobs.ensure_containers(["backups", "attachments", "evidence"])
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        registry = load_registry(registry_file(Path(tmp)))
        tenant = registry.get_tenant(TENANT)
        started = time.monotonic()
        seeded = seed_tenant(registry, tenant, args.scale, force=True, store=blobs)
        print(f"seeded scale {args.scale}: {seeded.to_json()} in {time.monotonic() - started:.1f}s", flush=True)
        backup = take_backup(registry, TENANT, store=blobs, deadline_seconds=7200)
        print(f"backup {backup.backup_id}: dump {backup.size / 1e6:.1f} MB in {backup.seconds:.1f}s", flush=True)

        # Peer: plain pg_restore -j2 into a default-configured cluster, from a local file.
        peer_base = stack.base / "bench-default"
        peer = default_cluster(stack, peer_base)
        local = download_with_hash(blobs.iter_chunks("backups", backup.dump))
        try:
            ensure_database(peer.dsn("control"), "peer_restore")
            t0 = time.monotonic()
            subprocess.run([pgbin.tool("pg_restore"), f"-j{args.jobs}", "--no-owner", "--no-privileges",
                            "--exit-on-error", f"--dbname={peer.dsn('control', 'peer_restore')}", str(local.path)],
                           check=True, env=libpq_env(), timeout=7200)
            peer_s = time.monotonic() - t0
        finally:
            local.path.unlink(missing_ok=True)
            peer._pg_ctl("control", "-m", "fast", "-w", "stop", check=False)
            if not args.keep:
                peer.delete_files()
        print(f"peer: pg_restore -j{args.jobs} into a default-configured cluster: {peer_s:.2f}s", flush=True)

        # Ours: the whole validation, from blob storage to the dropped scratch database.
        ports = local_ports(registry, blobs=blobs)
        t0 = time.monotonic()
        report = validate(ports, TENANT, backup.backup_id, sample_rate=args.sample_rate, jobs=args.jobs)
        ours_s = time.monotonic() - t0
        restore = next(c for c in report.checks if c.id == "restore_completed")
        print(f"ours: full restore validation ({len(report.checks)} checks, outcome {report.outcome}): "
              f"{ours_s:.2f}s (of which pg_restore {restore.duration_s:.2f}s)", flush=True)
        for c in report.checks:
            print(f"    {c.status!s:<12} {c.id:<24} {c.duration_s:8.2f}s")
        # The proofs that a wrong backup cannot pass (issue 14): identity (archive header, times), the tenant
        # fingerprint, and schema_present (which now includes the schema proof); their share of the ratio.
        proofs = sum(c.duration_s for c in report.checks if c.id in ("identity", "tenant_fingerprint",
                                                                    "schema_present", "archive_safe"))
        print(f"tamper-proof checks (identity, archive_safe, schema_present, tenant_fingerprint): {proofs:.2f}s "
              f"= {proofs / peer_s:.3f} of the ratio")
        print(f"ratio ours / peer = {ours_s / peer_s:.2f} (goal < 1.0)")


if __name__ == "__main__":
    main()
