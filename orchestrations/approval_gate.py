"""The approval gate every approval-gated orchestration uses (failover, tenant recovery).

Races ``wait_for_external_event(EVENT_NAME)`` against a durable timer at the request's expiry, then
cancels the timer ("all pending timers must be complete or canceled before the function exits").
Each decision is re-judged here with the replay-safe clock (:func:`continuity.approvals.rules.decide`):
a refused one (a second approval racing the first, one arriving at the last second, a forged body)
leaves the request open, is reported through ``on_refused``, and the gate keeps waiting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from typing import Any

import azure.durable_functions as df

from continuity.approvals.rules import EVENT_NAME, ApprovalRequest, ApprovalState, Decision, decide, expire

RefusedHook = Callable[[ApprovalRequest, dict[str, Any], str], Generator[Any, Any, None]]
StatusHook = Callable[[ApprovalRequest], None]


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
