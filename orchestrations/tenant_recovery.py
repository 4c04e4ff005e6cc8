"""Tenant recovery: confirm backup → stage beside live → checks → wait for approval or expiry → fence tenant
→ swap → reopen → verify → backup of the recovered state → evidence.

Instance id ``recovery-{tenant}`` (one per tenant). Deterministic: the clock is
``context.current_utc_datetime``, the database names and marker are fixed by the trigger and arrive in
the input, every side effect is an idempotent activity. The approval is the shared gate
(:mod:`orchestrations.approval_gate`, kind ``recovery``). Any failure after the fence rolls the cutover
back to the live database as it was; a failure before it only drops the staged copy. A drill stops
after verifying the staged copy and drops it: the live database is never touched.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from activities import recovery as steps
from continuity.approvals.rules import open_request
from continuity.kernel.events import EventType
from continuity.kernel.steps import StepTiming, timings
from continuity.recovery.rules import MILESTONES, RecoveryState
from orchestrations.approval_gate import NotApproved, await_approval
from orchestrations.workflow_record import WorkflowRecord

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


@bp.orchestration_trigger(context_name="context")
def tenant_recovery(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    inp: dict[str, Any] = context.get_input()
    request: dict[str, Any] = inp["request"]
    run_id: str = inp["run_id"]
    iid = context.instance_id
    tenant: str = request["tenant"]
    drill = bool(request.get("drill"))
    requested_at = datetime.fromisoformat(request["requested_at"])
    base = {"tenant": tenant, "run_id": run_id, "backup_id": request["backup_id"], "names": inp["names"],
            "marker": inp["marker"], "drill": drill}
    status: dict[str, Any] = {"state": str(RecoveryState.PICKING), "run_id": run_id, "tenant": tenant,
                              "request": request, "databases": inp["names"], "backup": None, "data_loss": None,
                              "checks": None, "approval": None, "steps": [], "timings": {}, "unavailable": None,
                              "chain_head": None, "reason": None}

    recorder = WorkflowRecord(context, status, steps.record_recovery_evidence, RETRY, tenant=tenant,
                              event_data={"recovery": iid, "run_id": run_id, "backup_id": request["backup_id"],
                                          "drill": drill})
    show, record = recorder.show, recorder.record

    unrecorded: list[tuple[int, dict[str, Any]]] = []

    def record_steps() -> Generator[Any, Any, None]:
        while unrecorded:
            index, result = unrecorded.pop(0)
            yield from record(f"recovery.step.{result['step']}", iid, result, key=f"step:{result['step']}:{index}")

    def run(activity: Any, payload: dict[str, Any], defer: bool = False) -> Generator[Any, Any, dict[str, Any]]:
        """One step; its evidence is appended at once, or (``defer``, while the tenant is fenced) after the
        cutover so the tenant is not kept offline by bookkeeping. Custom status shows it at once either way."""
        result: dict[str, Any] = yield context.call_activity_with_retry(activity, RETRY, payload)
        show(steps=[*status["steps"], result])
        unrecorded.append((len(status["steps"]), result))
        if not defer:
            yield from record_steps()
        return result

    def finish(state: RecoveryState, reason: str | None, event: EventType,
               approved_at: datetime | None) -> Generator[Any, Any, dict[str, Any]]:
        records = [StepTiming.from_json(s) for s in status["steps"]]
        measured = timings(requested_at, approved_at, records, context.current_utc_datetime, MILESTONES)
        # The window the cutover recorded durably (fence → reopen, across crashes) beats the one derived
        # from step boundaries: it is what the tenant actually saw.
        window = next((s["data"]["unavailable"] for s in reversed(status["steps"])
                       if isinstance(s.get("data"), dict) and s["data"].get("unavailable")), None)
        if window is not None and window.get("seconds") is not None:
            measured["tenant_unavailable"] = window["seconds"]
        show(timings=measured, unavailable=window)
        action = f"recovery.{state.lower()}"
        yield from record(action, iid, {"reason": reason, "timings": status["timings"],
                                        "unavailable": status["unavailable"], "databases": inp["names"]},
                          event, state=str(state), reason=reason, timings=status["timings"])
        # The final state is shown last: whoever sees it can rely on the evidence being written.
        show(state=str(state), reason=reason)
        return {"state": str(state), "reason": reason, "timings": status["timings"],
                "chain_head": status["chain_head"]}

    def drop_staged() -> Generator[Any, Any, str | None]:
        try:
            yield from run(steps.drop_staged_copy, base)
        except Exception as exc:  # noqa: BLE001 - reported; the staged copy is named for a person to drop
            return f"; the staged copy {inp['names']['staged']} could not be dropped: {_reason(exc)}"
        return None

    def stop_before_cutover(state: RecoveryState, reason: str, approved_at: datetime | None
                            ) -> Generator[Any, Any, dict[str, Any]]:
        note = yield from drop_staged()
        return (yield from finish(state, reason + (note or ""), EventType.RECOVERY_FAILED, approved_at))

    yield from record("recovery.requested", request["requested_by"], {"request": request, "databases": inp["names"]},
                      EventType.RECOVERY_REQUESTED, requested_by=request["requested_by"], reason=request["reason"])
    if request.get("to"):
        # Point in time: no backup holds that second; the server is rewound in the sandbox and the tenant's
        # database taken out of it becomes the (cataloged) backup the rest of the workflow recovers to.
        show(state=str(RecoveryState.REWINDING))
        try:
            rewound = yield from run(steps.rewind_tenant, {**base, "to": request["to"]})
        except Exception as exc:  # noqa: BLE001 - nothing has been changed yet
            return (yield from finish(RecoveryState.FAILED, f"the point-in-time rewind failed: {_reason(exc)}",
                                      EventType.RECOVERY_FAILED, None))
        if not rewound["ok"]:
            return (yield from finish(RecoveryState.FAILED, rewound["detail"], EventType.RECOVERY_FAILED, None))
        base = {**base, "backup_id": rewound["data"]["extract"]["backup_id"], "point_in_time": True}
    try:
        confirmed = yield context.call_activity_with_retry(steps.confirm_recovery_backup, RETRY, base)
    except Exception as exc:  # noqa: BLE001 - nothing has been changed yet
        return (yield from finish(RecoveryState.FAILED, f"the backup cannot be used: {_reason(exc)}",
                                  EventType.RECOVERY_FAILED, None))
    show(backup={**confirmed["backup"], "manifest": confirmed["manifest"], "choice": request.get("choice")},
         state=str(RecoveryState.STAGING))

    try:
        staged = yield from run(steps.stage_recovery, base)
    except Exception as exc:  # noqa: BLE001 - the live database has not been touched
        return (yield from stop_before_cutover(RecoveryState.FAILED, f"staging failed: {_reason(exc)}", None))
    if not staged["ok"]:
        return (yield from stop_before_cutover(RecoveryState.FAILED, staged["detail"], None))

    show(state=str(RecoveryState.CHECKING))
    try:
        checked = yield from run(steps.check_staged_copy, {**base, "restore": staged["data"]["restore"]})
    except Exception as exc:  # noqa: BLE001
        return (yield from stop_before_cutover(RecoveryState.FAILED, f"checks failed to run: {_reason(exc)}", None))
    show(checks=checked["data"]["checks"], data_loss=checked["data"]["data_loss"])
    if not checked["ok"]:
        return (yield from stop_before_cutover(RecoveryState.REFUSED, checked["detail"], None))

    approval = open_request(request_id=iid, kind="recovery", subject=tenant, requested_by=request["requested_by"],
                            requested_at=context.current_utc_datetime, window_minutes=float(inp["window_minutes"]),
                            run_id=run_id, requester_ids=request.get("requester_ids", ()),
                            shown={"request": request, "databases": inp["names"], "backup": status["backup"],
                                   "checks": status["checks"], "data_loss": status["data_loss"]})
    show(state=str(RecoveryState.AWAITING_APPROVAL))

    outcome = yield from await_approval(context, approval, kind="recovery", record=record, show=show,
                                        approved_event=EventType.RECOVERY_APPROVED)
    if isinstance(outcome, NotApproved):
        return (yield from stop_before_cutover(RecoveryState(outcome.state), outcome.reason, None))
    decision = outcome
    show(state=str(RecoveryState.CUTTING_OVER))

    if drill:
        # No try/finally around yields (a suspended generator is closed between replays): cleanup is an
        # explicit step on every path.
        failure: str | None = None
        try:
            verified = yield from run(steps.verify_recovery, base)
            failure = None if verified["ok"] else verified["detail"]
        except Exception as exc:  # noqa: BLE001
            failure = _reason(exc)
        note = yield from drop_staged()
        if failure:
            return (yield from finish(RecoveryState.FAILED, failure + (note or ""), EventType.RECOVERY_FAILED,
                                      decision.at))
        return (yield from finish(RecoveryState.COMPLETED, note, EventType.RECOVERY_COMPLETED, decision.at))

    failure = None
    for activity, defer in ((steps.fence_tenant_database, True), (steps.swap_tenant_database, True),
                            (steps.reopen_tenant_database, False), (steps.verify_recovery, False)):
        try:
            result = yield from run(activity, base, defer=defer)
        except Exception as exc:  # noqa: BLE001 - an activity failure arrives as an exception: roll back
            failure = _reason(exc)
            break
        if not result["ok"]:
            failure = result["detail"]
            break
    yield from record_steps()
    if failure:
        try:
            back = yield from run(steps.rollback_recovery, base)
            failure += f"; {back['detail']}"
        except Exception as exc:  # noqa: BLE001 - the evidence says a person must look
            failure += f"; ROLLBACK FAILED, a person must look at the tenant's databases: {_reason(exc)}"
        return (yield from finish(RecoveryState.FAILED, failure, EventType.RECOVERY_FAILED, decision.at))

    follow_up: str | None = None
    try:
        taken = yield from run(steps.backup_recovered_state, base)
        if not taken["ok"]:
            follow_up = taken["detail"]
    except Exception as exc:  # noqa: BLE001 - the tenant is recovered; only the follow-up backup is missing
        follow_up = (f"recovered, but the backup of the recovered state failed ({_reason(exc)}); run "
                     f"`continuity backup {tenant}` so the next nightly validates the recovered state")
    return (yield from finish(RecoveryState.COMPLETED, follow_up, EventType.RECOVERY_COMPLETED, decision.at))
