"""Point-in-time restore validation on Flexible Server, wired to ARM, the secret store and the checks.

What each activity of ``pitr_validation`` does; :mod:`continuity.validation.pitr` decides (plan, polls,
verdict) and :class:`continuity.adapters.azure.flexible_server.FlexibleServers` talks to ARM. No step waits
for Azure: begin returns the operation's status URL, poll does one GET, and the orchestrator waits between
polls on durable timers. Inputs and outputs are small JSON. Proven at the HTTP transport level only
(tests/unit/test_pitr_transport.py): this repository cannot reach Azure.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from continuity.adapters.azure.flexible_server import FlexibleServers, Operation, ServerRef
from continuity.adapters.azure.secret_store import secret_source
from continuity.adapters.postgres import pitr_checks
from continuity.adapters.postgres.check_runner import AttachmentStore
from continuity.adapters.storage.blob_store import BlobStore
from continuity.failover.rules import recovery_secret_name
from continuity.kernel import settings
from continuity.kernel.errors import InvalidRequest
from continuity.kernel.tenants import Registry, Server, ServerKind, Tenant
from continuity.validation import pitr
from continuity.validation.checks import CheckId, CheckResult, CheckStatus
from continuity.validation.wiring import open_recording

logger = logging.getLogger(__name__)


def flexible_servers(subscription_id: str) -> FlexibleServers:
    """The management client with the Function App's managed identity (tests replace this factory)."""
    return FlexibleServers.with_managed_identity(subscription_id)


def _source(registry: Registry, tenant_id: str) -> tuple[Tenant, Server, ServerRef]:
    """:raises InvalidRequest: the tenant's server is not a Flexible Server."""
    tenant = registry.get_tenant(tenant_id)
    server = registry.server_of(tenant)
    if server.kind is not ServerKind.FLEXIBLE_SERVER or not server.resource_id:
        raise InvalidRequest(f"tenant {tenant.id} is on a {server.kind} server ({tenant.server}): point-in-time "
                             "restore validation needs a flexible-server with a resource_id")
    return tenant, server, ServerRef.parse(server.resource_id)


def begin_restore_server(request: dict[str, Any]) -> dict[str, Any]:
    """Plan (isolation, restore point, target name) and PUT the restore; returns the operation to poll."""
    registry = settings.configured_registry()
    tenant, server, ref = _source(registry, request["tenant"])
    isolation = pitr.isolation_from(settings.get("CONTINUITY_PITR_SUBNET_ID"),
                                    settings.get("CONTINUITY_PITR_DNS_ZONE_ID"))
    flex = flexible_servers(ref.subscription_id)
    source = flex.get_source_server(server.resource_id or "")
    # The source's network mode, read from ARM, decides how the restored server is isolated (Azure refuses a
    # PITR across public and private access).
    isolation = pitr.restore_network(isolation, source.delegated_subnet_id)
    requested = datetime.fromisoformat(request["point_in_time"]) if request.get("point_in_time") else None
    plan = pitr.plan_restore(tenant_id=tenant.id, source_resource_id=server.resource_id or "",
                             location=source.location or server.region,
                             started_at=datetime.fromisoformat(request["started_at"]), now=datetime.now(UTC),
                             requested=requested, earliest_restore=source.earliest_restore, isolation=isolation)
    if plan.target_name != request["server_name"]:
        raise InvalidRequest(f"planned server {plan.target_name} differs from the orchestrator's "
                             f"{request['server_name']}")
    delegated = isolation.mode is pitr.NetworkMode.DELEGATED_SUBNET
    operation = flex.begin_restore_server(plan.source_resource_id, plan.target_name, location=plan.location,
                                          point_in_time=plan.point_in_time,
                                          delegated_subnet_id=isolation.subnet_id if delegated else None,
                                          dns_zone_id=isolation.dns_zone_id if delegated else None)
    logger.info("point-in-time restore requested", extra={"tenant": tenant.id, "run_id": request["run_id"],
                                                          "server": plan.target_name, "network": str(isolation.mode),
                                                          "point_in_time": plan.point_in_time.isoformat()})
    return {"plan": plan.to_json(), "operation": operation.to_json(),
            "poll_seconds": max(pitr.MIN_POLL_SECONDS, settings.get_int("CONTINUITY_PITR_POLL_SECONDS")),
            "timeout_s": 60 * settings.get_int("CONTINUITY_PITR_TIMEOUT_MINUTES")}


def poll_restore_operation(request: dict[str, Any]) -> dict[str, Any]:
    """One GET of the operation's status (restore or deletion); never waits."""
    _, _, ref = _source(settings.configured_registry(), request["tenant"])
    status = flexible_servers(ref.subscription_id).get_operation_status(Operation.from_json(request["operation"]))
    return status.to_json()


def _restored_id(ref: ServerRef, server_name: str) -> str:
    return (f"/subscriptions/{ref.subscription_id}/resourceGroups/{ref.resource_group}/providers/"
            f"Microsoft.DBforPostgreSQL/flexibleServers/{server_name}")


def connect_restored_server(request: dict[str, Any]) -> dict[str, Any]:
    """Public-access source: PUT the restored server's private endpoint in the isolated subnet (step
    ``endpoint``), then its DNS zone group (step ``dns``). Returns the operation to poll, or none."""
    _, _, ref = _source(settings.configured_registry(), request["tenant"])
    plan = request["plan"]
    isolation = plan["isolation"]
    endpoint = pitr.endpoint_name(request["server_name"])
    flex = flexible_servers(ref.subscription_id)
    if request["step"] == "endpoint":
        operation = flex.begin_create_private_endpoint(
            ref.resource_group, endpoint, server_resource_id=_restored_id(ref, request["server_name"]),
            location=plan["location"], subnet_id=isolation["subnet_id"])
    else:
        operation = flex.begin_register_endpoint_dns(ref.resource_group, endpoint, dns_zone_id=isolation["dns_zone_id"])
    logger.info("restored server endpoint requested", extra={"tenant": request["tenant"], "run_id": request["run_id"],
                                                             "server": request["server_name"], "step": request["step"]})
    return {"endpoint": endpoint, "operation": operation.to_json() if operation else None}


def delete_restored_endpoint(request: dict[str, Any]) -> dict[str, Any]:
    """Delete the restored server's private endpoint; succeeds if it is gone (or was never made)."""
    _, _, ref = _source(settings.configured_registry(), request["tenant"])
    endpoint = pitr.endpoint_name(request["server_name"])
    operation = flexible_servers(ref.subscription_id).delete_private_endpoint(ref.resource_group, endpoint)
    return {"state": "accepted" if operation else "gone", "operation": operation.to_json() if operation else None}


def check_restored_server(request: dict[str, Any]) -> dict[str, Any]:
    """The restored server is Ready; then the checks over psycopg (TLS, credentials from the secret store)."""
    registry = settings.configured_registry()
    tenant, server, ref = _source(registry, request["tenant"])
    restored = flexible_servers(ref.subscription_id).get_restored_server(ref.resource_group, request["server_name"])
    ready = pitr.restore_completed(restored.name, restored.state, float(request.get("restore_seconds", 0.0)))
    if ready.status is not CheckStatus.PASS or not restored.fqdn:
        return {"server": restored.to_json(), "checks": [ready.to_json()], "restored_bytes": 0}
    # A restored server keeps its source's administrator and password: the region's recovery credential.
    password = secret_source().get_secret(recovery_secret_name(server.region))
    dsn = pitr_checks.restored_dsn(restored.fqdn, tenant.database, restored.administrator_login
                                   or settings.get("CONTINUITY_PG_SUPERUSER"), password)
    blobs = BlobStore()
    container = settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
    store = AttachmentStore(list_names=lambda prefix: blobs.list_names(container, prefix=prefix),
                            read=lambda name: blobs.download(container, name))
    checks, size = pitr_checks.run_pitr_checks(dsn, tenant, sample_rate=float(request.get("sample_rate", 1.0)),
                                               seed=request["run_id"], attachment_store=store)
    failed = [c.id for c in checks if c.status is CheckStatus.FAIL]
    logger.info("point-in-time restore checked", extra={"tenant": tenant.id, "run_id": request["run_id"],
                                                        "server": restored.name, "failed": failed})
    return {"server": restored.to_json(), "checks": [ready.to_json(), *(c.to_json() for c in checks)],
            "restored_bytes": size}


def delete_restored_server(request: dict[str, Any]) -> dict[str, Any]:
    """Delete the restored server; succeeds if it is already gone (or was never created)."""
    _, _, ref = _source(settings.configured_registry(), request["tenant"])
    operation = flexible_servers(ref.subscription_id).delete_server(ref.resource_group, request["server_name"])
    logger.info("restored server deletion", extra={"tenant": request["tenant"], "run_id": request["run_id"],
                                                   "server": request["server_name"],
                                                   "state": "accepted" if operation else "gone"})
    return {"state": "accepted" if operation else "gone", "operation": operation.to_json() if operation else None}


def record_pitr_validation(request: dict[str, Any]) -> dict[str, Any]:
    """Conclude the verdict and append it to the evidence chain (idempotent by run id)."""
    registry = settings.configured_registry()
    tenant = registry.get_tenant(request["tenant"])
    checks = [CheckResult.from_json(c) for c in request.get("checks") or []]
    report = pitr.conclude_pitr(
        tenant=tenant.id, run_id=request["run_id"], server_name=request["server_name"],
        point_in_time=datetime.fromisoformat(request["point_in_time"]) if request.get("point_in_time")
        else datetime.fromisoformat(request["started_at"]),
        started_at=datetime.fromisoformat(request["started_at"]),
        finished_at=datetime.fromisoformat(request["finished_at"]), checks=checks,
        rto_minutes=registry.rto_minutes(tenant), rpo_minutes=registry.rpo_minutes(tenant),
        measured_s=float(request.get("restore_seconds", 0.0))
        + sum(c.duration_s for c in checks if c.id != CheckId.RESTORE_COMPLETED),
        restored_bytes=int(request.get("restored_bytes", 0)), error=request.get("error") or "")
    summary = {**report.to_json(), "deletion": request.get("deletion")}
    _, evidence, _ = open_recording()
    record = evidence.append(actor="validation", action="validation.pitr", subject=f"tenants/{tenant.id}/pitr/"
                             f"{request['server_name']}", data=summary, idempotency_key=f"pitr:{request['run_id']}",
                             at=report.finished_at)
    logger.info("point-in-time validation recorded", extra={"tenant": tenant.id, "run_id": request["run_id"],
                                                            "outcome": report.outcome})
    return {**summary, "evidence_seq": getattr(record, "seq", None)}
