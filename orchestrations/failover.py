"""Regional failover: preflight → wait for approval or expiry → fence → promote → repoint → verify → evidence.

Instance id ``failover-{scope}`` (one per scope). Deterministic: the clock is
``context.current_utc_datetime``, settings arrive in the input, every side effect is an idempotent
activity. A drill copies the replica into the sandbox and promotes the copy: no fence, no repoint.
Never two writable primaries: promote runs only after a fence the pure rule accepts, and the promote
activity re-checks the old primary right before promoting.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from activities import failover as steps
from continuity.approvals.rules import ApprovalState, open_request
from continuity.failover.rules import MILESTONES, FailoverState, FenceResult, promotion_refusal
from continuity.kernel.events import EventType
from continuity.kernel.steps import StepTiming, timings
from orchestrations.approval_gate import NotApproved, await_approval
from orchestrations.workflow_record import WorkflowRecord

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)


@bp.orchestration_trigger(context_name="context")
def failover(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    inp: dict[str, Any] = context.get_input()
    request = inp["request"]
    run_id: str = inp["run_id"]
    iid = context.instance_id
    tenant = None if request["scope"] == "platform" else request["scope"]
    requested_at = datetime.fromisoformat(request["requested_at"])
    status: dict[str, Any] = {"state": str(FailoverState.PREFLIGHT), "run_id": run_id, "request": request,
                              "plan": None, "preflight": [], "approval": None, "steps": [], "timings": {},
                              "chain_head": None, "reason": None}

    recorder = WorkflowRecord(context, status, steps.record_failover_evidence, RETRY, tenant=tenant,
                              event_data={"failover": iid, "run_id": run_id})
    show, record = recorder.show, recorder.record

    def finish(state: FailoverState, reason: str | None, event: EventType,
               approved_at: datetime | None) -> Generator[Any, Any, dict[str, Any]]:
        records = [StepTiming.from_json(s) for s in status["steps"]]
        # The final state is shown last: whoever sees it can rely on the bundle and evidence being written.
        show(timings=timings(requested_at, approved_at, records, context.current_utc_datetime, MILESTONES))
        bundle = yield context.call_activity_with_retry(steps.write_failover_bundle, RETRY, {
            "instance_id": iid, "run_id": run_id,
            "bundle": {**status, "state": str(state), "reason": reason, "instance_id": iid}})
        action = f"failover.{state.lower()}"
        yield from record(action, iid, {"reason": reason, "timings": status["timings"], "bundle": bundle},
                          event, state=str(state), reason=reason, timings=status["timings"], bundle=bundle)
        show(state=str(state), reason=reason, bundle=bundle)
        return {"state": str(state), "reason": reason, "timings": status["timings"], "bundle": bundle,
                "chain_head": status["chain_head"]}

    yield from record("failover.requested", request["requested_by"], {"request": request},
                      EventType.FAILOVER_REQUESTED, scope=request["scope"], target_region=request["target_region"],
                      drill=request["drill"])
    try:
        pre = yield context.call_activity_with_retry(steps.failover_preflight, RETRY, {"run_id": run_id,
                                                                                       "request": request})
    except Exception as exc:  # noqa: BLE001 - an activity failure arrives as an exception; record it and stop
        return (yield from finish(FailoverState.FAILED, f"preflight failed: {str(exc)[:300]}",
                                  EventType.FAILOVER_FAILED, None))
    show(plan=pre["plan"], preflight=pre["preflight"])
    yield from record("failover.preflight", iid, {"plan": pre["plan"], "preflight": pre["preflight"],
                                                  "refusal": pre["refusal"]})
    if pre["refusal"]:
        return (yield from finish(FailoverState.REFUSED, pre["refusal"], EventType.FAILOVER_FAILED, None))

    approval = open_request(request_id=iid, kind="failover", subject=request["scope"],
                            requested_by=request["requested_by"], requested_at=context.current_utc_datetime,
                            window_minutes=float(inp["window_minutes"]),
                            acknowledgements=pre["required_acknowledgements"], run_id=run_id,
                            requester_ids=request.get("requester_ids", ()),
                            shown={"request": request, "plan": pre["plan"], "preflight": pre["preflight"]})
    show(state=str(FailoverState.AWAITING_APPROVAL))

    outcome = yield from await_approval(context, approval, kind="failover", record=record, show=show,
                                        approved_event=EventType.FAILOVER_APPROVED)
    if isinstance(outcome, NotApproved):
        event = (EventType.FAILOVER_EXPIRED if outcome.state is ApprovalState.EXPIRED
                 else EventType.FAILOVER_REJECTED)
        return (yield from finish(FailoverState(outcome.state), outcome.reason, event, None))
    decision = outcome
    show(state=str(FailoverState.EXECUTING))
    acks = sorted(decision.acknowledgements)
    base = {"instance_id": iid, "run_id": run_id, "plan": pre["plan"], "acknowledgements": acks,
            "fence_mode": inp["fence_mode"]}

    def run(activity: Any, payload: dict[str, Any]) -> Generator[Any, Any, dict[str, Any]]:
        result: dict[str, Any] = yield context.call_activity_with_retry(activity, RETRY, payload)
        show(steps=[*status["steps"], result])
        yield from record(f"failover.step.{result['step']}", iid, result, key=f"step:{result['step']}")
        return result

    try:
        if request["drill"]:
            # No try/finally around yields: a suspended generator is closed between replays, and a
            # yield in its finally would run then. Cleanup is an explicit step on every path instead.
            failure: str | None = None
            for activity in (steps.drill_copy, steps.drill_promote, steps.drill_verify):
                try:
                    result = yield from run(activity, base)
                except Exception as exc:  # noqa: BLE001 - an activity failure arrives as an exception
                    failure = str(exc)[:500]
                    break
                if not result["ok"]:
                    failure = result["detail"]
                    break
            yield context.call_activity_with_retry(steps.drill_cleanup, RETRY, base)
            state = FailoverState.FAILED if failure else FailoverState.COMPLETED
            event = EventType.FAILOVER_FAILED if failure else EventType.FAILOVER_COMPLETED
            return (yield from finish(state, failure, event, decision.at))

        fenced = yield from run(steps.fence_primary, base)
        fences = fenced["data"]["fences"]
        refusals = [promotion_refusal(FenceResult.from_json(f), frozenset(acks), drill=False) for f in fences]
        refused = [r for r in refusals if r]
        if refused:
            return (yield from finish(FailoverState.FAILED, "; ".join(refused), EventType.FAILOVER_FAILED,
                                      decision.at))
        for activity, payload in ((steps.promote_replica, {**base, "fences": fences}), (steps.repoint_routing, base),
                                  (steps.verify_failover, base)):
            result = yield from run(activity, payload)
            if not result["ok"]:
                return (yield from finish(FailoverState.FAILED, result["detail"], EventType.FAILOVER_FAILED,
                                          decision.at))
    except Exception as exc:  # noqa: BLE001 - an activity failure arrives as an exception; record it and stop
        return (yield from finish(FailoverState.FAILED, str(exc)[:500], EventType.FAILOVER_FAILED, decision.at))
    return (yield from finish(FailoverState.COMPLETED, None, EventType.FAILOVER_COMPLETED, decision.at))
