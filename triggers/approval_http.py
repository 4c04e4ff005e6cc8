"""HTTP approve/reject shared by every approval-gated workflow (failover now, tenant recovery next).

``decide(req, client, verdict, kind)``: authenticate the caller, read the open request from the
orchestration's custom status (``{"approval": ApprovalRequest JSON, ...}``), judge the decision with
the pure rules, and on a refusal answer 4xx and record it in the evidence chain. Otherwise raise
the decision as the external event and wait briefly for the orchestration, which judges it again with
its replay-safe clock, to take it (or refuse it, e.g. a second approval that lost a race).

``start_workflow(...)``: start the gated orchestration; an instance that already exists is a 409, recorded.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from continuity.approvals import service as approval_service
from continuity.approvals.rules import (
    EVENT_NAME,
    MAX_COMMENT_CHARS,
    ApprovalRequest,
    ApprovalState,
    Verdict,
    refusal_error,
)
from continuity.kernel import settings
from continuity.kernel.errors import ApprovalRefused, ConfigError, Conflict, ContinuityError, InvalidRequest
from continuity.kernel.identity import Principal
from triggers.common import json_response, parse_body

ACCEPT_WAIT_SECONDS = 10.0
ACK_PATTERN = r"^[a-z][a-z_]{1,40}$"


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field("", max_length=MAX_COMMENT_CHARS)
    acknowledge: list[str] = Field(default_factory=list, max_length=10)


class NotFound(ContinuityError):
    code = "not_found"
    http_status = 404


def open_request(status: Any, instance: str, kind: str) -> ApprovalRequest:
    """The approval request in an orchestration status.

    :raises NotFound: no such workflow. :raises Conflict: it has not reached (or has left) the approval wait.
    """
    if status is None or status.runtime_status is None:
        raise NotFound(f"no {kind} {instance[:80]!r}; list or request one first")
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    raw = custom.get("approval")
    if not raw:
        state = custom.get("state", str(status.runtime_status))
        raise Conflict(f"{instance} is not awaiting approval (state {state}); wait for its preflight to finish")
    return ApprovalRequest.from_json(raw)


async def decide(req: func.HttpRequest, client: df.DurableOrchestrationClient, verdict: Verdict,
                 kind: str, principal: Principal, status_url: str | None = None) -> func.HttpResponse:
    instance = req.route_params.get("id", "")
    try:
        body = parse_body(req, DecisionBody)
        for ack in body.acknowledge:
            if not re.match(ACK_PATTERN, ack):
                raise InvalidRequest(f"field acknowledge: {ack[:40]!r} is not an acknowledgement name")
        request = open_request(await client.get_status(instance), instance, kind)
    except ContinuityError as exc:
        approval_service.record_refusal(kind, instance or "unknown", principal.name, str(exc), exc.code,
                                        {"verdict": str(verdict)})
        raise
    decision = approval_service.new_decision(verdict, principal, body.comment, body.acknowledge)
    error = refusal_error(request, decision, datetime.now(UTC))
    if error is not None:
        approval_service.record_decision_refusal(request, decision, error)
        raise error
    await client.raise_event(instance, EVENT_NAME, decision.to_json())
    outcome = await _wait_taken(client, instance, decision.id, kind)
    url = status_url or f"/api/{kind}s/{instance}"
    return json_response({"id": instance, "decision_id": decision.id, "verdict": str(verdict),
                          "state": outcome, "status_url": url}, status=202, headers={"Location": url})


async def _wait_taken(client: df.DurableOrchestrationClient, instance: str, decision_id: str, kind: str) -> str:
    """Wait until the orchestration has taken or refused our decision; returns the approval state."""
    deadline = asyncio.get_running_loop().time() + ACCEPT_WAIT_SECONDS
    while True:
        status = await client.get_status(instance)
        custom = status.custom_status if status is not None and isinstance(status.custom_status, dict) else {}
        approval = custom.get("approval") or {}
        taken = (approval.get("decision") or {}).get("id")
        if taken == decision_id:
            return str(approval.get("state"))
        for refusal in approval.get("refusals", []):
            if refusal.get("decision_id") == decision_id:
                raise ApprovalRefused(refusal["reason"])
        if taken is not None or approval.get("state") not in (None, str(ApprovalState.PENDING)):
            raise Conflict(f"{instance} was decided by someone else first ({approval.get('state')}): "
                           "one decision only")
        if asyncio.get_running_loop().time() > deadline:
            return "SUBMITTED"  # the orchestration has not run yet; GET the status URL to follow it
        await asyncio.sleep(0.05)


async def start_workflow(client: df.DurableOrchestrationClient, orchestration: str, instance: str, payload: Any, *,
                         kind: str, principal: Principal, conflict: str) -> None:
    """Start ``orchestration`` as ``instance``; one that already exists is a refusal, answered and recorded.

    The running-check before the start can race another request for the same instance: the host then
    refuses the second start, and that caller gets the same 409 as if it had seen the first one running.

    :raises Conflict: an instance with that id already exists (``conflict`` is the message); the refusal
        is recorded in the evidence chain as a ``kind`` refusal by ``principal``.
    """
    try:
        await client.start_new(orchestration, instance, payload)
    except Exception as exc:  # the client raises a bare Exception carrying the host's answer
        if "already exists" not in str(exc):
            raise
        refused = Conflict(conflict)
        approval_service.record_refusal(kind, instance, principal.name, str(refused), refused.code)
        raise refused from exc


def runtime_of(status: Any) -> str | None:
    """An instance's runtime status as text, or None when there is no such instance."""
    if status is None or status.runtime_status is None:
        return None
    return str(getattr(status.runtime_status, "value", status.runtime_status))


def approval_window_minutes() -> float:
    """How long a request waits for its decision (CONTINUITY_APPROVAL_WINDOW_MINUTES, fractions allowed)."""
    raw = settings.get("CONTINUITY_APPROVAL_WINDOW_MINUTES")
    try:
        window = float(raw)
    except ValueError:
        window = 0.0
    if window <= 0:
        raise ConfigError(f"CONTINUITY_APPROVAL_WINDOW_MINUTES must be a positive number of minutes, got {raw!r}")
    return window


def authenticate(req: func.HttpRequest) -> Principal:
    """The caller of a request (platform principal or local API key)."""
    return approval_service.authenticate_headers(dict(req.headers))
