"""Point-in-time restore validation on Flexible Server: restore to a new isolated server → poll on durable
timers → checks → always delete → record.

Started for flexible-server tenants (by ``tenant_validation`` when its input says ``"mode": "pitr"``, or
on its own with instance id ``pitr-{tenant}-{yyyymmddhhmm}``). Deterministic: the target server name
comes from ``context.current_utc_datetime`` (``pitr-{tenant}-{yyyymmddhhmm}``), so the orchestrator
knows what to delete even when the restore request itself failed half-way. Between polls it waits on
``context.create_timer``, never in an activity. It never raises: a run that cannot complete (refused,
failed, timed out, server unreachable) is recorded as an ERROR with its reason, after the deletion.

Proven at the HTTP transport level and by driving this generator through the Durable SDK; it has not
run against real Azure from this repository.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from activities import pitr as steps
from continuity.validation import pitr

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
# A deletion is waited on this long at most; past it the run records "deletion still running".
DELETE_TIMEOUT_S = 30 * 60


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def await_operation(context: df.DurableOrchestrationContext, tenant: str, operation: dict[str, Any],
                    timeout_s: float, poll_seconds: float) -> Generator[Any, Any, tuple[Any, ...]]:
    """Poll one ARM operation until done, failed or timed out: one GET per activity, a durable timer between.

    :returns: :func:`continuity.validation.pitr.next_poll`'s final decision (``("done",)``, ``("failed", why)``,
        ``("timeout", why)``).
    """
    started = context.current_utc_datetime
    while True:
        status = yield context.call_activity_with_retry(steps.poll_restore_operation, RETRY, {
            "tenant": tenant, "run_id": context.instance_id, "operation": operation})
        elapsed = (context.current_utc_datetime - started).total_seconds()
        decision = pitr.next_poll(status["status"], elapsed, timeout_s, poll_seconds, status.get("retry_after_s"),
                                  status.get("error") or "")
        if decision[0] != "wait":
            return decision
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=float(decision[1])))


@bp.orchestration_trigger(context_name="context")
def pitr_validation(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request: dict[str, Any] = context.get_input() or {}
    tenant = request["tenant"]
    started = context.current_utc_datetime
    server_name = pitr.target_server_name(tenant, started)
    base = {"tenant": tenant, "run_id": context.instance_id, "server_name": server_name}
    context.set_custom_status({"stage": "restoring", "server_name": server_name})
    error = ""
    checked: dict[str, Any] = {}
    plan: dict[str, Any] = {}
    restore_seconds = 0.0
    poll_seconds: float = pitr.DEFAULT_POLL_SECONDS
    try:
        begun = yield context.call_activity(steps.begin_restore_server, {
            **base, "started_at": started.isoformat(), "point_in_time": request.get("point_in_time")})
        plan = begun["plan"]
        poll_seconds = float(begun["poll_seconds"])
        context.set_custom_status({"stage": "waiting for Azure", "server_name": server_name,
                                   "point_in_time": plan["point_in_time"]})
        decision = yield from await_operation(context, tenant, begun["operation"], float(begun["timeout_s"]),
                                              poll_seconds)
        if decision[0] == "done" and plan["isolation"].get("mode") == pitr.NetworkMode.PRIVATE_ENDPOINT:
            # A public-access source restores to public access (disabled): reach it through an endpoint of its own.
            context.set_custom_status({"stage": "connecting", "server_name": server_name})
            for step in ("endpoint", "dns"):
                connected = yield context.call_activity_with_retry(steps.connect_restored_server, RETRY, {
                    **base, "plan": plan, "step": step})
                if connected.get("operation"):
                    decision = yield from await_operation(context, tenant, connected["operation"],
                                                          float(begun["timeout_s"]), poll_seconds)
                if decision[0] != "done":
                    decision = (decision[0], f"private endpoint {step}: {decision[1]}")
                    break
        restore_seconds = (context.current_utc_datetime - started).total_seconds()
        if decision[0] == "done":
            context.set_custom_status({"stage": "checking", "server_name": server_name})
            checked = yield context.call_activity_with_retry(steps.check_restored_server, RETRY, {
                **base, "restore_seconds": restore_seconds, "sample_rate": request.get("sample_rate", 1.0)})
        else:
            how = "timed out" if decision[0] == "timeout" else "failed"
            error = f"point-in-time restore of {server_name} {how}: {decision[1]}"
    except Exception as exc:  # noqa: BLE001 - recorded as an ERROR outcome below, after the deletion
        error = _reason(exc)

    # Always delete (the finally-equivalent): a server left behind costs money and holds tenant data.
    context.set_custom_status({"stage": "deleting", "server_name": server_name, "error": error or None})
    endpoint: dict[str, Any] | None = None
    if plan.get("isolation", {}).get("mode") == pitr.NetworkMode.PRIVATE_ENDPOINT:
        # The endpoint first: it outlives its server (disconnected) and holds an address in the isolated subnet.
        try:
            gone = yield context.call_activity_with_retry(steps.delete_restored_endpoint, RETRY, base)
            endpoint = {"state": gone["state"]}
            if gone.get("operation"):
                outcome = yield from await_operation(context, tenant, gone["operation"], DELETE_TIMEOUT_S,
                                                     poll_seconds)
                endpoint = {"state": "deleted"} if outcome[0] == "done" else {
                    "state": "not confirmed", "reason": f"{outcome[1]}; check that {server_name}-pe is gone"}
        except Exception as exc:  # noqa: BLE001 - recorded; the server is still deleted below
            endpoint = {"state": "failed", "reason": _reason(exc)}
    deletion: dict[str, Any]
    try:
        deleted = yield context.call_activity_with_retry(steps.delete_restored_server, RETRY, base)
        deletion = {"state": deleted["state"]}
        if deleted.get("operation"):
            outcome = yield from await_operation(context, tenant, deleted["operation"], DELETE_TIMEOUT_S,
                                                 poll_seconds)
            deletion = {"state": "deleted"} if outcome[0] == "done" else {
                "state": "not confirmed", "reason": f"{outcome[1]}; check that {server_name} is gone"}
    except Exception as exc:  # noqa: BLE001 - recorded; the server must then be deleted by hand
        deletion = {"state": "failed", "reason": _reason(exc)}
    if endpoint is not None:
        deletion["endpoint"] = endpoint

    record = {**base, "started_at": started.isoformat(), "finished_at": context.current_utc_datetime.isoformat(),
              "point_in_time": plan.get("point_in_time"), "restore_seconds": restore_seconds,
              "checks": checked.get("checks"), "restored_bytes": checked.get("restored_bytes", 0),
              "error": error, "deletion": deletion}
    summary: dict[str, Any]
    try:
        summary = yield context.call_activity_with_retry(steps.record_pitr_validation, RETRY, record)
    except Exception as exc:  # noqa: BLE001 - report that recording failed
        summary = {"tenant": tenant, "run_id": context.instance_id, "server_name": server_name, "outcome": "error",
                   "reason": f"recording failed: {_reason(exc)}", "error": error, "deletion": deletion}
    context.set_custom_status({"stage": "done", "outcome": summary.get("outcome"), "deletion": deletion["state"]})
    return summary
