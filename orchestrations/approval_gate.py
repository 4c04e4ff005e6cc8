"""The approval gate every approval-gated orchestration uses (failover, tenant recovery).

Races ``wait_for_external_event(EVENT_NAME)`` against a durable timer at the request's expiry, then
cancels the timer ("all pending timers must be complete or canceled before the function exits").
Every event is first verified by the ``verify_decision`` activity (the MAC key never enters this history):
only a decision the approve/reject route made for this instance, this run and this preflight digest, dated
between the request and its expiry, counts; anything else is an attempted bypass. A verified decision is
then re-judged with the replay-safe clock (:func:`continuity.approvals.rules.decide`). A refused one (a
bypass, a second approval racing the first, one arriving at the last second) leaves the request open, is
reported through ``on_refused``, and the gate keeps waiting.

:func:`await_approval` is that wait as a workflow runs it: every refusal, the expiry, the rejection or
the approval goes to the evidence chain as ``{kind}.refused|expired|rejected|approved``, and the caller
gets the approving decision, or :class:`NotApproved` saying why it stops.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import azure.durable_functions as df

from activities.approvals import verify_decision
from continuity.approvals.rules import (
    BYPASS,
    EVENT_NAME,
    ApprovalRequest,
    ApprovalState,
    Decision,
    decide,
    expire,
    remember_refusal,
)
from continuity.kernel.events import EventType

RefusedHook = Callable[[ApprovalRequest, dict[str, Any], str], Generator[Any, Any, None]]
StatusHook = Callable[[ApprovalRequest], None]
VERIFY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=500, max_number_of_attempts=3)
UNVERIFIED = "the decision could not be verified"  # the check itself failed: its sender is unknown too


class Recorder(Protocol):
    """An orchestration's evidence step: appends ``action`` by ``actor`` (an activity), optionally raising ``event``."""

    def __call__(self, action: str, actor: str, data: dict[str, Any], event: EventType | None = None,
                 key: str | None = None, **event_data: Any) -> Generator[Any, Any, None]: ...


@dataclass(frozen=True)
class NotApproved:
    """The gate closed without an approval: ``state`` is EXPIRED or REJECTED, ``reason`` the workflow's final word."""

    state: ApprovalState
    reason: str


def _parse(raw: Any) -> Decision | str:
    try:
        payload = json.loads(raw) if isinstance(raw, str) else raw
        return Decision.from_json(payload)
    except (ValueError, KeyError, TypeError) as exc:
        return f"malformed decision event ({type(exc).__name__}: {str(exc)[:120]})"


def await_decision(context: df.DurableOrchestrationContext, request: ApprovalRequest, *,
                   on_refused: RefusedHook, on_status: StatusHook) -> Generator[Any, Any, ApprovalRequest]:
    """Wait for the one decision that closes ``request``, or its expiry; returns the closed request."""
    expiry = context.create_timer(request.expires_at)
    on_status(request)
    while True:
        event = context.wait_for_external_event(EVENT_NAME)
        winner = yield context.task_any([event, expiry])
        if winner == expiry:
            closed = expire(request)
            on_status(closed)
            return closed
        now = context.current_utc_datetime
        parsed = _parse(event.result)
        if isinstance(parsed, str):
            reason = f"{BYPASS}: {parsed}; nothing was decided"
            request = remember_refusal(request, "", "unverified", "", now, reason)
            on_status(request)
            yield from on_refused(request, {"raw": str(event.result)[:500]}, reason)
            continue
        try:
            checked = yield context.call_activity_with_retry(verify_decision, VERIFY_RETRY, {
                "decision": parsed.to_event(), "request": request.to_json()})
            refusal = checked.get("refusal") if isinstance(checked, dict) else "the check answered nothing"
        except Exception as exc:  # noqa: BLE001 - an activity failure arrives as an exception; the request stays open
            refusal = f"{UNVERIFIED} ({str(exc)[:200]}); decide again"
        if refusal:
            request = remember_refusal(request, parsed.id, parsed.by.name, str(parsed.verdict), now, refusal)
            on_status(request)
            yield from on_refused(request, parsed.to_json(), refusal)
            continue
        after = decide(request, parsed, context.current_utc_datetime)
        if after.state is ApprovalState.PENDING:
            request = after
            on_status(request)
            yield from on_refused(request, parsed.to_json(), request.refusals[-1]["reason"])
            continue
        expiry.cancel()
        on_status(after)
        return after


def await_approval(context: df.DurableOrchestrationContext, request: ApprovalRequest, *, kind: str,
                   record: Recorder, show: Callable[..., None],
                   approved_event: EventType) -> Generator[Any, Any, Decision | NotApproved]:
    """Wait for ``request`` to be decided or to expire, with every outcome recorded as ``{kind}.*`` evidence.

    The approval's current JSON is shown as custom status ``approval``. Returns the approving decision
    (recorded with ``approved_event``), or :class:`NotApproved` after recording the expiry or rejection.
    """

    def on_status(current: ApprovalRequest) -> None:
        show(approval=current.to_json())

    def on_refused(current: ApprovalRequest, decision: dict[str, Any], reason: str) -> Generator[Any, Any, None]:
        if reason.startswith((BYPASS, UNVERIFIED)):
            # Whoever sent it is unknown: the names in a forged decision are the attacker's words, kept as data.
            yield from record(f"{kind}.refused", "unverified", {
                "reason": reason, "claimed": decision, "run_id": current.run_id, "executed": False},
                key=f"bypass:{context.new_uuid()}")
            return
        by = decision.get("by")
        who = str(by.get("name", "unknown")) if isinstance(by, dict) else "unknown"
        yield from record(f"{kind}.refused", who, {"reason": reason, "decision": decision, "executed": False},
                          key=f"refused:{decision.get('id') or context.new_uuid()}")

    decided = yield from await_decision(context, request, on_refused=on_refused, on_status=on_status)
    if decided.state is ApprovalState.EXPIRED:
        yield from record(f"{kind}.expired", context.instance_id, {"expires_at": decided.expires_at.isoformat()})
        return NotApproved(decided.state, f"no decision before {decided.expires_at.isoformat()}")
    decision = decided.decision
    assert decision is not None
    proof = {"decision": decision.to_json(), "principal_id": decision.by.id, "run_id": decided.run_id,
             "digest": decided.digest, "mac_verified": True}
    if decided.state is ApprovalState.REJECTED:
        yield from record(f"{kind}.rejected", decision.by.name, proof)
        return NotApproved(decided.state, f"rejected by {decision.by.name}: {decision.comment}")
    yield from record(f"{kind}.approved", decision.by.name, proof, approved_event, approved_by=decision.by.name)
    return decision
