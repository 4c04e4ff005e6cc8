"""Activities of the backup-incident orchestration: thin wrappers over continuity.incidents.service."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from continuity.incidents import service as incident_service

bp = df.Blueprint()


@bp.activity_trigger(input_name="incident")
def record_backup_failure(incident: dict[str, Any]) -> dict[str, Any]:
    return incident_service.record_failure(incident)


@bp.activity_trigger(input_name="request")
def publish_rpo_event(request: dict[str, Any]) -> dict[str, Any]:
    return incident_service.publish_rpo_event(request)


@bp.activity_trigger(input_name="request")
def retry_backup(request: dict[str, Any]) -> dict[str, Any]:
    return incident_service.retry_backup(request["incident"], request["attempt"])


@bp.activity_trigger(input_name="summary")
def record_incident_outcome(summary: dict[str, Any]) -> dict[str, Any]:
    return incident_service.record_outcome(summary)
