"""Catalog use cases wired to the adapters: what the catalog activities and query routes do.

JSON-able dicts in and out; idempotent by natural keys (blob + etag, event id).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from continuity.adapters.postgres.catalog_store import BlobBackupStorage, PgCatalogStore, manifest_schema_check
from continuity.adapters.postgres.control_db import prepare
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.catalog.ingest import CatalogService, IngestAction
from continuity.catalog.model import BackupStatus
from continuity.kernel import settings
from continuity.kernel.errors import InvalidRequest
from continuity.kernel.events import EventType, make_event
from continuity.kernel.tenants import Registry, load_registry

logger = logging.getLogger(__name__)

ACTOR = "catalog"


def open_catalog(dsn: str | None = None, blobs: BlobStore | None = None, *, backup_container: str | None = None,
                 evidence_container: str | None = None, tenants_file: Path | None = None,
                 actor: str = "catalog", registry: Registry | None = None) -> CatalogService:
    """The catalog use cases wired to the control database, storage and the tenant registry.

    :param dsn: the control database (default: the configured one, created locally and migrated).
    :param registry: the tenants the catalog accepts (default: ``tenants_file``, else the configured registry).
    """
    dsn = prepare(dsn)
    blobs = blobs or BlobStore()
    if registry is None:
        registry = load_registry(tenants_file) if tenants_file else settings.configured_registry()
    known = frozenset(t.id for t in registry.tenants)
    return CatalogService(
        repo=PgCatalogStore(dsn), storage=BlobBackupStorage(blobs, backup_container),
        evidence=EvidenceStore(dsn, blobs, evidence_container), tenant_known=known.__contains__,
        schema_check=manifest_schema_check, actor=actor)


def _service() -> CatalogService:
    return open_catalog(actor=ACTOR)


def _store() -> Any:
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare

    return PgCatalogStore(prepare())


def _chain_head() -> dict[str, Any]:
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore

    head: dict[str, Any] = EvidenceStore(prepare(), BlobStore()).head().to_json()
    return head


def ingest(blob: str, event_id: str | None) -> dict[str, Any]:
    outcome = _service().ingest_blob(blob, event_id=event_id)
    logger.info("catalog ingest: %s", outcome.action,
                extra={"tenant": outcome.tenant, "backup_id": outcome.backup_id, "blob": blob})
    result: dict[str, Any] = outcome.to_json()
    return result


def publish_outcome(outcome: dict[str, Any], event_id: str) -> dict[str, Any]:
    """Publish continuity.backup.cataloged or .rejected for an ingest that changed something."""
    action = IngestAction(outcome["action"])
    if action is IngestAction.CATALOGED:
        event_type = EventType.BACKUP_CATALOGED
    elif action in (IngestAction.REJECTED, IngestAction.CONFLICT):
        event_type = EventType.BACKUP_REJECTED
    else:
        return {"published": None}
    from continuity.adapters.azure.event_publisher import EventPublisher

    event = make_event(event_type, event_id=f"{event_id}-{action}", subject=f"backups/{outcome['blob']}",
                       at=datetime.now(UTC), tenant=outcome.get("tenant"), chain_head=_chain_head(),
                       backup_id=outcome.get("backup_id"), status=outcome.get("status"),
                       reason=outcome.get("message") if event_type is EventType.BACKUP_REJECTED else None,
                       rejection_code=outcome.get("rejection_code"))
    EventPublisher().publish([event])
    return {"published": str(event_type)}


def reconcile() -> dict[str, Any]:
    report: dict[str, Any] = _service().reconcile().to_json()
    return report


def rebuild() -> dict[str, Any]:
    report: dict[str, Any] = _service().rebuild().to_json()
    return report


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(f"query {name}: not an ISO 8601 time ({value[:40]!r})") from exc
    if parsed.tzinfo is None:
        raise InvalidRequest(f"query {name}: give a timezone, e.g. 2026-11-24T00:00:00Z")
    return parsed


def list_backups(tenant: str, *, status: str | None, kind: str | None, since: str | None, before: str | None,
                 limit: int, cursor: str | None) -> dict[str, Any]:
    """One page of a tenant's backups, newest first."""
    from continuity.kernel import settings

    settings.configured_registry().get_tenant(tenant)
    try:
        parsed_status = BackupStatus(status.lower()) if status else None
    except ValueError as exc:
        raise InvalidRequest(f"query status: one of {', '.join(s.value for s in BackupStatus)}") from exc
    items, next_cursor = _store().list_backups(tenant=tenant, status=parsed_status, kind=kind,
                                               since=_when(since, "since"), before=_when(before, "before"),
                                               limit=limit, cursor=cursor)
    return {"tenant": tenant, "items": [e.to_json() for e in items], "next_cursor": next_cursor}


def get_backup(tenant: str, backup_id: str) -> dict[str, Any]:
    from continuity.kernel import settings

    settings.configured_registry().get_tenant(tenant)
    entry: dict[str, Any] = _store().get_backup(tenant, backup_id).to_json()
    return entry


def reject_event(event_id: str, subject: str | None, reason: str) -> dict[str, Any]:
    """A BlobCreated delivery we cannot act on: recorded (once per event) and announced; never raised."""
    from continuity.adapters.azure.event_publisher import EventPublisher
    from continuity.kernel import settings

    safe_subject = (subject or "")[:500]
    logger.warning("BlobCreated event rejected: %s", reason, extra={"event_id": event_id})
    with _store().session() as session:
        new = session.record_rejection(container=settings.get("CONTINUITY_BACKUP_CONTAINER"), blob=safe_subject,
                                       etag=f"event:{event_id[:100]}", tenant=None, backup_id=None,
                                       code="malformed_event", reason=reason[:1000], event_id=event_id[:200])
    if not new:
        return {"recorded": False}
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore

    record = EvidenceStore(prepare(), BlobStore()).append(
        actor=ACTOR, action="catalog.event_rejected", subject=f"event/{event_id[:120]}",
        data={"subject": safe_subject, "reason": reason[:1000]},
        idempotency_key=f"catalog.event_rejected:{event_id}"[:200])
    event = make_event(EventType.BACKUP_REJECTED, event_id=f"{event_id[:100]}-rejected", subject=safe_subject or
                       "backups", at=datetime.now(UTC), tenant=None, chain_head=record.head.to_json(),
                       backup_id=None, reason=reason[:1000], rejection_code="malformed_event")
    EventPublisher().publish([event])
    return {"recorded": True, "evidence_seq": record.seq}
