"""Catalog triggers: BlobCreated events, the reconcile timer, queries, and the admin rebuild.

The BlobCreated trigger accepts only blobs of the backups container; anything else is refused with a
reason, never raised into the host. Queries are per tenant: a caller sees only the tenant in the route.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from continuity.catalog import service as catalog_service
from continuity.catalog.manifest import BACKUP_ID_PATTERN
from continuity.catalog.model import BackupStatus
from continuity.kernel import settings
from continuity.kernel.errors import InvalidRequest
from continuity.kernel.tenants import TENANT_ID_PATTERN
from triggers.api_docs import document
from triggers.common import authorize, event_type_of, handles_errors, instance_id, json_response, start_once

logger = logging.getLogger(__name__)

bp = df.Blueprint()

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
SUBJECT_RE = re.compile(r"^/blobServices/default/containers/(?P<container>[a-z0-9-]{3,63})/blobs/(?P<blob>.+)$")


class BlobCreatedData(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str = Field(min_length=1, max_length=2048)
    eTag: str = Field(min_length=1, max_length=200)  # noqa: N815 - Event Grid's field name


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def catalog_blob_created(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    container = settings.get("CONTINUITY_BACKUP_CONTAINER")
    match = SUBJECT_RE.match(event.subject or "")
    if event_type_of(event) != BLOB_CREATED or match is None or match["container"] != container:
        reason = (f"not a {BLOB_CREATED} event for container {container!r} "
                  f"(type {event_type_of(event)!r}, subject {str(event.subject)[:200]!r})")
        catalog_service.reject_event(event.id, event.subject, reason)
        return
    try:
        data = BlobCreatedData.model_validate(event.get_json())
    except ValueError as exc:
        catalog_service.reject_event(event.id, event.subject, f"malformed BlobCreated data: {str(exc)[:300]}")
        return
    blob = match["blob"]
    iid = instance_id("catalog", blob, data.eTag.strip('"'))
    if not await start_once(client, "catalog_ingest", iid, {"blob": blob, "etag": data.eTag, "event_id": event.id}):
        logger.info("duplicate BlobCreated ignored", extra={"blob": blob, "run_id": iid})


@bp.timer_trigger(arg_name="timer", schedule="%CONTINUITY_CATALOG_RECONCILE_SCHEDULE%")
@bp.durable_client_input(client_name="client")
async def catalog_reconcile_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await client.start_new("catalog_maintenance", None, "reconcile")


class BackupList(BaseModel):
    tenant: str
    items: list[dict[str, Any]]
    next_cursor: str | None


class SweepStarted(BaseModel):
    id: str
    statusQueryGetUri: str  # noqa: N815 - Durable's field name


_TENANT = {"type": "string", "pattern": TENANT_ID_PATTERN}
document("tenants/{tenant}/backups", "GET", "List a tenant's backups, newest first", "listBackups",
         responses={200: BackupList}, path_params={"tenant": _TENANT},
         query={"status": {"type": "string", "enum": [s.value for s in BackupStatus]},
                "kind": {"type": "string"}, "since": {"type": "string", "format": "date-time"},
                "before": {"type": "string", "format": "date-time"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 500}, "cursor": {"type": "string"}})
document("tenants/{tenant}/backups/{backup_id}", "GET", "One backup of a tenant", "getBackup",
         responses={200: {"type": "object", "required": ["tenant", "backup_id", "status"]}},
         path_params={"tenant": _TENANT, "backup_id": {"type": "string", "pattern": BACKUP_ID_PATTERN}})
document("catalog/{operation}", "POST", "Rebuild the catalog from storage alone, or reconcile it",
         "sweepCatalog", responses={202: SweepStarted},
         path_params={"operation": {"type": "string", "enum": ["rebuild", "reconcile"]}}, auth="admin")


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise InvalidRequest("query limit: an integer from 1 to 500")
    return int(raw)


def _reader_of(req: func.HttpRequest, tenant: str) -> None:
    """The caller must be a known principal whose tenant scope covers ``tenant``."""
    from continuity.kernel.identity import Role

    authorize(req, Role.READER, f"read the backups of {tenant}", tenant)


@bp.route(route="tenants/{tenant}/backups", methods=["GET"])
@handles_errors
def list_tenant_backups(req: func.HttpRequest) -> func.HttpResponse:
    params = req.params
    _reader_of(req, req.route_params["tenant"])
    page = catalog_service.list_backups(
        req.route_params["tenant"], status=params.get("status"), kind=params.get("kind"),
        since=params.get("since"), before=params.get("before"), limit=_limit(params.get("limit")),
        cursor=params.get("cursor"))
    return json_response(page)


@bp.route(route="tenants/{tenant}/backups/{backup_id}", methods=["GET"])
@handles_errors
def get_tenant_backup(req: func.HttpRequest) -> func.HttpResponse:
    _reader_of(req, req.route_params["tenant"])
    return json_response(catalog_service.get_backup(req.route_params["tenant"], req.route_params["backup_id"]))


@bp.route(route="catalog/{operation}", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@bp.durable_client_input(client_name="client")
@handles_errors
async def sweep_catalog(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    operation = req.route_params["operation"]
    if operation not in ("rebuild", "reconcile"):
        raise InvalidRequest("operation: rebuild or reconcile")
    iid = await client.start_new("catalog_maintenance", None, operation)
    response: func.HttpResponse = client.create_check_status_response(req, iid)
    return response
