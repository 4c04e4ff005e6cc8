"""Recovery chain broken: publish → measure each tenant's RPO exposure → repair with backoff → escalate.

The retries, escalation and events of a failed backup (:mod:`orchestrations.backup_incident`), for a server:
``continuity.recovery_chain.broken`` per tenant of the server; a repair is a new base backup (missing segment)
or a check that the archiver ships again (failing archiver). Instance id ``chain-{server}-{cause}-{segment}``,
started once per break by :mod:`orchestrations.scheduled_backups`. Deterministic: the clock is
``context.current_utc_datetime``; settings arrive in the input.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from activities import backups as steps
from activities import incidents as incident_steps
from continuity.incidents.rules import ExposureLevel, RpoExposure, escalation, retry_delays, rpo_exposure

bp = df.Blueprint()


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _exposures(incident: dict[str, Any], newest: dict[str, datetime | None],
               now: datetime) -> dict[str, RpoExposure]:
    return {t["tenant"]: rpo_exposure(t["tenant"], newest.get(t["tenant"]), now, t["rpo_minutes"])
            for t in incident["tenants"]}


@bp.orchestration_trigger(context_name="context")
def recovery_chain_incident(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    incident: dict[str, Any] = context.get_input()
    key = incident["key"]
    published = yield context.call_activity(steps.publish_recovery_chain_broken, incident)
    newest = {t: _at(v) for t, v in published["newest_recovery_point"].items()}
    exposures = _exposures(incident, newest, context.current_utc_datetime)
    context.set_custom_status({"stage": "measured", "server": incident["server"], "reason": incident["reason"],
                               "exposures": {t: e.to_json() for t, e in exposures.items()}})
    for tenant, exposure in exposures.items():
        if exposure.level is not ExposureLevel.WITHIN:
            yield context.call_activity(incident_steps.publish_rpo_event, {
                "incident": {"event_id": f"chain-{key}-{tenant}", "tenant": tenant},
                "level": exposure.level.value.lower(), "exposure": exposure.to_json(), "stage": "detected"})

    attempts: list[dict[str, Any]] = []
    succeeded = False
    for attempt, delay in enumerate(retry_delays(incident["max_attempts"], incident["first_retry_seconds"]), 1):
        context.set_custom_status({"stage": "repairing", "server": incident["server"], "attempt": attempt})
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
        result = yield context.call_activity(steps.repair_recovery_chain, {
            "server": incident["server"], "cause": incident["cause"], "segment": incident["segment"],
            "attempt": attempt, "run_id": context.instance_id})
        attempts.append(result)
        if result["ok"]:
            succeeded = True
            break

    after = _exposures(incident, newest, context.current_utc_datetime)
    tenants: dict[str, dict[str, Any]] = {}
    for tenant, exposure in after.items():
        outcome = escalation(exposure, succeeded)
        tenants[tenant] = {"outcome": outcome, "exposure_at_end": exposure.to_json()}
        if outcome != "resolved":
            yield context.call_activity(incident_steps.publish_rpo_event, {
                "incident": {"event_id": f"chain-{key}-{tenant}", "tenant": tenant},
                "level": outcome, "exposure": exposure.to_json(), "stage": "escalated"})
    outcomes = {t["outcome"] for t in tenants.values()}
    overall = "resolved" if succeeded else "breached" if "breached" in outcomes else "at_risk"
    summary = {"incident": key, "server": incident["server"], "cause": incident["cause"],
               "segment": incident["segment"], "outcome": overall, "attempts": attempts, "tenants": tenants}
    yield context.call_activity(steps.record_recovery_chain_outcome, summary)
    context.set_custom_status({"stage": "done", "outcome": overall})
    return summary
