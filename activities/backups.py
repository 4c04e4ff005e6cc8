"""Activities of the scheduled backups and of the recovery-chain incident: thin wrappers over
:mod:`continuity.backups.service` and :mod:`continuity.incidents.chain_service`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import azure.durable_functions as df

from continuity.backups import service as backup_service
from continuity.incidents import chain_service

bp = df.Blueprint()


@bp.activity_trigger(input_name="request")
def survey_backups(request: dict[str, Any]) -> dict[str, Any]:
    """What is due at the tick's time, and each archived server's recovery chain."""
    return backup_service.survey(datetime.fromisoformat(request["at"]))


@bp.activity_trigger(input_name="request")
def take_scheduled_dump(request: dict[str, Any]) -> dict[str, Any]:
    return backup_service.take_dump(request["tenant"], request["run_id"])


@bp.activity_trigger(input_name="request")
def take_scheduled_base_backup(request: dict[str, Any]) -> dict[str, Any]:
    return backup_service.take_base_backup(request["server"], request["run_id"])


@bp.activity_trigger(input_name="request")
def raise_recovery_chain_incident(request: dict[str, Any]) -> dict[str, Any]:
    """Record the break once; ``new`` is true only for the run that recorded it."""
    return chain_service.raise_incident(request)


@bp.activity_trigger(input_name="incident")
def publish_recovery_chain_broken(incident: dict[str, Any]) -> dict[str, Any]:
    return chain_service.publish_broken(incident)


@bp.activity_trigger(input_name="request")
def repair_recovery_chain(request: dict[str, Any]) -> dict[str, Any]:
    return chain_service.repair(request)


@bp.activity_trigger(input_name="summary")
def record_recovery_chain_outcome(summary: dict[str, Any]) -> dict[str, Any]:
    return chain_service.record_outcome(summary)
