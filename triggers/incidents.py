"""Event Grid: ``Continuity.Backup.Failed`` from backup jobs starts a backup-incident orchestration.

Accepts Event Grid schema and CloudEvents (the host hands both over as an EventGridEvent). A malformed
event or an unknown tenant is recorded as rejected with its reason; the trigger never raises into the host.
"""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

from continuity.incidents import service as incident_service
from continuity.incidents.rules import BACKUP_FAILED_EVENT_TYPE, BackupFailedData
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError
from triggers.common import event_type_of, instance_id, start_once

logger = logging.getLogger(__name__)

bp = df.Blueprint()

@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def backup_failed(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    if event_type_of(event) != BACKUP_FAILED_EVENT_TYPE:
        reason = f"event type {event_type_of(event)!r} is not {BACKUP_FAILED_EVENT_TYPE}"
        incident_service.reject_event(event.id, reason)
        return
    try:
        data = BackupFailedData.model_validate(event.get_json())
        rpo_minutes = incident_service.rpo_minutes_of(data.tenant)
    except ValidationError as exc:
        first = exc.errors()[0]
        incident_service.reject_event(event.id, f"field data.{'.'.join(map(str, first['loc']))}: {first['msg']}")
        return
    except ContinuityError as exc:
        incident_service.reject_event(event.id, str(exc))
        return
    iid = instance_id("incident", event.id)
    started = await start_once(client, "backup_incident", iid, {
        "event_id": event.id,
        "tenant": data.tenant,
        "job_id": data.job_id,
        "failed_at": data.failed_at.isoformat(),
        "reason": data.reason,
        "rpo_minutes": rpo_minutes,
        "max_attempts": settings.get_int("CONTINUITY_INCIDENT_RETRY_ATTEMPTS"),
        "first_retry_seconds": settings.get_int("CONTINUITY_INCIDENT_FIRST_RETRY_SECONDS"),
    })
    if not started:
        logger.info("duplicate backup-failure event ignored", extra={"tenant": data.tenant, "run_id": iid})
        return
    logger.info("backup incident started", extra={"tenant": data.tenant, "run_id": iid})
