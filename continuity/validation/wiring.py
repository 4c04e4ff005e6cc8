"""Restore validation wired to the configured adapters: what activities, triggers and the CLI call.

:mod:`continuity.validation.service` is the use case over ports; this module is the one place that
decides which adapter serves each port (storage, the guarded sandbox, pg_restore, the SQL checks, the
catalog and the evidence chain), so no activity or trigger touches an adapter itself.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from continuity.adapters.azure.event_publisher import EventPublisher
from continuity.adapters.postgres import check_runner
from continuity.adapters.postgres.catalog_store import PgCatalogStore, validated_run_ids, validation_history
from continuity.adapters.postgres.control_db import prepare
from continuity.adapters.postgres.sandbox import Sandbox
from continuity.adapters.postgres.tenant_recovery import StagingTarget, restore_keeping_owners
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.tools.restore_runner import StorageBackupSource, download_with_hash, list_archive, restore
from continuity.catalog.manifest import MANIFEST_FILE, backup_prefix
from continuity.catalog.service import open_catalog
from continuity.kernel import settings
from continuity.kernel.errors import BackupNotFound, ContinuityError
from continuity.kernel.events import EventType, make_event
from continuity.kernel.tenants import Registry, ServerKind
from continuity.validation import service as validation
from continuity.validation.service import ValidationPorts
from continuity.validation.service import recoverability as standing

__all__ = ["validated_run_ids", "validation_history"]


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
        registry=registry, source=StorageBackupSource(blobs), sandbox=sandbox or Sandbox.local(registry),
        download=download_with_hash, list_archive=list_archive,
        restore=lambda dump, dsn, jobs, deadline: restore(dump, dsn, jobs, deadline),
        run_checks=partial(check_runner.run_all, attachment_store=store),
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
    newest = (entries[0].backup_id, entries[0].created_at) if entries else None
    last = next((dict(e.last_validation) for e in entries if e.last_validation), None)
    return standing(tenant.id, registry.rto_minutes(tenant), registry.rpo_minutes(tenant), newest, last,
                    datetime.now(UTC))


def staging_ports(registry: Registry, target: StagingTarget, blobs: Any | None = None) -> ValidationPorts:
    """The validation's ports with a tenant's staging database as the restore target (tenant recovery)."""
    return replace(local_ports(registry, blobs=blobs, sandbox=target), restore=restore_keeping_owners)


def configured_ports() -> ValidationPorts:
    return local_ports(registry_from_settings())


def tenants_for_validation() -> list[dict[str, Any]]:
    """Each tenant's newest backup, whether it was validated before, or why it has none."""
    ports = configured_ports()
    validated = validated_run_ids()
    picked: list[dict[str, Any]] = []
    for tenant in ports.registry.list_tenants():
        if ports.registry.server_of(tenant).kind is ServerKind.FLEXIBLE_SERVER:
            # Azure's own point-in-time restore is what gets proven for these (orchestrations/pitr_validation.py).
            picked.append({"tenant": tenant.id, "backup_id": None, "mode": "pitr"})
            continue
        try:
            ref = validation.pick_backup(ports.source, tenant.id)
        except ContinuityError as exc:
            picked.append({"tenant": tenant.id, "backup_id": None, "error": str(exc)})
            continue
        run_id = validation.run_id_for(tenant.id, ref.backup_id)
        picked.append({"tenant": tenant.id, "backup_id": ref.backup_id, "already_validated": run_id in validated})
    return picked


def resolve_backup_id(tenant_id: str, backup_id: str | None) -> str:
    """The requested backup's id, or the tenant's newest, as storage has it.

    :raises BackupNotFound: no such backup, or the tenant has none.
    """
    return validation.pick_backup(StorageBackupSource(BlobStore()), tenant_id, backup_id).backup_id


def drop_scratch_database(name: str) -> None:
    Sandbox.local(registry_from_settings()).drop_scratch_database(name)


def sweep_scratch_databases(older_than_minutes: int) -> list[str]:
    dropped: list[str] = Sandbox.local(registry_from_settings()).sweep_scratch_databases(
        older_than_minutes, now=datetime.now(UTC))
    return dropped
