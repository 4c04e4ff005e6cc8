"""Tenant recovery over HTTP: request one, approve or reject it (the shared approval handler), follow it.

POST /api/tenants/{tenant}/recoveries {backup_id | before | to, reason, drill} → 202 + status URL
    (``to``: an exact second, rewound from the server's WAL archive: continuity.pitr);
    (instance ``recovery-{tenant}``, one per tenant; refused with a 4xx and recorded when the backup is
    another tenant's, failed validation or is not validated, the time is before the oldest backup, a
    recovery of the tenant is already running, or the body is malformed);
POST /api/recoveries/{id}/approve|reject {comment, acknowledge, digest} (the shared rule of
    :func:`triggers.approval_http.decide`: a recovery instance inside the caller's tenant scope; approver role,
    never the requester or a linked identity of the requester);
GET /api/tenants/{tenant}/recoveries/current and GET /api/recoveries/{id}.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from continuity.approvals import service as approval_service
from continuity.approvals.rules import Verdict
from continuity.catalog.manifest import BACKUP_ID_PATTERN
from continuity.kernel import settings
from continuity.kernel.errors import Conflict, ContinuityError, InvalidRequest
from continuity.kernel.identity import Principal, Role, require_role, require_tenant
from continuity.kernel.tenants import TENANT_ID_PATTERN
from continuity.recovery import service as recovery_service
from continuity.recovery.rules import MAX_REASON_CHARS, BackupChoice, RecoveryRefused, instance_id
from triggers import approval_http
from triggers.api_docs import document
from triggers.common import handles_errors, json_response, parse_body

bp = df.Blueprint()

RUNNING = {"Pending", "Running", "ContinuedAsNew"}
_TENANT = {"tenant": {"type": "string", "pattern": TENANT_ID_PATTERN}}
_ID = {"id": {"type": "string", "pattern": r"^recovery-[a-z][a-z0-9-]{1,39}$"}}


class RecoveryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backup_id: str | None = Field(None, pattern=BACKUP_ID_PATTERN, description="recover to this backup")
    before: datetime | None = Field(None, description="else: the newest validated backup created before this time")
    to: datetime | None = Field(None, description="else: this exact second, rewound from the server's WAL archive "
                                                  "(servers we run; with a time zone)")
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)
    drill: bool = Field(False, description="stage, check and approve, then drop the copy: live is never touched")


class Accepted(BaseModel):
    id: str
    run_id: str | None = None
    state: str
    status_url: str


_STATUS = {"type": "object", "required": ["id", "state"]}
document("tenants/{tenant}/recoveries", "POST",
         "Request a recovery of one tenant to a known-good backup (staged and checked, then a second person approves)",
         "requestRecovery", request=RecoveryBody, responses={202: Accepted}, path_params=_TENANT)
document("tenants/{tenant}/recoveries/current", "GET", "The tenant's latest recovery: state, data loss, steps",
         "getCurrentRecovery", responses={200: _STATUS}, path_params=_TENANT)
document("recoveries/{id}", "GET", "A recovery's state, backup, data-loss summary, checks, steps with timings",
         "getRecovery", responses={200: _STATUS}, path_params=_ID)
document("recoveries/{id}/approve", "POST", "Approve a pending recovery (approver role, not the requester)",
         "approveRecovery", request=approval_http.DecisionBody, responses={202: Accepted}, path_params=_ID)
document("recoveries/{id}/reject", "POST", "Reject (or, as its requester, withdraw) a pending recovery",
         "rejectRecovery", request=approval_http.DecisionBody, responses={202: Accepted}, path_params=_ID)



def _point_in_time(tenant_id: str, body: RecoveryBody, running: str | None) -> dict[str, Any]:
    """A point-in-time request: checked against the archive's window now, rewound by the workflow."""
    if body.backup_id or body.before is not None:
        raise InvalidRequest("give one of backup_id, before or to")
    assert body.to is not None
    if running:
        raise Conflict(f"a recovery of {tenant_id} is already running ({running}); follow it, or reject it "
                       "before requesting another")
    if body.to.tzinfo is None:
        raise InvalidRequest("field to: needs a time zone, e.g. 2026-11-30T14:31:59Z")
    refusal = recovery_service.point_in_time_refusal(tenant_id, body.to)
    if refusal:
        raise RecoveryRefused(refusal)
    # The workflow's first step makes the backup: until then it is named by the target.
    return {"backup": {"backup_id": f"point-in-time@{body.to.astimezone(UTC).isoformat()}"},
            "choice": str(BackupChoice.POINT_IN_TIME)}


def _status_url(instance: str) -> str:
    return f"/api/recoveries/{instance}"


@bp.route(route="tenants/{tenant}/recoveries", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def request_recovery(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    principal = approval_http.authenticate(req)
    tenant_id = req.route_params.get("tenant", "")
    subject = "recovery"
    try:
        if re.match(TENANT_ID_PATTERN, tenant_id):
            subject = instance_id(tenant_id)  # the refusals below are recorded under the instance they concern
        require_role(principal, Role.OPERATOR, "request recoveries")
        require_tenant(principal, tenant_id)  # scope before the registry: 403, never a 404 that confirms a tenant
        tenant = settings.configured_registry().get_tenant(tenant_id)
        body = parse_body(req, RecoveryBody)
        status = await client.get_status(subject)
        runtime = approval_http.runtime_of(status)
        running = None
        if runtime in RUNNING:
            custom = status.custom_status if isinstance(status.custom_status, dict) else {}
            running = f"{subject}, {custom.get('state', runtime)}"
        if body.to is not None:
            chosen = _point_in_time(tenant.id, body, running)
        else:
            chosen = recovery_service.choose(tenant.id, body.backup_id, body.before, running)
    except ContinuityError as exc:
        approval_service.record_refusal("recovery", subject, principal.name, str(exc), exc.code,
                                        {"tenant": tenant_id[:60]})
        raise
    window = approval_http.approval_window_minutes()
    run_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    backup_id = chosen["backup"]["backup_id"]
    request = {"tenant": tenant.id, "backup_id": backup_id, "choice": chosen["choice"],
               "before": body.before.isoformat() if body.before else None,
               "to": body.to.isoformat() if body.to else None, "reason": body.reason, "drill": body.drill,
               "requested_by": principal.name, "requested_by_id": principal.id,
               "requester_ids": sorted(principal.ids), "requested_at": now.isoformat()}
    planned = recovery_service.plan(tenant.id, now, run_id, backup_id)
    await approval_http.start_workflow(client, "tenant_recovery", subject, {
        "run_id": run_id, "request": request, "names": planned["names"], "marker": planned["marker"],
        "window_minutes": window}, kind="recovery", principal=principal,
        conflict=f"a recovery of {tenant.id} is already running ({subject}); follow it")
    url = _status_url(subject)
    return json_response({"id": subject, "run_id": run_id, "state": "PICKING", "status_url": url,
                          "backup_id": backup_id, "choice": chosen["choice"], "databases": planned["names"]},
                         status=202, headers={"Location": url})


def _in_scope(principal: Principal, instance: str) -> None:
    """A tenant-scoped caller may only see and decide recoveries of tenants in its scope (refusals recorded)."""
    try:
        require_tenant(principal, instance.removeprefix("recovery-"))
    except ContinuityError as exc:
        approval_service.record_refusal("recovery", instance[:80] or "recovery", principal.name, str(exc), exc.code)
        raise


async def _decide(req: func.HttpRequest, client: df.DurableOrchestrationClient, verdict: Verdict) -> func.HttpResponse:
    instance = req.route_params.get("id", "")
    return await approval_http.decide(req, client, verdict, "recovery", orchestration="tenant_recovery",
                                      status_url=_status_url(instance))


@bp.route(route="recoveries/{id}/approve", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def approve_recovery(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await _decide(req, client, Verdict.APPROVE)


@bp.route(route="recoveries/{id}/reject", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def reject_recovery(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await _decide(req, client, Verdict.REJECT)


async def _show(client: df.DurableOrchestrationClient, instance: str) -> func.HttpResponse:
    status = await client.get_status(instance)
    runtime = approval_http.runtime_of(status)
    if runtime is None or not instance.startswith("recovery-"):
        raise approval_http.NotFound(f"no recovery {instance[:80]!r}; request one with "
                                     "POST /api/tenants/{tenant}/recoveries")
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    return json_response({"id": instance, "runtime_status": runtime, "state": custom.get("state", runtime), **custom,
                          "output": status.output if runtime in ("Completed", "Failed") else None})


@bp.route(route="recoveries/{id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_recovery(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance = req.route_params.get("id", "")
    _in_scope(approval_http.authenticate(req), instance)
    return await _show(client, instance)


@bp.route(route="tenants/{tenant}/recoveries/current", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_current_recovery(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    principal = approval_http.authenticate(req)
    tenant = settings.configured_registry().get_tenant(req.route_params.get("tenant", ""))
    _in_scope(principal, instance_id(tenant.id))
    return await _show(client, instance_id(tenant.id))
