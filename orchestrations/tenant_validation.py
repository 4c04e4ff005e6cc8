"""Tenant validation: pick backup → restore into the sandbox → checks → record → always drop.

Instance id ``validate-{tenant}-{backup_id}-{attempt}`` (one per attempt). Deterministic: the clock is
``context.current_utc_datetime``, the scratch database name comes from ``context.new_uuid()`` so the
orchestrator knows it before the restore starts and can always drop it. It never raises: a run that
cannot complete (sandbox down, storage down) is recorded as an ERROR that marks nothing.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities import validation as steps
from continuity.validation.naming import scratch_database_name

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=2)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


@bp.orchestration_trigger(context_name="context")
def tenant_validation(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request: dict[str, Any] = context.get_input() or {}
    tenant = request["tenant"]
    started = context.current_utc_datetime
    if request.get("mode") == "pitr":
        # A flexible-server tenant validated by Azure's point-in-time restore (orchestrations/pitr_validation.py).
        pitr_summary: dict[str, Any] = yield context.call_sub_orchestrator(
            "pitr_validation", request, f"pitr-{tenant}-{started:%Y%m%d%H%M}")
        return pitr_summary
    try:
        picked = yield context.call_activity_with_retry(steps.pick_backup_for_validation, RETRY,
                                                        {"tenant": tenant, "backup_id": request.get("backup_id")})
    except Exception as exc:  # noqa: BLE001 - an orchestrator reports every failure as an outcome
        not_picked: dict[str, Any] = yield context.call_activity(steps.record_validation, {
            "tenant": tenant, "backup_id": request.get("backup_id") or "none", "run_id": context.instance_id,
            "started_at": started.isoformat(), "finished_at": context.current_utc_datetime.isoformat(),
            "error": f"no backup to validate: {_reason(exc)}"})
        return not_picked
    backup_id = picked["backup_id"]
    scratch = scratch_database_name(tenant, started, rand=str(context.new_uuid()).replace("-", "")[:6])
    base = {"tenant": tenant, "backup_id": backup_id, "run_id": context.instance_id, "scratch_database": scratch}
    if not context.is_replaying:
        context.set_custom_status({"stage": "restoring", "backup_id": backup_id, "scratch_database": scratch})
    step: dict[str, Any] | None = None
    checks: list[dict[str, Any]] | None = None
    error = ""
    try:
        step = yield context.call_activity(steps.restore_into_sandbox, {
            **base, "jobs": request.get("jobs", 2), "sample_rate": request.get("sample_rate", 1.0)})
        context.set_custom_status({"stage": "checking", "backup_id": backup_id})
        checks = yield context.call_activity(steps.run_restore_checks, {
            **base, "step": step, "sample_rate": request.get("sample_rate", 1.0)})
    except Exception as exc:  # noqa: BLE001 - recorded as an ERROR outcome below
        error = _reason(exc)
    summary: dict[str, Any]
    try:
        summary = yield context.call_activity_with_retry(steps.record_validation, RETRY, {
            **base, "backup_created_at": picked["created_at"], "started_at": started.isoformat(),
            "finished_at": context.current_utc_datetime.isoformat(), "step": None if error else step,
            "checks": checks, "error": error})
    except Exception as exc:  # noqa: BLE001 - still drop; report that recording failed
        summary = {"tenant": tenant, "backup_id": backup_id, "run_id": context.instance_id, "outcome": "error",
                   "reason": f"recording failed: {_reason(exc)}", "failed_checks": []}
    try:
        yield context.call_activity_with_retry(steps.drop_scratch_database, RETRY, {"scratch_database": scratch})
        summary["scratch_dropped"] = True
    except Exception as exc:  # noqa: BLE001 - the nightly sweeper removes what is left
        summary["scratch_dropped"] = False
        summary["drop_error"] = _reason(exc)
    context.set_custom_status({"stage": "done", "outcome": summary.get("outcome")})
    return summary
