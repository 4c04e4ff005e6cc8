"""Backup incident: record the failure → measure RPO exposure → retry the backup with backoff → escalate.

Instance id ``incident-{event id}``: a duplicate delivery of the same failure event starts nothing new.
Deterministic: the clock is ``context.current_utc_datetime``; settings arrive in the input.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from activities import incidents as steps
from continuity.incidents.rules import ExposureLevel, escalation, retry_delays, rpo_exposure

bp = df.Blueprint()


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@bp.orchestration_trigger(context_name="context")
def backup_incident(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    incident: dict[str, Any] = context.get_input()
    tenant = incident["tenant"]
    recorded = yield context.call_activity(steps.record_backup_failure, incident)
    newest = _at(recorded["newest_good_backup_at"])
    exposure = rpo_exposure(tenant, newest, context.current_utc_datetime, incident["rpo_minutes"])
    context.set_custom_status({"stage": "measured", "exposure": exposure.to_json()})
    if exposure.level is not ExposureLevel.WITHIN:
        yield context.call_activity(steps.publish_rpo_event, {
            "incident": incident, "level": exposure.level.value.lower(), "exposure": exposure.to_json(),
            "stage": "detected"})

    attempts: list[dict[str, Any]] = []
    succeeded = False
    for attempt, delay in enumerate(retry_delays(incident["max_attempts"], incident["first_retry_seconds"]), 1):
        context.set_custom_status({"stage": "retrying", "attempt": attempt, "exposure": exposure.to_json()})
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
        result = yield context.call_activity(steps.retry_backup, {"incident": incident, "attempt": attempt})
        attempts.append(result)
        if result["ok"]:
            succeeded = True
            break

    after = rpo_exposure(tenant, newest, context.current_utc_datetime, incident["rpo_minutes"])
    outcome = escalation(after, succeeded)
    if outcome != "resolved":
        yield context.call_activity(steps.publish_rpo_event, {
            "incident": incident, "level": outcome, "exposure": after.to_json(), "stage": "escalated"})
    summary = {"incident": incident["event_id"], "tenant": tenant, "outcome": outcome,
               "exposure_at_failure": exposure.to_json(), "exposure_at_end": after.to_json(), "attempts": attempts}
    yield context.call_activity(steps.record_incident_outcome, summary)
    context.set_custom_status({"stage": "done", "outcome": outcome})
    return summary
