"""Backup-incident use cases wired to the adapters: what each activity of the incident orchestration does.

Inputs and outputs are JSON-able dicts. Every step is idempotent by a natural key (the failure
event's id, the retry attempt), so an activity executed again after a host crash does no harm twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from continuity.catalog.model import BackupStatus
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError
from continuity.kernel.events import EventType, make_event

logger = logging.getLogger(__name__)

ACTOR = "incident-responder"
GOOD_STATUSES = (BackupStatus.VALIDATED, BackupStatus.AVAILABLE)


def _evidence() -> Any:
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore

    return EvidenceStore(prepare(), BlobStore())


def _catalog_store() -> Any:
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare

    return PgCatalogStore(prepare())


def rpo_minutes_of(tenant: str) -> int:
    """The tenant's RPO from the registry.

    :raises UnknownTenant: the tenant is not in the registry.
    """
    registry = settings.configured_registry()
    return registry.rpo_minutes(registry.get_tenant(tenant))


def newest_good_backup_at(tenant: str) -> datetime | None:
    """When the newest backup that can be restored (available or validated) was taken."""
    store = _catalog_store()
    newest: datetime | None = None
    for status in GOOD_STATUSES:
        items, _ = store.list_backups(tenant=tenant, status=status, limit=1)
        if items and (newest is None or items[0].created_at > newest):
            newest = items[0].created_at
    return newest


def reject_event(event_id: str, reason: str) -> None:
    """A failure event we cannot act on: recorded with its reason, never raised into the host."""
    logger.warning("backup-failure event rejected: %s", reason, extra={"event_id": event_id})
    safe_id = event_id if event_id and len(event_id) <= 120 else "unidentified"
    _evidence().append(actor=ACTOR, action="incident.event_rejected", subject=f"incident/{safe_id}",
                       data={"event_id": event_id[:200], "reason": reason[:500]},
                       idempotency_key=f"incident.event_rejected:{safe_id}"[:200])


def record_failure(incident: dict[str, Any]) -> dict[str, Any]:
    tenant = incident["tenant"]
    newest = newest_good_backup_at(tenant)
    record = _evidence().append(
        actor=ACTOR, action="incident.backup_failed", subject=f"incident/{incident['event_id']}",
        data={"tenant": tenant, "job_id": incident["job_id"], "failed_at": incident["failed_at"],
              "reason": incident["reason"], "newest_good_backup_at": newest.isoformat() if newest else None},
        idempotency_key=f"incident.backup_failed:{incident['event_id']}"[:200])
    logger.info("backup failure recorded", extra={"tenant": tenant, "run_id": f"incident-{incident['event_id']}"})
    return {"newest_good_backup_at": newest.isoformat() if newest else None, "evidence_seq": record.seq}


def retry_backup(incident: dict[str, Any], attempt: int) -> dict[str, Any]:
    """Take an on-demand backup and catalog it; a failure is an answer, not an exception."""
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.catalog.service import open_catalog

    tenant = incident["tenant"]
    log = {"tenant": tenant, "run_id": f"incident-{incident['event_id']}"}
    try:
        stored = take_backup(settings.configured_registry(), tenant)
        outcome = open_catalog(actor=ACTOR).ingest_blob(stored.manifest)
    except ContinuityError as exc:
        logger.warning("retry %d of the backup failed: %s", attempt, exc, extra=log)
        return {"attempt": attempt, "ok": False, "error": str(exc)[:500]}
    logger.info("retry %d of the backup succeeded", attempt, extra=log)
    return {"attempt": attempt, "ok": not outcome.rejected, "backup_id": stored.backup_id,
            "catalog": str(outcome.action)}


def publish_rpo_event(request: dict[str, Any]) -> dict[str, Any]:
    incident = request["incident"]
    level = request["level"]
    event_type = EventType.RPO_BREACHED if level == "breached" else EventType.RPO_AT_RISK
    evidence = _evidence()
    record = evidence.append(
        actor=ACTOR, action=f"incident.rpo_{level}", subject=f"incident/{incident['event_id']}",
        data={"tenant": incident["tenant"], "stage": request["stage"], "exposure": request["exposure"]},
        idempotency_key=f"incident.rpo:{incident['event_id']}:{request['stage']}"[:200])
    from continuity.adapters.azure.event_publisher import EventPublisher

    event = make_event(event_type, event_id=f"{incident['event_id']}-{request['stage']}",
                       subject=f"tenants/{incident['tenant']}/rpo", at=datetime.now(UTC),
                       tenant=incident["tenant"], chain_head=record.head.to_json(),
                       incident=incident["event_id"], exposure=request["exposure"], stage=request["stage"])
    EventPublisher().publish([event])
    return {"published": str(event_type), "evidence_seq": record.seq}


def record_outcome(summary: dict[str, Any]) -> dict[str, Any]:
    record = _evidence().append(
        actor=ACTOR, action=f"incident.{summary['outcome']}", subject=f"incident/{summary['incident']}",
        data={"tenant": summary["tenant"], "attempts": summary["attempts"],
              "exposure_at_end": summary["exposure_at_end"]},
        idempotency_key=f"incident.outcome:{summary['incident']}"[:200])
    return {"evidence_seq": record.seq}
