"""The approval gate every approval-gated orchestration uses (failover, tenant recovery).

Races ``wait_for_external_event(EVENT_NAME)`` against a durable timer at the request's expiry, then
cancels the timer ("all pending timers must be complete or canceled before the function exits").
Each decision is re-judged here with the replay-safe clock (:func:`continuity.approvals.rules.decide`):
a refused one (a second approval racing the first, one arriving at the last second, a forged body)
leaves the request open, is reported through ``on_refused``, and the gate keeps waiting.

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

from continuity.approvals.rules import EVENT_NAME, ApprovalRequest, ApprovalState, Decision, decide, expire
from continuity.kernel.events import EventType

RefusedHook = Callable[[ApprovalRequest, dict[str, Any], str], Generator[Any, Any, None]]
StatusHook = Callable[[ApprovalRequest], None]


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
        parsed = _parse(event.result)
        if isinstance(parsed, str):
            yield from on_refused(request, {"raw": str(event.result)[:500]}, parsed)
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
        who = decision.get("by", {}).get("name", "unknown")
        yield from record(f"{kind}.refused", who, {"reason": reason, "decision": decision, "executed": False},
                          key=f"refused:{decision.get('id', context.new_uuid())}")

    decided = yield from await_decision(context, request, on_refused=on_refused, on_status=on_status)
    if decided.state is ApprovalState.EXPIRED:
        yield from record(f"{kind}.expired", context.instance_id, {"expires_at": decided.expires_at.isoformat()})
        return NotApproved(decided.state, f"no decision before {decided.expires_at.isoformat()}")
    decision = decided.decision
    assert decision is not None
    if decided.state is ApprovalState.REJECTED:
        yield from record(f"{kind}.rejected", decision.by.name, {"decision": decision.to_json()})
        return NotApproved(decided.state, f"rejected by {decision.by.name}: {decision.comment}")
    yield from record(f"{kind}.approved", decision.by.name, {"decision": decision.to_json()},
                      approved_event, approved_by=decision.by.name)
    return decision
