"""HTTP approve/reject shared by every approval-gated workflow (failover now, tenant recovery next).

``decide(req, client, verdict, kind, orchestration)``: the one authorization rule of every approve/reject
route. Authenticate the caller; the instance must be of the route's kind (``failover-…`` on the failover
routes, ``recovery-…`` on the recovery routes, and run by that orchestration) and inside the caller's scope
(a tenant's, or ``platform`` for unscoped callers only); read the open request from the orchestration's
custom status (``{"approval": ApprovalRequest JSON, ...}``); a ``digest`` in the body must be the one the
request shows; judge the decision with the pure rules. Every refusal is answered 4xx and recorded in the
evidence chain. Otherwise record the decision (``{kind}.decided``), sign it (HMAC over instance, run,
digest, verdict, principal id and server time, keyed from the secret store) and raise it as the external
event; then wait briefly for the orchestration, which verifies and judges it again with its replay-safe
clock, to take it (or refuse it, e.g. a second approval that lost a race).

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
    DIGEST_PATTERN,
    EVENT_NAME,
    MAX_COMMENT_CHARS,
    ApprovalRequest,
    ApprovalState,
    Verdict,
    refusal_error,
)
from continuity.kernel import settings
from continuity.kernel.errors import (
    ApprovalRefused,
    ConfigError,
    Conflict,
    ContinuityError,
    Forbidden,
    InvalidRequest,
    Unauthorized,
)
from continuity.kernel.identity import Principal, Role, require_scope, require_tenant
from triggers.common import authorize, json_response, parse_body

ACCEPT_WAIT_SECONDS = 10.0
ACK_PATTERN = r"^[a-z][a-z_]{1,40}$"


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field("", max_length=MAX_COMMENT_CHARS)
    acknowledge: list[str] = Field(default_factory=list, max_length=10)
    digest: str | None = Field(None, pattern=DIGEST_PATTERN,
                               description="the approval's digest as shown by GET (approval.digest): the decision "
                                           "is refused 409 if the request is no longer the one you saw")


class NotFound(ContinuityError):
    code = "not_found"
    http_status = 404


class NotJson(ContinuityError):
    code = "unsupported_media_type"
    http_status = 415


def require_json(req: func.HttpRequest) -> None:
    """A decision's body must be declared ``application/json`` (CSRF): a page on another origin can make a
    browser POST a form or ``text/plain`` with the user's session, but not ``application/json`` without a CORS
    preflight that this host never grants.

    :raises NotJson: any other or no ``Content-Type``.
    """
    media = (req.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise NotJson(f"a decision is sent as Content-Type application/json, not {media[:60] or 'nothing'!r} "
                      "(a form or text post is refused: CSRF)")


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


def _route_rule(principal: Principal, instance: str, kind: str) -> str:
    """The kind and scope part of a decision route's rule; returns the instance's scope (tenant or ``platform``).

    :raises Forbidden: the instance is not of this route's kind, or outside the caller's scope.
    """
    prefix = f"{kind}-"
    if not instance.startswith(prefix):
        raise Forbidden(f"{instance[:80]!r} is not a {kind}; a {kind} route decides {kind}s only")
    scope = instance.removeprefix(prefix)
    if kind == "failover":
        require_scope(principal, scope, f"decide the {scope} failover")
    else:
        require_tenant(principal, scope)
    return scope


async def decide(req: func.HttpRequest, client: df.DurableOrchestrationClient, verdict: Verdict, kind: str, *,
                 orchestration: str, status_url: str | None = None) -> func.HttpResponse:
    """Approve or reject the ``kind`` instance named by the route (see the module docstring for the rule).

    :raises Unauthorized: no usable credential (recorded). :raises Forbidden: wrong kind or scope (recorded).
    """
    instance = req.route_params.get("id", "")
    subject = instance[:80] or "unknown"
    try:
        principal = authorize(req, Role.READER, f"decide {kind}s")
    except Unauthorized as exc:
        approval_service.record_refusal(kind, subject, "unauthenticated", str(exc), exc.code,
                                        {"verdict": str(verdict)})
        raise
    try:
        require_json(req)
        scope = _route_rule(principal, instance, kind)
        body = parse_body(req, DecisionBody)
        for ack in body.acknowledge:
            if not re.match(ACK_PATTERN, ack):
                raise InvalidRequest(f"field acknowledge: {ack[:40]!r} is not an acknowledgement name")
        status = await client.get_status(instance)
        name = getattr(status, "name", None) if status is not None else None
        if status is not None and status.runtime_status is not None and name not in (None, orchestration):
            raise Forbidden(f"{instance} is run by {str(name)[:60]!r}, not the {kind} workflow: not a {kind}")
        request = open_request(status, instance, kind)
        if request.kind != kind or request.subject != scope:
            raise Forbidden(f"{instance} awaits a {request.kind} decision on {request.subject!r}: not this route's")
        if body.digest is not None and body.digest != request.digest:
            raise Conflict(f"{instance} now shows preflight digest {request.digest}, not {body.digest} that you "
                           "decided on (another run, or the preflight changed); read it again with GET first")
    except ContinuityError as exc:
        approval_service.record_refusal(kind, subject, principal.name, str(exc), exc.code,
                                        {"verdict": str(verdict), "principal_id": principal.id})
        raise
    decision = approval_service.new_decision(verdict, principal, body.comment, body.acknowledge, request=request)
    error = refusal_error(request, decision, datetime.now(UTC))
    if error is not None:
        approval_service.record_decision_refusal(request, decision, error)
        raise error
    approval_service.record_decision(request, decision)
    await client.raise_event(instance, EVENT_NAME, approval_service.sign(decision).to_event())
    outcome = await _wait_taken(client, instance, decision.id, kind)
    url = status_url or f"/api/{kind}s/{instance}"
    return json_response({"id": instance, "decision_id": decision.id, "verdict": str(verdict),
                          "run_id": request.run_id, "digest": request.digest, "state": outcome, "status_url": url},
                         status=202, headers={"Location": url})


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
