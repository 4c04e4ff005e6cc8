"""Restore validation wired to the configured adapters: what activities, triggers and the CLI call.

:mod:`continuity.validation.service` is the use case over ports; this module is the one place that
decides which adapter serves each port (storage, the guarded sandbox, pg_restore, the SQL checks, the
catalog and the evidence chain), so no activity or trigger touches an adapter itself.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from continuity.adapters.azure.event_publisher import EventPublisher
from continuity.adapters.local.fault_injection import pause_at
from continuity.adapters.local.run_folders import open_run_folder, sweep_run_folders
from continuity.adapters.postgres import check_runner
from continuity.adapters.postgres.catalog_store import PgCatalogStore, validation_attempts, validation_history
from continuity.adapters.postgres.control_db import prepare
from continuity.adapters.postgres.sandbox import Sandbox
from continuity.adapters.postgres.tenant_recovery import StagingTarget, restore_keeping_owners
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.tools.restore_runner import StorageBackupSource, download_with_hash, list_archive, restore
from continuity.backups.rules import KIND_FULL
from continuity.catalog.manifest import (
    BACKUP_ID_RE,
    MANIFEST_FILE,
    MANIFEST_MISSING,
    Anchor,
    BackupRef,
    Manifest,
    TenantIdentity,
    backup_prefix,
)
from continuity.catalog.model import VALIDATABLE, BackupStatus
from continuity.catalog.service import open_catalog
from continuity.kernel import settings
from continuity.kernel.errors import BackupNotFound, BackupNotValidatable, ContinuityError, InvalidRequest
from continuity.kernel.events import EventType, make_event
from continuity.kernel.tenants import Registry, ServerKind
from continuity.pitr.rules import RecoveryWindow
from continuity.validation import service as validation
from continuity.validation.estate import EstateRow, estate_row, sort_rows
from continuity.validation.naming import next_attempt, run_id_for
from continuity.validation.service import ValidationPorts
from continuity.validation.service import recoverability as standing

__all__ = ["pause_at", "validation_attempts", "validation_history"]


class AnchoredBackupSource:
    """Backups as the catalog first saw them: the manifest validated is the one cataloged at first ingest.

    Storage says which backups exist and serves the dump's bytes; the catalog says what those bytes must
    be. A backup the catalog has not seen yet is ingested first (its first sight becomes the anchor, as
    the BlobCreated event would have made it); one the catalog rejected is not validated at all.
    """

    def __init__(self, storage: StorageBackupSource, registry: Registry, blobs: Any,
                 control_dsn: str | None = None) -> None:
        self.storage = storage
        self.registry = registry
        self.blobs = blobs
        self.control_dsn = control_dsn

    def latest_backup(self, tenant_id: str) -> BackupRef:
        return self.get_backup(tenant_id, self.storage.newest_backup_id(tenant_id))

    def get_backup(self, tenant_id: str, backup_id: str) -> BackupRef:
        store = PgCatalogStore(prepare(self.control_dsn))
        entry = store.entry(tenant_id, backup_id) if BACKUP_ID_RE.match(backup_id) else None
        try:
            manifest_blob = self.storage.manifest_blob(tenant_id, backup_id)
            stored_sha = hashlib.sha256(self.storage.read_manifest(manifest_blob)).hexdigest()
        except BackupNotFound:
            if entry is None or entry.status not in VALIDATABLE:
                raise
            # Cataloged, and its manifest gone from storage since: the validation fails file_checksum saying so.
            manifest_blob, stored_sha = entry.manifest_blob, MANIFEST_MISSING
        if entry is None:
            open_catalog(self.control_dsn, self.blobs, registry=self.registry, actor="validation",
                         backup_container=self.storage.container).ingest_blob(manifest_blob, actor="validation")
            entry = store.entry(tenant_id, backup_id)
        if entry is None or entry.status not in VALIDATABLE | {BackupStatus.REJECTED}:
            status = entry.status if entry else "not cataloged"
            reason = entry.status_reason if entry else "the catalog refused it"
            raise BackupNotValidatable(f"backup {tenant_id}/{backup_id} is {status} in the catalog ({reason}); "
                                       "only a backup the catalog holds can be validated")
        if entry.status is BackupStatus.REJECTED:
            # Refused at ingest: the validation says why as failed checks (the manifest's own, when storage's
            # still parses, so a foreign tenant's manifest fails manifest_tenant), and restores nothing.
            ref = self.storage.get_backup(tenant_id, backup_id)
            return replace(ref, stored_manifest_sha256=stored_sha,
                           catalog_refusal=f"the catalog rejected this backup at ingest: {entry.status_reason}")
        try:
            manifest = Manifest.model_validate(dict(entry.manifest or {}))
        except ValueError as exc:
            raise BackupNotValidatable(f"the cataloged manifest of {tenant_id}/{backup_id} does not parse any more "
                                       f"({str(exc).splitlines()[0][:200]}); rebuild the catalog") from exc
        if not entry.manifest_sha256 or not entry.dump_sha256 or entry.dump_size is None:
            raise BackupNotValidatable(f"the catalog entry of {tenant_id}/{backup_id} has no checksums to hold "
                                       "storage to; rebuild the catalog with --verify-checksums")
        anchor = Anchor(manifest_sha256=entry.manifest_sha256, dump_sha256=entry.dump_sha256,
                        dump_size=entry.dump_size, cataloged_at=entry.first_seen_at,
                        evidence_seq=store.ingest_evidence_seq(tenant_id, backup_id, entry.manifest_sha256))
        return BackupRef(tenant=tenant_id, backup_id=backup_id, container=entry.container, prefix=entry.prefix,
                         manifest=manifest, anchor=anchor, stored_manifest_sha256=stored_sha,
                         established=_established_identity(store, tenant_id, backup_id))

    def dump_chunks(self, ref: BackupRef) -> Iterable[bytes]:
        return self.storage.dump_chunks(ref)


def _established_identity(store: PgCatalogStore, tenant_id: str,
                          backup_id: str) -> tuple[str, TenantIdentity] | None:
    """The identity recorded by the tenant's newest validated backup other than ``backup_id``, if any."""
    entries, _ = store.list_backups(tenant=tenant_id, status=BackupStatus.VALIDATED, limit=20)
    for entry in entries:
        identity = (entry.manifest or {}).get("identity")
        if entry.backup_id != backup_id and isinstance(identity, dict):
            try:
                return entry.backup_id, TenantIdentity.model_validate(identity)
            except ValueError:
                continue
    return None


def anchored_source(registry: Registry, blobs: Any | None = None) -> AnchoredBackupSource:
    blobs = blobs or BlobStore()
    return AnchoredBackupSource(StorageBackupSource(blobs), registry, blobs)


def local_ports(registry: Any, blobs: Any | None = None, sandbox: Any | None = None,
                attachment_container: str | None = None) -> Any:
    """The validation's adapters: storage (Azurite or Azure), the guarded sandbox, pg_restore, the SQL checks."""
    blobs = blobs or BlobStore()
    container = attachment_container or settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
    store = check_runner.AttachmentStore(
        list_names=lambda prefix: blobs.list_names(container, prefix=prefix),
        read=lambda name: blobs.download(container, name),
    )
    return ValidationPorts(
        registry=registry, source=anchored_source(registry, blobs), sandbox=sandbox or Sandbox.local(registry),
        download=download_with_hash, list_archive=list_archive,
        restore=restore,
        run_checks=partial(check_runner.run_all, attachment_store=store),
        checks_during_restore=partial(check_runner.ChecksDuringRestore, attachment_store=store),
    )


def registry_from_settings() -> Registry:
    return settings.configured_registry()


class CatalogRecorder:
    """Records a validation in the catalog; a backup the catalog has not seen yet is ingested first
    (storage is the truth, and the BlobCreated event may simply not have arrived)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def record_validation(self, **kwargs: Any) -> Any:
        try:
            return self.service.record_validation(**kwargs)
        except BackupNotFound:
            tenant, backup_id = kwargs["tenant"], kwargs["backup_id"]
            day = datetime.strptime(backup_id[:8], "%Y%m%d")  # backup ids start with their UTC date
            self.service.ingest_blob(backup_prefix(tenant, backup_id, day) + MANIFEST_FILE, actor="validation")
            return self.service.record_validation(**kwargs)


def open_recording(blobs: Any | None = None, control_dsn: str | None = None) -> tuple[Any, Any, Any]:
    """(catalog, evidence, publish) for :func:`continuity.validation.service.record_report`."""
    blobs = blobs or BlobStore()
    service = open_catalog(control_dsn, blobs, actor="validation")

    def publish(event_type: str, summary: dict[str, Any], head: dict[str, Any] | None) -> None:
        event = make_event(EventType(event_type), event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, summary["run_id"])),
                           subject=f"tenants/{summary['tenant']}/backups/{summary['backup_id']}",
                           at=datetime.now(UTC), tenant=summary["tenant"], chain_head=head,
                           **{k: v for k, v in summary.items() if k != "tenant"})
        EventPublisher().publish([event])

    return CatalogRecorder(service), service.evidence, publish


def recoverability(tenant_id: str, control_dsn: str | None = None) -> dict[str, Any]:
    """The tenant's standing now (see :func:`continuity.validation.service.recoverability`)."""
    registry = registry_from_settings()
    tenant = registry.get_tenant(tenant_id)
    store = PgCatalogStore(prepare(control_dsn))
    entries, _ = store.list_backups(tenant=tenant.id, limit=50)
    # A point-in-time extract's data is as of its target, not its creation: never the newest backup for RPO.
    dumps, _ = store.list_backups(tenant=tenant.id, kind=KIND_FULL, limit=1)
    newest = (dumps[0].backup_id, dumps[0].created_at) if dumps else None
    last = next((dict(e.last_validation) for e in entries if e.last_validation), None)
    archive = archive_windows(registry, [tenant.server]).get(tenant.server)
    return standing(tenant.id, registry.rto_minutes(tenant), registry.rpo_minutes(tenant), newest, last,
                    datetime.now(UTC), archive)


def archive_windows(registry: Registry, servers: Iterable[str]) -> dict[str, RecoveryWindow | str]:
    """Server -> its recovery window (or why it could not be read), for those of ``servers`` whose WAL we
    archive; each archive read once."""
    from continuity.pitr import service as pitr

    out: dict[str, RecoveryWindow | str] = {}
    for server in sorted(set(servers)):
        try:
            pitr.archive_name(pitr.server_of(registry, server))
        except InvalidRequest:
            continue  # not a server whose WAL we archive: its RPO is its newest dump's age
        except ContinuityError as exc:
            out[server] = str(exc)[:300]
            continue
        recorded = pitr.recorded_windows([server]).get(server)
        if recorded is not None:
            # The catalog's record (refreshed by every backup tick, base backup, proof and retention run): no
            # storage listing per page view.
            out[server] = RecoveryWindow(server=server, earliest=recorded["earliest"], latest=recorded["latest"],
                                         base_backups=len(recorded["base_backups"]), segments=recorded["segments"],
                                         newest_segment=recorded["newest_segment"],
                                         oldest_base_backup=None, newest_base_backup=None, gap=recorded["gap"])
            continue
        try:
            found = pitr.facts(registry, server)
            pitr.refresh_window(registry, server, found)
            out[server] = found.window
        except ContinuityError as exc:
            out[server] = str(exc)[:300]
    return out


def estate(visible: Collection[str] | None = None, control_dsn: str | None = None) -> list[EstateRow]:
    """Every registered tenant's standing now (``visible``: only these tenants), worst first.

    One catalog query for the whole estate (:meth:`PgCatalogStore.standings`), judged per tenant by the same
    :func:`continuity.validation.service.recoverability` as ``GET /api/tenants/{t}/recoverability``, at one ``now``.
    """
    registry = registry_from_settings()
    tenants = [t for t in registry.list_tenants() if visible is None or t.id in visible]
    found = PgCatalogStore(prepare(control_dsn)).standings([t.id for t in tenants]) if tenants else {}
    archives = archive_windows(registry, {t.server for t in tenants})
    now = datetime.now(UTC)
    rows = []
    for tenant in tenants:
        newest, last = found.get(tenant.id, (None, None))
        rows.append(estate_row(standing(tenant.id, registry.rto_minutes(tenant), registry.rpo_minutes(tenant),
                                        newest, last, now, archives.get(tenant.server)),
                               name=tenant.name, tier=tenant.tier))
    return sort_rows(rows)


def staging_ports(registry: Registry, target: StagingTarget, blobs: Any | None = None) -> ValidationPorts:
    """The validation's ports with a tenant's staging database as the restore target (tenant recovery)."""
    # Attachments are checked after the staging step brings back the files the staged copy misses: not while
    # it restores.
    return replace(local_ports(registry, blobs=blobs, sandbox=target), restore=restore_keeping_owners,
                   checks_during_restore=partial(check_runner.ChecksDuringRestore, attachment_store=None))


def configured_ports() -> ValidationPorts:
    return local_ports(registry_from_settings())


@dataclass(frozen=True)
class Attempt:
    """Which validation run a request for one backup means: the concluded one, or the next attempt."""

    run_id: str
    concluded: bool  # True: ``run_id`` already judged the backup (passed or failed) and nothing new is started
    outcome: str | None = None


def plan_attempt(tenant_id: str, backup_id: str, force: bool = False, control_dsn: str | None = None) -> Attempt:
    """The run a validation request for ``backup_id`` gets.

    Without ``force``, a backup already judged (passed or failed) answers with that run; one never judged
    (never tried, or every attempt errored) gets a new attempt. With ``force``, always a new attempt.
    """
    attempts = validation_attempts(tenant_id, backup_id, control_dsn)
    judged = [(run_id, outcome) for run_id, outcome in attempts if outcome in ("passed", "failed")]
    if judged and not force:
        return Attempt(judged[-1][0], True, judged[-1][1])
    number = next_attempt([run_id for run_id, _ in attempts], tenant_id, backup_id)
    return Attempt(run_id_for(tenant_id, backup_id, number), False)


def tenants_for_validation() -> list[dict[str, Any]]:
    """Each tenant's newest backup, whether it was judged before, and the run id of its next attempt."""
    ports = configured_ports()
    picked: list[dict[str, Any]] = []
    for tenant in ports.registry.list_tenants():
        if ports.registry.server_of(tenant).kind is ServerKind.FLEXIBLE_SERVER:
            # Azure's own point-in-time restore is what gets proven for these (orchestrations/pitr_validation.py).
            picked.append({"tenant": tenant.id, "backup_id": None, "mode": "pitr"})
            continue
        try:
            backup_id = StorageBackupSource(BlobStore()).newest_backup_id(tenant.id)
        except ContinuityError as exc:
            picked.append({"tenant": tenant.id, "backup_id": None, "error": str(exc)})
            continue
        attempt = plan_attempt(tenant.id, backup_id)
        picked.append({"tenant": tenant.id, "backup_id": backup_id, "already_validated": attempt.concluded,
                       "run_id": attempt.run_id})
    return picked


def resolve_backup_id(tenant_id: str, backup_id: str | None) -> str:
    """The requested backup's id, or the tenant's newest, as storage has it.

    :raises BackupNotFound: no such backup, or the tenant has none.
    """
    source = StorageBackupSource(BlobStore())
    if backup_id:
        source.manifest_blob(tenant_id, backup_id)
        return backup_id
    return source.newest_backup_id(tenant_id)


def restore_in_run_folder(ports: ValidationPorts, ref: BackupRef, scratch_database: str, jobs: int,
                          run_id: str, sample_rate: float = validation.DEFAULT_SAMPLE_RATE) -> validation.RestoreStep:
    """Step 1 with the dump landing in the run's own folder: an attempt killed mid-restore leaves its file there,
    and the next attempt of the same run (or the nightly sweep) removes it, never another run's."""
    folder = open_run_folder(run_id, "restore_into_sandbox")

    def download(chunks: Iterable[bytes]) -> Any:
        return download_with_hash(_pausing_after_first(chunks, "validation.downloading"), directory=folder.path)

    def restore_after_pause(dump: Any, dsn: str, jobs: int, deadline: float,
                            on_finished: Callable[[int, str], None] | None = None) -> Any:
        pause_at("validation.restoring")  # the dump landed and the scratch database exists, pg_restore not begun
        return ports.restore(dump, dsn, jobs, deadline, on_finished=on_finished)

    try:
        step = validation.restore_into_sandbox(replace(ports, download=download, restore=restore_after_pause), ref,
                                               scratch_database, jobs, sample_rate)
    finally:
        folder.remove()
    pause_at("validation.restore")  # restored and its folder gone, the result not delivered yet
    return step


def _pausing_after_first(chunks: Iterable[bytes], point: str) -> Iterator[bytes]:
    """``chunks`` with a fault-injection pause once the first one is handed on (a dump half landed on disk)."""
    for number, chunk in enumerate(chunks):
        yield chunk
        if number == 0:
            pause_at(point)


def drop_scratch_database(name: str) -> None:
    Sandbox.local(registry_from_settings()).drop_scratch_database(name)


def sweep_scratch_databases(older_than_minutes: int) -> list[str]:
    """Drop crashed runs' scratch databases, and remove their run folders (downloaded dumps) as old."""
    dropped: list[str] = Sandbox.local(registry_from_settings()).sweep_scratch_databases(
        older_than_minutes, now=datetime.now(UTC))
    sweep_run_folders(older_than_minutes)
    return dropped
