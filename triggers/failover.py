"""``/api/failovers``: request a regional failover, approve or reject it, follow it.

POST /api/failovers {scope, target_region, reason, drill} → 202 + status URL (instance ``failover-{scope}``);
POST /api/failovers/{id}/approve|reject {comment, acknowledge} ; GET /api/failovers/{id}.
Callers are local users (X-Continuity-Key) or, with platform authentication, Entra ID principals.
Every refusal after authentication is answered 4xx and recorded in the evidence chain.

Who may: request, an operator whose scope covers the failover's scope (``platform``: unscoped callers only);
approve or reject, the shared rule of :func:`triggers.approval_http.decide` (a failover instance, inside the
caller's scope; approver role, or the requester withdrawing); read, a reader within the same scope.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from continuity.approvals import service as approval_service
from continuity.approvals.rules import Verdict
from continuity.failover.rules import MAX_REASON_CHARS, SCOPE_PATTERN, instance_id, plan_failover
from continuity.kernel import settings
from continuity.kernel.errors import Conflict, ContinuityError
from continuity.kernel.identity import Role, require_role, require_scope
from continuity.kernel.tenants import REGION_PATTERN
from triggers import approval_http
from triggers.api_docs import document
from triggers.common import authorize, handles_errors, json_response, parse_body

bp = df.Blueprint()

RUNNING = {"Pending", "Running", "ContinuedAsNew"}


class FailoverBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str = Field(pattern=SCOPE_PATTERN, description="a tenant id, or 'platform'")
    target_region: str = Field(pattern=REGION_PATTERN)
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)
    drill: bool = False


class Accepted(BaseModel):
    id: str
    run_id: str | None = None
    state: str
    status_url: str


document("failovers", "POST", "Request a regional failover (preflight, then wait for a second person's approval)",
         "requestFailover", request=FailoverBody, responses={202: Accepted})
document("failovers/{id}/approve", "POST", "Approve a pending failover (approver role, not the requester)",
         "approveFailover", request=approval_http.DecisionBody, responses={202: Accepted})
document("failovers/{id}/reject", "POST", "Reject (or, as its requester, withdraw) a pending failover",
         "rejectFailover", request=approval_http.DecisionBody, responses={202: Accepted})
document("failovers/{id}", "GET", "A failover's state, preflight findings, steps with timings, chain head",
         "getFailover", responses={200: {"type": "object", "required": ["id", "state"]}})



@bp.route(route="failovers", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def request_failover(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    principal = approval_http.authenticate(req)
    subject = "failover"
    try:
        require_role(principal, Role.OPERATOR, "request failovers")
        body = parse_body(req, FailoverBody)
        subject = instance_id(body.scope)
        require_scope(principal, body.scope, f"request a {body.scope} failover")
        plan_failover(settings.configured_registry(), body.scope, body.target_region, body.drill)
        running = approval_http.runtime_of(await client.get_status(subject))
        if running in RUNNING:
            raise Conflict(f"a failover of scope {body.scope} is already in progress ({subject}, {running}); "
                           "follow it, or reject it before requesting another")
    except ContinuityError as exc:
        approval_service.record_refusal("failover", subject, principal.name, str(exc), exc.code)
        raise
    window = approval_http.approval_window_minutes()
    run_id = str(uuid.uuid4())
    request = {"scope": body.scope, "target_region": body.target_region, "reason": body.reason, "drill": body.drill,
               "requested_by": principal.name, "requested_by_id": principal.id,
               "requester_ids": sorted(principal.ids), "requested_at": datetime.now(UTC).isoformat()}
    await approval_http.start_workflow(client, "failover", subject, {
        "run_id": run_id, "request": request, "window_minutes": window,
        "fence_mode": settings.get("CONTINUITY_FAILOVER_FENCE_MODE")}, kind="failover", principal=principal,
        conflict=f"a failover of scope {body.scope} is already in progress ({subject}); follow it")
    url = f"/api/failovers/{subject}"
    return json_response({"id": subject, "run_id": run_id, "state": "PREFLIGHT", "status_url": url}, status=202,
                         headers={"Location": url})


@bp.route(route="failovers/{id}/approve", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def approve_failover(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await approval_http.decide(req, client, Verdict.APPROVE, "failover", orchestration="failover")


@bp.route(route="failovers/{id}/reject", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def reject_failover(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await approval_http.decide(req, client, Verdict.REJECT, "failover", orchestration="failover")


@bp.route(route="failovers/{id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_failover(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance = req.route_params.get("id", "")
    principal = authorize(req, Role.READER, "read failovers")
    if not instance.startswith("failover-"):
        raise approval_http.NotFound(f"no failover {instance[:80]!r}")
    scope = instance.removeprefix("failover-")
    require_scope(principal, scope, f"read the {scope} failover")
    status = await client.get_status(instance)
    runtime = approval_http.runtime_of(status)
    if runtime is None or getattr(status, "name", "failover") not in (None, "failover"):
        raise approval_http.NotFound(f"no failover {instance[:80]!r}")
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    return json_response({"id": instance, "runtime_status": runtime, **custom,
                          "output": status.output if runtime in ("Completed", "Failed") else None})
