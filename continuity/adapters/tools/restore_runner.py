"""Getting a dump from blob storage into the sandbox: stream-and-hash to a temp file, list, restore.

The dump is streamed chunk by chunk to a temporary file while its sha256 is computed, so a large
dump never sits in memory and is read from storage once. ``pg_restore --jobs`` needs a seekable file,
which is why it is a file and not a pipe. Every subprocess runs under a deadline and, when it
overruns, is killed with its whole process group (``--jobs`` forks workers).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuity.adapters.postgres.connection import libpq_env
from continuity.adapters.tools import pgbin
from continuity.catalog.manifest import BACKUP_ID_RE, MANIFEST_FILE, Manifest
from continuity.kernel.errors import BackupCorrupted, BackupNotFound

logger = logging.getLogger(__name__)

# Options for a throwaway restore: nothing in the sandbox needs the production roles, grants,
# comments or publications; skipping them removes whole classes of irrelevant errors. The sandbox
# cluster itself runs with fsync/full_page_writes off and wal_level=minimal (local_stack.py).
RESTORE_OPTIONS = (
    "--no-owner", "--no-privileges", "--no-tablespaces", "--no-security-labels", "--no-publications",
    "--no-subscriptions", "--exit-on-error",
)
# Per-session settings for the restore's connections: commit without waiting for WAL flush, build
# indexes with plenty of memory, and let one index build use the other core.
RESTORE_PGOPTIONS = ("-c synchronous_commit=off -c maintenance_work_mem=512MB -c work_mem=64MB "
                     "-c max_parallel_maintenance_workers=1 -c statement_timeout=0")
CHUNK_LOG_EVERY = 256 * 1024 * 1024


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str
    size: int
    seconds: float


def download_with_hash(chunks: Iterable[bytes], directory: Path | None = None) -> Download:
    """Write ``chunks`` to a new temp file while hashing them; the caller deletes the file."""
    started = time.monotonic()
    digest = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(prefix="continuity-restore-", suffix=".dump", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Download(Path(name), digest.hexdigest(), size, time.monotonic() - started)


@dataclass(frozen=True)
class ProcessOutcome:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    errors: list[str] = field(default_factory=list)


def _run(args: list[str], deadline_s: float, env: dict[str, str]) -> ProcessOutcome:
    """Run a subprocess in its own process group; kill the group when the deadline passes."""
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=deadline_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    errors = [line.removeprefix("pg_restore: error: ").strip() for line in (err or "").splitlines()
              if line.startswith("pg_restore: error:")]
    return ProcessOutcome(proc.returncode, out or "", err or "", timed_out, time.monotonic() - started, errors)


@dataclass(frozen=True)
class ArchiveListing:
    ok: bool
    toc_entries: int
    error: str
    seconds: float


def list_archive(dump: Path, deadline_s: float = 120) -> ArchiveListing:
    """``pg_restore --list``: is the archive readable, and how many TOC entries does it hold."""
    outcome = _run([pgbin.tool("pg_restore"), "--list", str(dump)], deadline_s, libpq_env())
    if outcome.timed_out:
        return ArchiveListing(False, 0, f"pg_restore --list did not finish within {deadline_s:.0f}s", outcome.seconds)
    entries = sum(1 for line in outcome.stdout.splitlines() if line and not line.startswith(";"))
    error = (outcome.stderr.strip().splitlines() or [""])[-1] if outcome.returncode != 0 else ""
    return ArchiveListing(outcome.returncode == 0, entries, error, outcome.seconds)


def restore(dump: Path, target_dsn: str, jobs: int = 2, deadline_s: float = 3600) -> ProcessOutcome:
    """``pg_restore --jobs`` of ``dump`` into the (empty) database of ``target_dsn`` under a deadline."""
    env = libpq_env()
    env["PGOPTIONS"] = RESTORE_PGOPTIONS
    args = [pgbin.tool("pg_restore"), *RESTORE_OPTIONS, f"--jobs={max(1, jobs)}", f"--dbname={target_dsn}",
            str(dump)]
    outcome = _run(args, deadline_s, env)
    logger.info("pg_restore finished", extra={"returncode": outcome.returncode, "seconds": round(outcome.seconds, 2),
                                              "errors": len(outcome.errors), "timed_out": outcome.timed_out})
    return outcome


class StorageBackupSource:
    """Backups as storage holds them: ``{tenant}/{yyyy}/{mm}/{dd}/{backup_id}/manifest.json`` + ``db.dump``.

    Storage is the truth (the catalog is rebuilt from it), so the validation reads manifests directly.
    """

    def __init__(self, blobs: Any, container: str | None = None) -> None:
        from continuity.kernel import settings

        self.blobs = blobs
        self.container = container or settings.get("CONTINUITY_BACKUP_CONTAINER")

    def _manifests(self, tenant_id: str) -> dict[str, str]:
        """backup id -> manifest blob name, for one tenant."""
        found: dict[str, str] = {}
        for name in self.blobs.list_names(self.container, prefix=f"{tenant_id}/"):
            parts = name.split("/")
            if len(parts) == 6 and parts[5] == MANIFEST_FILE and BACKUP_ID_RE.match(parts[4]):
                found[parts[4]] = name
        return found

    def _ref(self, tenant_id: str, backup_id: str, manifest_blob: str) -> Any:
        from pydantic import ValidationError

        from continuity.validation.service import BackupRef

        raw = self.blobs.download(self.container, manifest_blob)
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BackupCorrupted(f"manifest {manifest_blob} is invalid: field {where}: {first['msg']}; "
                                  "the backup cannot be validated") from exc
        return BackupRef(tenant=tenant_id, backup_id=backup_id, container=self.container,
                         prefix=manifest_blob.removesuffix(MANIFEST_FILE), manifest=manifest)

    def latest_backup(self, tenant_id: str) -> Any:
        manifests = self._manifests(tenant_id)
        if not manifests:
            raise BackupNotFound(f"tenant {tenant_id} has no backup with a manifest in container "
                                 f"{self.container!r}; run `continuity backup {tenant_id}` first")
        newest = max(manifests)  # backup ids start with their UTC timestamp
        return self._ref(tenant_id, newest, manifests[newest])

    def get_backup(self, tenant_id: str, backup_id: str) -> Any:
        if not BACKUP_ID_RE.match(backup_id):
            raise BackupNotFound(f"{backup_id!r} is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx)")
        manifests = self._manifests(tenant_id)
        if backup_id not in manifests:
            raise BackupNotFound(f"tenant {tenant_id} has no backup {backup_id} with a manifest; "
                                 f"`continuity catalog list` shows what it has")
        return self._ref(tenant_id, backup_id, manifests[backup_id])

    def dump_chunks(self, ref: Any) -> Iterable[bytes]:
        return self.blobs.iter_chunks(ref.container, ref.dump_blob)


def local_ports(registry: Any, blobs: Any | None = None, sandbox: Any | None = None,
                attachment_container: str | None = None) -> Any:
    """The validation's adapters: storage (Azurite or Azure), the guarded sandbox, pg_restore, the SQL checks."""
    from functools import partial

    from continuity.adapters.postgres import check_runner
    from continuity.adapters.postgres.sandbox import Sandbox
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.kernel import settings
    from continuity.validation.service import ValidationPorts

    blobs = blobs or BlobStore()
    container = attachment_container or settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
    store = check_runner.AttachmentStore(
        list_names=lambda prefix: blobs.list_names(container, prefix=prefix),
        read=lambda name: blobs.download(container, name),
    )
    return ValidationPorts(
        registry=registry, source=StorageBackupSource(blobs), sandbox=sandbox or Sandbox.local(registry),
        download=download_with_hash, list_archive=list_archive,
        restore=lambda dump, dsn, jobs, deadline: restore(dump, dsn, jobs, deadline),
        run_checks=partial(check_runner.run_all, attachment_store=store),
    )


# ---- wiring for activities and the CLI's in-process mode ------------------------------------------


def registry_from_settings() -> Any:
    from continuity.kernel import settings

    return settings.configured_registry()


class CatalogRecorder:
    """Records a validation in the catalog; a backup the catalog has not seen yet is ingested first
    (storage is the truth, and the BlobCreated event may simply not have arrived)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def record_validation(self, **kwargs: Any) -> Any:
        from datetime import datetime

        from continuity.catalog.manifest import backup_prefix

        try:
            return self.service.record_validation(**kwargs)
        except BackupNotFound:
            tenant, backup_id = kwargs["tenant"], kwargs["backup_id"]
            day = datetime.strptime(backup_id[:8], "%Y%m%d")  # backup ids start with their UTC date
            self.service.ingest_blob(backup_prefix(tenant, backup_id, day) + MANIFEST_FILE, actor="validation")
            return self.service.record_validation(**kwargs)


def open_recording(blobs: Any | None = None, control_dsn: str | None = None) -> tuple[Any, Any, Any]:
    """(catalog, evidence, publish) for :func:`continuity.validation.service.record_report`."""
    import uuid
    from datetime import UTC, datetime

    from continuity.adapters.azure.event_publisher import EventPublisher
    from continuity.adapters.postgres.catalog_store import open_catalog
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.kernel.events import EventType, make_event

    blobs = blobs or BlobStore()
    service = open_catalog(control_dsn, blobs, actor="validation")

    def publish(event_type: str, summary: dict[str, Any], head: dict[str, Any] | None) -> None:
        event = make_event(EventType(event_type), event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, summary["run_id"])),
                           subject=f"tenants/{summary['tenant']}/backups/{summary['backup_id']}",
                           at=datetime.now(UTC), tenant=summary["tenant"], chain_head=head,
                           **{k: v for k, v in summary.items() if k != "tenant"})
        EventPublisher().publish([event])

    return CatalogRecorder(service), service.evidence, publish


def validated_run_ids(control_dsn: str | None = None) -> set[str]:
    """Run ids of validations the catalog has recorded (``validate-{tenant}-{backup_id}``)."""
    from continuity.adapters.postgres.connection import connect
    from continuity.adapters.postgres.control_db import prepare

    with connect(prepare(control_dsn)) as conn:
        return {str(r[0]) for r in conn.execute("select distinct run_id from catalog.validations")}


def validation_history(tenant: str | None = None, limit: int = 1000,
                       control_dsn: str | None = None) -> list[dict[str, Any]]:
    """Validation runs, oldest first, with each backup's recorded summary (objectives, verdict)."""
    import json as jsonlib

    from continuity.adapters.postgres.connection import connect
    from continuity.adapters.postgres.control_db import prepare

    sql_text = ("select v.tenant, v.backup_id, v.run_id, v.started_at, v.finished_at, v.outcome, b.created_at, "
                "b.status, b.last_validation from catalog.validations v join catalog.backups b "
                "using (tenant, backup_id) where (%s::text is null or v.tenant = %s) "
                "order by v.started_at limit %s")
    with connect(prepare(control_dsn)) as conn:
        rows = conn.execute(sql_text, (tenant, tenant, limit)).fetchall()
    history = []
    for r in rows:
        last = r[8] if isinstance(r[8], dict) or r[8] is None else jsonlib.loads(r[8])
        history.append({"tenant": r[0], "backup_id": r[1], "run_id": r[2], "started_at": r[3],
                        "finished_at": r[4], "outcome": r[5], "backup_created_at": r[6], "status": r[7],
                        "summary": last if last and last.get("run_id") == r[2] else None})
    return history


def recoverability(tenant_id: str, control_dsn: str | None = None) -> dict[str, Any]:
    """The tenant's standing now (see :func:`continuity.validation.service.recoverability`)."""
    from datetime import UTC, datetime

    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare
    from continuity.validation.service import recoverability as standing

    registry = registry_from_settings()
    tenant = registry.get_tenant(tenant_id)
    store = PgCatalogStore(prepare(control_dsn))
    entries, _ = store.list_backups(tenant=tenant.id, limit=50)
    newest = (entries[0].backup_id, entries[0].created_at) if entries else None
    last = next((dict(e.last_validation) for e in entries if e.last_validation), None)
    return standing(tenant.id, registry.rto_minutes(tenant), registry.rpo_minutes(tenant), newest, last,
                    datetime.now(UTC))
