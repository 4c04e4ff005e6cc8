"""Retention and legal holds over HTTP, and the daily retention timer.

- timer ``%CONTINUITY_RETENTION_SCHEDULE%``, ``POST /api/retention/apply`` (operator role) and
  ``POST /api/retention/apply-as-of`` (master key; accepts ``as_of`` for tests and catch-up runs): start
  ``retention-YYYYMMDD`` (a second start the same day answers with the existing instance; a start while
  another run applies is refused 409 and changes nothing);
- ``GET /api/retention/plan[?tenant=&as_of=]``: the dry run (changes nothing; ``as_of`` allowed);
- ``GET /api/retention/runs/{run_id}``: a run's state and recorded outcomes;
- ``POST /api/tenants/{tenant}/holds`` {reason, backup_id?}, ``POST /api/tenants/{tenant}/holds/clear``
  {reason, backup_id?} (approver or admin role; actor and reason go to the evidence chain),
  ``GET /api/tenants/{tenant}/holds``.

Who may: the plan and a tenant's holds need the reader role; a scoped caller's plan lists only its tenants and
``tenant=`` outside its scope is 403; holds on a tenant outside the caller's scope are 403 to read, set or clear.
Applying retention (operator) and reading a run's outcomes (reader) touch every tenant: unscoped callers only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from continuity.approvals import service as approval_service
from continuity.catalog.manifest import BACKUP_ID_PATTERN
from continuity.kernel.errors import ContinuityError, Forbidden, InvalidRequest, Unauthorized
from continuity.kernel.identity import Principal, Role, require_every_tenant, require_tenant
from continuity.kernel.tenants import TENANT_ID_PATTERN
from continuity.retention import service as retention_service
from continuity.retention.holds import MAX_REASON_CHARS
from continuity.retention.planner import parse_time
from triggers.api_docs import document
from triggers.common import authorize, handles_errors, json_response, parse_body
from triggers.validation import start_once

logger = logging.getLogger(__name__)

bp = df.Blueprint()

ORCHESTRATION = "retention"


class ApplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdminApplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: str | None = Field(None, description="ISO 8601 with a time zone; the plan's now (default: the clock)")


class HoldBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=MAX_REASON_CHARS * 2, description="why (case, ticket); required")
    backup_id: str | None = Field(None, pattern=BACKUP_ID_PATTERN, description="one backup; omit for the tenant")


class RunStarted(BaseModel):
    instance_id: str
    created: bool
    runtime_status: str | None
    as_of: str | None
    status_url: str


_TENANT = {"tenant": {"type": "string", "pattern": TENANT_ID_PATTERN}}
_OBJECT = {"type": "object"}
document("retention/plan", "GET", "Dry run: what retention would keep, tier, lock and delete (changes nothing)",
         "planRetention", responses={200: {"type": "object", "required": ["format", "now", "summary", "actions"]}},
         query={"tenant": {"type": "string", "pattern": TENANT_ID_PATTERN},
                "as_of": {"type": "string", "format": "date-time"}})
document("retention/apply", "POST", "Apply today's retention plan (operator role; one run at a time)",
         "applyRetention", request=ApplyBody, responses={202: RunStarted, 200: RunStarted})
document("retention/apply-as-of", "POST", "Apply retention as of a given time (master key)", "applyRetentionAsOf",
         request=AdminApplyBody, responses={202: RunStarted, 200: RunStarted}, auth="admin")
document("retention/runs/{run_id}", "GET", "A retention run: state, summary, every recorded outcome", "getRetentionRun",
         responses={200: {"type": "object", "required": ["run_id", "runtime_status"]}},
         path_params={"run_id": {"type": "string", "pattern": r"^retention-[0-9]{8}$"}})
document("tenants/{tenant}/holds", "POST", "Set a legal hold on a tenant or one backup (approver or admin)",
         "setLegalHold", request=HoldBody, responses={201: _OBJECT, 200: _OBJECT}, path_params=_TENANT)
document("tenants/{tenant}/holds/clear", "POST", "Clear a legal hold (approver or admin; reason required)",
         "clearLegalHold", request=HoldBody, responses={200: _OBJECT}, path_params=_TENANT)
document("tenants/{tenant}/holds", "GET", "A tenant's legal holds: active, history, and the registry's flag",
         "listLegalHolds", responses={200: _OBJECT}, path_params=_TENANT)


def _as_of(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return parse_time(raw.replace(" ", "+"), "as_of")  # a '+' in a query string arrives as a space
    except OverflowError as exc:
        raise InvalidRequest(f"as_of {raw[:40]!r} is outside the representable range of times") from exc


async def start_run(client: df.DurableOrchestrationClient, requested_by: str, as_of: datetime | None,
                    clock: datetime) -> dict[str, Any]:
    """Start ``retention-YYYYMMDD`` unless it exists; refuse (409, recorded) while another run applies."""
    ports = retention_service.open_ports()
    instance = retention_service.admit_run(ports, requested_by, as_of, clock)
    payload = {"requested_by": requested_by, "as_of": as_of.isoformat() if as_of else None}
    created, status = await start_once(client, ORCHESTRATION, instance, payload)
    logger.info("retention %s", "started" if created else f"already {status}", extra={"run_id": instance})
    return {"instance_id": instance, "created": created, "runtime_status": status,
            "as_of": as_of.isoformat() if as_of else None, "status_url": f"/api/retention/runs/{instance}"}


def _started(body: dict[str, Any]) -> func.HttpResponse:
    return json_response(body, status=202 if body["created"] else 200, headers={"Location": body["status_url"]})


@bp.timer_trigger(schedule="%CONTINUITY_RETENTION_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def retention_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    try:
        await start_run(client, "timer", None, datetime.now(UTC))
    except ContinuityError as exc:  # e.g. another run still applying: recorded; tomorrow's timer tries again
        logger.warning("retention timer did not start a run: %s", exc)


@bp.route(route="retention/plan", methods=["GET"])
@handles_errors
def plan_retention(req: func.HttpRequest) -> func.HttpResponse:
    tenant = req.params.get("tenant") or None
    principal = authorize(req, Role.READER, "read the retention plan", tenant)
    now = _as_of(req.params.get("as_of")) or datetime.now(UTC)
    ports = retention_service.open_ports()
    return json_response(retention_service.plan_document(ports, now, tenant, scope=principal.tenants))


@bp.route(route="retention/apply", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def apply_retention(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    principal = authorize(req, Role.OPERATOR, "apply retention")
    require_every_tenant(principal, "apply retention")  # a run plans and applies every tenant's backups
    # Parsed with the admin route's model so that an as_of is refused for what it is, not as an unknown field.
    if parse_body(req, AdminApplyBody).as_of is not None:
        raise Forbidden("as_of is accepted only for dry runs (GET /api/retention/plan) or on the admin route "
                        "(POST /api/retention/apply-as-of with the master key)")
    return _started(await start_run(client, principal.name, None, datetime.now(UTC)))


@bp.route(route="retention/apply-as-of", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@bp.durable_client_input(client_name="client")
@handles_errors
async def apply_retention_as_of(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = parse_body(req, AdminApplyBody)
    try:
        actor = approval_service.authenticate_headers(dict(req.headers)).name
    except Unauthorized:
        actor = "admin-key"
    return _started(await start_run(client, actor, _as_of(body.as_of), datetime.now(UTC)))


@bp.route(route="retention/runs/{run_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_retention_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from triggers.approval_http import NotFound

    principal = authorize(req, Role.READER, "read a retention run")
    require_every_tenant(principal, "read a retention run")  # its outcomes name every tenant's backups
    run_id = req.route_params.get("run_id", "")
    if not run_id.startswith("retention-") or len(run_id) > 40:
        raise NotFound(f"no retention run {run_id[:60]!r}")
    status = await client.get_status(run_id)
    runtime = str(getattr(status.runtime_status, "name", status.runtime_status)) \
        if status is not None and status.runtime_status is not None else None
    recorded = retention_service.run_status(retention_service.open_ports(), run_id)
    if runtime is None and recorded is None:
        raise NotFound(f"no retention run {run_id[:60]!r}")
    return json_response({"run_id": run_id, "runtime_status": runtime,
                          "custom_status": status.custom_status if status is not None else None,
                          "output": status.output if runtime in ("Completed", "Failed") and status else None,
                          "run": recorded})


def _hold_request(req: func.HttpRequest) -> tuple[Principal, str, HoldBody]:
    """The caller (its role is judged, and recorded when refused, by the service) within its tenant scope."""
    principal = approval_service.authenticate_headers(dict(req.headers))
    tenant = req.route_params.get("tenant", "")
    require_tenant(principal, tenant)
    return principal, tenant, parse_body(req, HoldBody)


@bp.route(route="tenants/{tenant}/holds", methods=["POST"])
@handles_errors
def set_legal_hold(req: func.HttpRequest) -> func.HttpResponse:
    principal, tenant, body = _hold_request(req)
    result = retention_service.set_hold(retention_service.open_ports(), principal, tenant, body.backup_id, body.reason)
    return json_response(result, status=201 if result["created"] else 200)


@bp.route(route="tenants/{tenant}/holds/clear", methods=["POST"])
@handles_errors
def clear_legal_hold(req: func.HttpRequest) -> func.HttpResponse:
    principal, tenant, body = _hold_request(req)
    return json_response(retention_service.clear_hold(retention_service.open_ports(), principal, tenant,
                                                      body.backup_id, body.reason))


@bp.route(route="tenants/{tenant}/holds", methods=["GET"])
@handles_errors
def list_legal_holds(req: func.HttpRequest) -> func.HttpResponse:
    tenant = req.route_params.get("tenant", "")
    authorize(req, Role.READER, f"read the legal holds of {tenant[:60]}", tenant)
    return json_response(retention_service.list_holds(retention_service.open_ports(), tenant))
