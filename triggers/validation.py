"""Restore validation over HTTP and on the nightly timer.

- timer ``%CONTINUITY_NIGHTLY_SCHEDULE%`` and ``POST /api/validations/nightly``: start ``nightly-YYYYMMDD``
  (a second start the same day answers with the existing instance);
- ``POST /api/tenants/{tenant}/validations``: start ``validate-{tenant}-{backup_id}-{attempt}`` (newest backup
  unless ``backup_id`` is given; a backup judged before answers with that run unless ``force``);
- ``GET /api/tenants/{tenant}/recoverability``: the tenant's newest backup and last validation verdict.

Who may: starting a tenant's validation needs the operator role within the caller's tenant scope; the nightly
run validates every tenant, so it needs an operator whose scope is every tenant; reading recoverability needs
the reader role within the scope.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from continuity.catalog.manifest import BACKUP_ID_PATTERN
from continuity.kernel import settings
from continuity.kernel.errors import Forbidden, InvalidRequest
from continuity.kernel.identity import Role
from continuity.kernel.tenants import TENANT_ID_RE
from triggers.api_docs import document
from triggers.common import authorize, handles_errors, json_response, parse_body

logger = logging.getLogger(__name__)

bp = df.Blueprint()

TERMINAL_RESTARTABLE = ("Failed", "Terminated", "Canceled")


class TenantValidationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backup_id: str | None = Field(None, pattern=BACKUP_ID_PATTERN)
    sample_rate: float = Field(1.0, gt=0.0, le=1.0)
    force: bool = Field(False, description="validate again even if the backup was judged before (a new attempt)")


class NightlyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    date: str | None = Field(None, pattern=r"^[0-9]{8}$", description="YYYYMMDD; default today (UTC)")
    sample_rate: float = Field(1.0, gt=0.0, le=1.0)


STARTED = {"type": "object", "required": ["instance_id", "created"],
           "properties": {"instance_id": {"type": "string"}, "created": {"type": "boolean"},
                          "runtime_status": {"type": ["string", "null"]}, "status_url": {"type": "string"}}}
TENANT_PATH = {"tenant": {"type": "string", "pattern": TENANT_ID_RE.pattern}}

document("validations/nightly", "POST", "Start tonight's validation of every tenant (idempotent per UTC day)",
         "startNightlyValidation", request=NightlyRequest, responses={202: STARTED, 200: STARTED})
document("tenants/{tenant}/validations", "POST", "Validate one tenant's backup in the isolated sandbox",
         "startTenantValidation", request=TenantValidationRequest, responses={202: STARTED, 200: STARTED},
         path_params=TENANT_PATH)
document("tenants/{tenant}/recoverability", "GET", "The tenant's newest backup and last validation verdict",
         "getRecoverability", path_params=TENANT_PATH,
         responses={200: {"type": "object", "required": ["tenant", "recoverable_within_objectives", "reason"]}})


def nightly_input(sample_rate: float = 1.0) -> dict[str, Any]:
    """Settings travel in the input: orchestrators never read the environment."""
    return {"parallelism": settings.get_int("CONTINUITY_NIGHTLY_PARALLELISM"), "sample_rate": sample_rate}


async def start_once(client: df.DurableOrchestrationClient, name: str, instance_id: str,
                     payload: dict[str, Any]) -> tuple[bool, str | None]:
    """Start ``instance_id`` unless it already exists (and did not fail); returns (created, runtime status)."""
    existing = await client.get_status(instance_id)
    status = str(existing.runtime_status.name) if existing is not None and existing.runtime_status else None
    if status is not None and status not in TERMINAL_RESTARTABLE:
        return False, status
    await client.start_new(name, instance_id, payload)
    return True, "Pending"


def _started(instance_id: str, created: bool, status: str | None) -> func.HttpResponse:
    return json_response({"instance_id": instance_id, "created": created, "runtime_status": status,
                          "status_url": f"/runtime/webhooks/durabletask/instances/{instance_id}"},
                         status=202 if created else 200)


@bp.timer_trigger(schedule="%CONTINUITY_NIGHTLY_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def nightly_validation_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    instance = f"nightly-{datetime.now(UTC):%Y%m%d}"
    created, status = await start_once(client, "nightly_validation", instance, nightly_input())
    logger.info("nightly validation %s", "started" if created else f"already {status}",
                extra={"run_id": instance})


@bp.route(route="validations/nightly", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def start_nightly_validation(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    principal = authorize(req, Role.OPERATOR, "start the nightly validation")
    if principal.tenants is not None:
        raise Forbidden(f"{principal.name} is scoped to {', '.join(sorted(principal.tenants))} and may not start "
                        f"the nightly validation of every tenant; validate a tenant with "
                        f"POST /api/tenants/{{tenant}}/validations")
    body = parse_body(req, NightlyRequest)
    instance = f"nightly-{body.date or f'{datetime.now(UTC):%Y%m%d}'}"
    created, status = await start_once(client, "nightly_validation", instance, nightly_input(body.sample_rate))
    return _started(instance, created, status)


def _tenant(req: func.HttpRequest, role: Role, action: str) -> str:
    """The route's tenant, once the caller is authorised for it (scope before the registry: 403, never 404)."""
    from continuity.validation.wiring import registry_from_settings

    raw = req.route_params.get("tenant", "")
    if not TENANT_ID_RE.match(raw):
        raise InvalidRequest("path tenant: must match ^[a-z][a-z0-9-]{1,39}$")
    authorize(req, role, f"{action} of {raw}", raw)
    return registry_from_settings().get_tenant(raw).id


@bp.route(route="tenants/{tenant}/validations", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def start_tenant_validation(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from continuity.validation.wiring import plan_attempt, resolve_backup_id

    tenant = _tenant(req, Role.OPERATOR, "start the validation")
    body = parse_body(req, TenantValidationRequest)
    # The instance id names the backup and the attempt, so "latest" and the attempt are resolved first:
    # a judged backup answers with its run unless forced; a never-judged one (or forced) gets a new attempt.
    backup_id = resolve_backup_id(tenant, body.backup_id)
    attempt = plan_attempt(tenant, backup_id, force=body.force)
    if attempt.concluded:
        return _started(attempt.run_id, False, "Completed")
    created, status = await start_once(client, "tenant_validation", attempt.run_id,
                                       {"tenant": tenant, "backup_id": backup_id, "sample_rate": body.sample_rate})
    return _started(attempt.run_id, created, status)


@bp.route(route="tenants/{tenant}/recoverability", methods=["GET"])
@handles_errors
def get_recoverability(req: func.HttpRequest) -> func.HttpResponse:
    from continuity.validation.wiring import recoverability

    return json_response(recoverability(_tenant(req, Role.READER, "read the recoverability")))
