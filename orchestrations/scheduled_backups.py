"""Scheduled backups: survey what is due → take it (bounded fan-out) → raise a broken recovery chain.

Instance id ``backups-YYYYMMDDHHMM`` (the timer's slot): a second start in the same slot starts nothing.
Deterministic: the tick's time is ``context.current_utc_datetime`` and goes to the survey as input; settings
arrive in the input. A backup that fails is reported and left to the next tick (it is still due then).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities import backups as steps

bp = df.Blueprint()

CHAIN_INCIDENT = "recovery_chain_incident"


def chain_incident_id(key: str) -> str:
    return f"chain-{key}"


@bp.orchestration_trigger(context_name="context")
def scheduled_backups(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    given: dict[str, Any] = context.get_input() or {}
    run_id = context.instance_id
    survey = yield context.call_activity(steps.survey_backups, {
        "at": context.current_utc_datetime.isoformat(), "run_id": run_id})
    context.set_custom_status({"stage": "taking", "due": survey["due"]})

    # A break is recorded before the backups run (they may take a while); its incident runs after them.
    raised: list[dict[str, Any]] = []
    for chain in survey["chains"]:
        if not chain["break"]:
            continue
        answer = yield context.call_activity(steps.raise_recovery_chain_incident, {
            "break": chain["break"], "tenants": chain["tenants"], "restorable_until": chain["restorable_until"],
            "run_id": run_id})
        if answer["new"]:
            raised.append(chain)

    work: list[tuple[Any, dict[str, Any]]] = [
        (steps.take_scheduled_base_backup, {"server": s, "run_id": run_id}) for s in survey["due"]["base_backups"]]
    work += [(steps.take_scheduled_dump, {"tenant": t, "run_id": run_id}) for t in survey["due"]["dumps"]]
    batch = max(1, int(given.get("parallelism", 2)))
    taken: list[dict[str, Any]] = []
    for start in range(0, len(work), batch):
        tasks = [context.call_activity(fn, payload) for fn, payload in work[start:start + batch]]
        results = yield context.task_all(tasks)
        taken.extend(results)

    incidents: list[dict[str, Any]] = []
    for chain in raised:
        brk = chain["break"]
        context.set_custom_status({"stage": "recovery chain broken", "server": brk["server"], "reason": brk["reason"]})
        outcome = yield context.call_sub_orchestrator(CHAIN_INCIDENT, {
            **brk, "tenants": chain["tenants"], "restorable_until": chain["restorable_until"],
            "max_attempts": given.get("max_attempts", 3), "first_retry_seconds": given.get("first_retry_seconds", 30)},
            chain_incident_id(brk["key"]))
        incidents.append({"instance_id": chain_incident_id(brk["key"]), "outcome": outcome.get("outcome")})

    failed = [t for t in taken if not t["ok"]]
    summary = {"run_id": run_id, "at": survey["at"], "due": survey["due"], "taken": taken,
               "failed": len(failed), "errors": survey["errors"], "incidents": incidents,
               "chains": [{"server": c["server"], "break": c["break"]} for c in survey["chains"]]}
    context.set_custom_status({"stage": "done", "taken": len(taken) - len(failed), "failed": len(failed),
                               "incidents": len(incidents)})
    return summary
