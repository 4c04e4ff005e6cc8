"""Full restore validation against a plain ``pg_restore -j2`` of the same dump into a default-configured cluster.

    .venv/bin/python bench/bench_restore.py [--scale 1500] [--jobs 2] [--sample-rate 1.0] [--keep] [--reuse-seed]
        [--reuse-backup]

1. Seeds a bench tenant with the demo generator at ``--scale`` (scale 1500 gives a dump of about 1 GB;
   smaller scales run in seconds) and takes a real backup of it (``pg_dump -Fc`` to blob storage + manifest).
2. Peer: a fresh cluster made by ``initdb`` with default settings (fsync on, full_page_writes on,
   autovacuum on), and ``pg_restore -j2 --no-owner`` of the dump, already on local disk, into an empty
   database. Only the pg_restore is timed.
3. The tuned restore alone: the same local file restored by the validation's own restore step
   (``restore_runner.restore``: the sandbox, tuned for throwaway restores, as the scratch database's role),
   without download or checks; then dropped.
4. Ours: :func:`continuity.validation.service.validate` end to end: stream the dump from storage while
   hashing it, ``pg_restore --list``, restore into a scratch database of the sandbox, every check (row
   counts, ledger, numbering, attachments, amcheck, assertions), and the drop. The row checks start while
   the restore goes on, as pg_restore reports their tables loaded; schema, amcheck and assertions run after.
   The download, the restore (with the row checks it carried) and the checks after it are timed as they run.
5. Prints the three times, the ratios to the plain restore, and the checks' share of the ratio (goal for
   full validation / plain restore: < 1.0, proving a backup costs less than a plain restore would on an
   untuned server).

Uses the configured local stack (brought up if needed). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import yaml

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.connection import ensure_database, libpq_env
from continuity.adapters.postgres.demo_seed import seed_tenant
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.tools import pgbin
from continuity.adapters.tools.backup_taker import take_backup
from continuity.adapters.tools.restore_runner import StorageBackupSource, download_with_hash
from continuity.kernel.tenants import load_registry
from continuity.validation.naming import scratch_database_name
from continuity.validation.service import _restore_dsn, validate
from continuity.validation.wiring import local_ports

TENANT = "bench-restore"
T = TypeVar("T")


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


def busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (``/proc/stat``: user, nice, system, irq, softirq;
    not idle, iowait, or steal, the time the hypervisor gave to others).

    Machine-wide on purpose: the restore's CPU is spent in pg_restore, its server backends and their parallel
    workers, the checks' in their backends and in this process; on a quiet machine the difference between two
    readings is the work of what ran between them.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = (fields + [0] * 7)[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1500, help="demo scale (1500 ≈ 1 GB dump)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sample-rate", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true", help="keep the peer cluster's files")
    parser.add_argument("--reuse-seed", action="store_true",
                        help="keep the bench tenant when it is already seeded at this scale (a new backup is taken)")
    parser.add_argument("--reuse-backup", action="store_true",
                        help="with --reuse-seed and an unchanged seed: validate its newest backup, take none")
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
        seeded = seed_tenant(registry, tenant, args.scale, force=not args.reuse_seed, store=blobs)
        print(f"seeded scale {args.scale}: {seeded.to_json()} in {time.monotonic() - started:.1f}s", flush=True)
        if args.reuse_backup and seeded.status == "already seeded":
            # The newest backup of the unchanged seed: the same dump a new backup would give, minutes sooner.
            source = StorageBackupSource(blobs)
            ref = source.get_backup(TENANT, source.newest_backup_id(TENANT))
            backup: Any = SimpleNamespace(backup_id=ref.backup_id, dump=ref.dump_blob,
                                          size=ref.manifest.file("db.dump").size)
            print(f"backup {backup.backup_id} (reused): dump {backup.size / 1e6:.1f} MB", flush=True)
        else:
            backup = take_backup(registry, TENANT, store=blobs, deadline_seconds=7200)
            print(f"backup {backup.backup_id}: dump {backup.size / 1e6:.1f} MB in {backup.seconds:.1f}s", flush=True)

        # Peer: plain pg_restore -j2 into a default-configured cluster, from a local file.
        peer_base = stack.base / "bench-default"
        peer = default_cluster(stack, peer_base)
        local = download_with_hash(blobs.iter_chunks("backups", backup.dump))
        try:
            ensure_database(peer.dsn("control"), "peer_restore")
            t0, c0 = time.monotonic(), busy_cpu_seconds()
            subprocess.run([pgbin.tool("pg_restore"), f"-j{args.jobs}", "--no-owner", "--no-privileges",
                            "--exit-on-error", f"--dbname={peer.dsn('control', 'peer_restore')}", str(local.path)],
                           check=True, env=libpq_env(), timeout=7200)
            peer_s, peer_cpu = time.monotonic() - t0, busy_cpu_seconds() - c0
        finally:
            local.path.unlink(missing_ok=True)
            peer._pg_ctl("control", "-m", "fast", "-w", "stop", check=False)
            if not args.keep:
                peer.delete_files()
        print(f"peer: pg_restore -j{args.jobs} into a default-configured cluster: {peer_s:.2f}s", flush=True)

        # The tuned restore alone: the validation's restore step on the same local file, nothing else.
        ports = local_ports(registry, blobs=blobs)
        local = download_with_hash(blobs.iter_chunks("backups", backup.dump))
        scratch = scratch_database_name(TENANT, datetime.now(UTC), secrets.token_hex(3))
        try:
            ports.sandbox.create_scratch_database(TENANT, name=scratch)
            t0, c0 = time.monotonic(), busy_cpu_seconds()
            outcome = ports.restore(local.path, _restore_dsn(ports.sandbox, scratch), args.jobs, 7200)
            tuned_s, tuned_cpu = time.monotonic() - t0, busy_cpu_seconds() - c0
            assert outcome.returncode == 0 and not outcome.timed_out, outcome.errors
        finally:
            local.discard()
            ports.sandbox.drop_scratch_database(scratch)
        print(f"tuned restore alone (sandbox, restore_runner.restore -j{args.jobs}): {tuned_s:.2f}s", flush=True)

        # Ours: the whole validation, from blob storage to the dropped scratch database, its phases timed.
        phases: dict[str, float] = {}

        def timed(name: str, fn: Callable[..., T]) -> Callable[..., T]:
            def run(*a: Any, **kw: Any) -> T:
                t = time.monotonic()
                try:
                    return fn(*a, **kw)
                finally:
                    phases[name] = phases.get(name, 0.0) + time.monotonic() - t
            return run

        start_during = ports.checks_during_restore
        assert start_during is not None

        def during_restore(*a: Any) -> Any:
            # The row checks still running when pg_restore is done: the wait for them is its own phase.
            during = start_during(*a)
            during.finish = timed("row checks still running after", during.finish)
            return during

        ports = dataclasses.replace(ports, download=timed("download + sha256", ports.download),
                                    list_archive=timed("pg_restore --list", ports.list_archive),
                                    restore=timed("pg_restore", ports.restore),
                                    checks_during_restore=during_restore,
                                    run_checks=timed("checks after the restore", ports.run_checks))
        t0, c0 = time.monotonic(), busy_cpu_seconds()
        report = validate(ports, TENANT, backup.backup_id, sample_rate=args.sample_rate, jobs=args.jobs)
        ours_s, ours_cpu = time.monotonic() - t0, busy_cpu_seconds() - c0
        print(f"ours: full restore validation ({len(report.checks)} checks, outcome {report.outcome}): "
              f"{ours_s:.2f}s", flush=True)
        for name, seconds in phases.items():
            print(f"    {name:<26} {seconds:8.2f}s = {seconds / peer_s:.3f} of the ratio")
        rest = ours_s - sum(phases.values())
        print(f"    {'everything else':<26} {rest:8.2f}s = {rest / peer_s:.3f} of the ratio "
              "(manifest, scratch database and role, drop)")
        for c in report.checks:
            when = "  (during the restore)" if c.data.get("during_restore") else ""
            print(f"    {c.status!s:<12} {c.id:<24} {c.duration_s:8.2f}s{when}")
        # The row checks ran while pg_restore built the indexes: what they cost is what the restore took beyond
        # the tuned restore alone (same dump, same sandbox), plus the checks that still run after it.
        during = [c.id for c in report.checks if c.data.get("during_restore")]
        overlap = phases.get("pg_restore", 0.0) - tuned_s
        print(f"row checks run during the restore: {', '.join(during) or 'none'}; the restore with them took "
              f"{overlap:+.2f}s = {overlap / peer_s:+.3f} of the ratio beyond the tuned restore alone")
        # The proofs that a wrong backup cannot pass (issue 14): identity (archive header, times), the tenant
        # fingerprint, and schema_present (which now includes the schema proof); their share of the ratio.
        proofs = sum(c.duration_s for c in report.checks if c.id in ("identity", "tenant_fingerprint",
                                                                    "schema_present", "archive_safe"))
        print(f"tamper-proof checks (identity, archive_safe, schema_present, tenant_fingerprint): {proofs:.2f}s "
              f"= {proofs / peer_s:.3f} of the ratio")
        checks_s = phases.get("checks after the restore", 0.0) + phases.get("row checks still running after", 0.0)
        print(f"plain pg_restore -j{args.jobs} (default cluster) {peer_s:.2f}s | tuned restore alone {tuned_s:.2f}s "
              f"| full validation {ours_s:.2f}s")
        # The floor no scheduling can beat: the work done, spread perfectly over every core.
        cores = os.cpu_count() or 1
        print(f"CPU-seconds (machine-wide, busy): plain {peer_cpu:.1f} | tuned restore alone {tuned_cpu:.1f} | "
              f"full validation {ours_cpu:.1f}, of which beyond the tuned restore {ours_cpu - tuned_cpu:.1f}")
        print(f"on {cores} cores the full validation cannot take less than {ours_cpu / cores:.1f}s "
              f"= {ours_cpu / cores / peer_s:.2f} of the plain restore, however its work overlaps")
        print(f"ratios to the plain restore: tuned restore alone {tuned_s / peer_s:.2f}, full validation "
              f"{ours_s / peer_s:.2f} (goal < 1.0), of which the checks {(checks_s + max(overlap, 0.0)) / peer_s:.2f} "
              f"({checks_s / peer_s:.2f} after pg_restore, {overlap / peer_s:+.2f} during it)")


if __name__ == "__main__":
    main()
