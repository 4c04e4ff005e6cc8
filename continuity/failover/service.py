"""Failover use cases wired to the adapters: what each activity of the failover orchestration does.

Each function takes and returns JSON-able dicts (activity inputs and outputs), is idempotent (a
replayed or re-run activity does no harm twice), and measures its own step timing. The rules come
from :mod:`continuity.failover.rules`; servers of kind ``local-cluster`` go through
:mod:`continuity.adapters.postgres.failover_local`, ``flexible-server`` promotion through
:mod:`continuity.adapters.azure.flexible_server`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from continuity.adapters.local.fault_injection import pause_at
from continuity.approvals import service as approval_service
from continuity.failover.rules import (
    BackupObservation,
    FailoverPlan,
    FenceResult,
    FenceState,
    PrimaryObservation,
    ReplicaObservation,
    StepName,
    assess_preflight,
    failover_refusal,
    plan_failover,
    promotion_refusal,
    recovery_secret_name,
)
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError
from continuity.kernel.events import EventType, make_event
from continuity.kernel.tenants import Registry, Server, ServerKind

logger = logging.getLogger(__name__)

BUNDLE_PREFIX = "bundles/failover"


class FailoverNotSupported(ContinuityError):
    code = "failover_not_supported"
    http_status = 501


def registry() -> Registry:
    return settings.configured_registry()


def _now() -> datetime:
    return datetime.now(UTC)


def _local() -> Any:
    from continuity.adapters.postgres.failover_local import LocalFailover

    return LocalFailover()


def _server(reg: Registry, name: str) -> Server:
    return reg.servers[name]


def _cluster(server: Server, name: str) -> str:
    if server.kind is not ServerKind.LOCAL_CLUSTER or server.cluster is None:
        raise FailoverNotSupported(f"server {name} is a {server.kind}: only local-cluster fencing is wired; "
                                   "fence Flexible Servers by stopping them (`az postgres flexible-server stop`)")
    return server.cluster


def _attempts() -> Any | None:
    """The control database's record of step attempts; None (logged) when it cannot be reached."""
    try:
        from continuity.adapters.postgres.control_db import prepare
        from continuity.adapters.postgres.step_attempts import StepAttempts

        return StepAttempts(prepare())
    except ContinuityError as exc:
        logger.warning("step attempts not recorded: %s", exc)
        return None


def begin_attempt(run_id: str | None, step: str, started: datetime) -> tuple[datetime, int | None]:
    """Record, durably, that an attempt of ``step`` of ``run_id`` starts now.

    :returns: when the step's FIRST attempt started (so a retried step's timing covers every attempt) and this
        attempt's number; ``(started, None)`` when the control database cannot be reached: the timing then
        covers this attempt only, and says so (``attempts`` None). A failover must not stop for bookkeeping.
    """
    store = _attempts() if run_id else None
    if store is None:
        return started, None
    try:
        attempt = store.begin(str(run_id), step, started)
    except ContinuityError as exc:
        logger.warning("step attempt not recorded: %s", exc, extra={"run_id": run_id, "step": step})
        return started, None
    if attempt.number > 1:
        logger.warning("step runs again after an earlier attempt", extra={"run_id": run_id, "step": step,
                                                                          "attempt": attempt.number})
    return min(attempt.first_started_at, started), attempt.number


def timed_step(step: str, work: Callable[[], tuple[bool, str, dict[str, Any]]], run_id: str | None,
               pause_point: str) -> dict[str, Any]:
    """Run ``work`` as one attempt of ``step``; its timing runs from the step's first attempt (see
    :func:`begin_attempt`), ``attempt_started_at`` is this attempt's own start."""
    started = _now()
    first, attempt = begin_attempt(run_id, step, started)
    ok, detail, data = work()
    pause_at(pause_point)  # after the work, before its result is recorded: the worst moment to die
    finished = _now()
    return {"step": step, "started_at": first.isoformat(), "attempt_started_at": started.isoformat(),
            "attempts": attempt, "finished_at": finished.isoformat(),
            "seconds": round((finished - first).total_seconds(), 3), "ok": ok, "detail": detail, "data": data}


def _step(step: StepName, work: Callable[[], tuple[bool, str, dict[str, Any]]],
          run_id: str | None = None) -> dict[str, Any]:
    return timed_step(str(step), work, run_id, str(step))


# ---- evidence and events -----------------------------------------------------------------------


def record_event(inp: dict[str, Any]) -> dict[str, Any]:
    """Append one evidence record (idempotent per run and action) and publish the matching event.

    Publishing is best effort: evidence is the record of truth, so a topic outage is noted, not fatal.
    """
    run_id, action = inp["run_id"], inp["action"]
    subject = inp["instance_id"]
    head = approval_service.record(actor=inp["actor"], action=action, subject=subject,
                                   data={"run_id": run_id, **inp.get("data", {})},
                                   idempotency_key=f"{subject}:{run_id}:{inp.get('key', action)}")
    published = None
    if inp.get("event"):
        published = publish(EventType(inp["event"]), event_id=f"{run_id}:{inp['event']}", subject=subject,
                            tenant=inp.get("tenant"), chain_head=head, **inp.get("event_data", {}))
    return {"chain_head": head, "published": published}


def publish(event_type: EventType, *, event_id: str, subject: str, tenant: str | None,
            chain_head: dict[str, Any] | None, **data: Any) -> bool:
    from continuity.adapters.azure.event_publisher import EventPublisher

    event = make_event(event_type, event_id=event_id, subject=subject, at=_now(), tenant=tenant,
                       chain_head=chain_head, **data)
    try:
        EventPublisher().publish([event])
    except ContinuityError as exc:
        logger.warning("event not published: %s", exc, extra={"event_type": str(event_type), "event_id": event_id})
        return False
    return True


# ---- preflight --------------------------------------------------------------------------------


def preflight(inp: dict[str, Any]) -> dict[str, Any]:
    """Plan the failover and observe everything the approver must see."""
    reg = registry()
    req = inp["request"]
    plan = plan_failover(reg, req["scope"], req["target_region"], bool(req.get("drill")))
    replicas: list[ReplicaObservation] = []
    primaries: list[PrimaryObservation] = []
    for pair in plan.pairs:
        replica, primary = _server(reg, pair.replica), _server(reg, pair.primary)
        if replica.kind is ServerKind.LOCAL_CLUSTER and primary.kind is ServerKind.LOCAL_CLUSTER:
            local = _local()
            replicas.append(local.observe_replica(pair.replica, _cluster(replica, pair.replica),
                                                  _cluster(primary, pair.primary)))
            primaries.append(local.observe_primary(pair.primary, _cluster(primary, pair.primary)))
        else:
            replicas.append(_observe_flexible_replica(pair.replica, replica))
    backups = _validated_backups(plan.tenants)
    credentials = {recovery_secret_name(plan.target_region): _has_secret(recovery_secret_name(plan.target_region))}
    rpo_seconds = min(reg.rpo_minutes(reg.get_tenant(t)) for t in plan.tenants) * 60.0 if plan.tenants else 900.0
    found = assess_preflight(plan, replicas=replicas, primaries=primaries, backups=backups, credentials=credentials,
                             max_lag_seconds=rpo_seconds)
    return {"plan": plan.to_json(), "preflight": found.to_json(), "refusal": failover_refusal(plan, found),
            "required_acknowledgements": sorted(found.required_acknowledgements)}


def report_replication_lag(reg: Registry) -> list[dict[str, Any]]:
    """Observe every replica's lag behind its primary and log it as the ``replication.lag`` custom event (with
    ``lag_seconds`` and ``lag_bytes`` as measurements), which the Azure Monitor replication alert queries.
    Called on every backup timer tick: a lagging replica is what a regional failover would promote."""
    import json

    from continuity.kernel.events import CUSTOM_EVENT_ATTRIBUTE

    out: list[dict[str, Any]] = []
    for name, server in sorted(reg.servers.items()):
        if not server.replica_of:
            continue
        primary = _server(reg, server.replica_of)
        if server.kind is ServerKind.LOCAL_CLUSTER and primary.kind is ServerKind.LOCAL_CLUSTER:
            seen = _local().observe_replica(name, _cluster(server, name), _cluster(primary, server.replica_of))
        else:
            seen = _observe_flexible_replica(name, server)
        measured = {k: v for k, v in (("lag_seconds", seen.lag_seconds), ("lag_bytes", seen.lag_bytes))
                    if v is not None}
        logger.info("replication lag", extra={
            CUSTOM_EVENT_ATTRIBUTE: "replication.lag", "server": name, "primary": server.replica_of,
            "reachable": seen.reachable, "microsoft.custom_measurements": json.dumps(measured)})
        out.append({"server": name, "primary": server.replica_of, "reachable": seen.reachable, **measured,
                    "detail": seen.detail})
    return out


def _observe_flexible_replica(name: str, server: Server) -> ReplicaObservation:
    from continuity.adapters.azure.flexible_server import FlexibleServers, ServerRef

    assert server.resource_id is not None
    ref = ServerRef.parse(server.resource_id)
    try:
        state = FlexibleServers.with_managed_identity(ref.subscription_id).get_replica_state(server.resource_id)
    except ContinuityError as exc:
        return ReplicaObservation(name, False, detail=str(exc))
    return ReplicaObservation(name, True, state.is_replica, None, None,
                              f"role {state.role}, replication {state.replication_state}")


def _validated_backups(tenants: tuple[str, ...]) -> list[BackupObservation]:
    try:
        from continuity.adapters.postgres.catalog_store import PgCatalogStore
        from continuity.adapters.postgres.control_db import prepare
        from continuity.catalog.model import BackupStatus

        store = PgCatalogStore(prepare())
        out: list[BackupObservation] = []
        for tenant in tenants:
            items, _ = store.list_backups(tenant=tenant, status=BackupStatus.VALIDATED, limit=1)
            out.append(BackupObservation(tenant, items[0].backup_id if items else None,
                                         items[0].created_at if items else None))
        return out
    except (ContinuityError, ImportError) as exc:
        logger.warning("catalog unavailable for preflight: %s", exc)
        return [BackupObservation(t, None, catalog_available=False) for t in tenants]


def _has_secret(name: str) -> bool:
    from continuity.adapters.azure.secret_store import secret_source

    try:
        return secret_source().has_secret(name)
    except ContinuityError as exc:
        logger.warning("secret store unavailable: %s", exc)
        return False


# ---- steps ------------------------------------------------------------------------------------


def fence(inp: dict[str, Any]) -> dict[str, Any]:
    reg, plan = registry(), FailoverPlan.from_json(inp["plan"])
    acks = frozenset(inp.get("acknowledgements", ()))

    def work() -> tuple[bool, str, dict[str, Any]]:
        results = []
        for pair in plan.pairs:
            server = _server(reg, pair.primary)
            results.append(_local().fence_primary(pair.primary, _cluster(server, pair.primary), inp["fence_mode"]))
        refusals = [r for r in (promotion_refusal(f, acks, drill=False) for f in results) if r]
        detail = "; ".join(refusals) or "; ".join(f"{f.server}: {f.state} ({f.detail})" for f in results)
        return not refusals, detail, {"fences": [f.to_json() for f in results]}

    return _step(StepName.FENCE, work, inp.get("run_id"))


def promote(inp: dict[str, Any]) -> dict[str, Any]:
    """Promote each replica, but only while its old primary is still fenced (re-checked right now)."""
    reg, plan = registry(), FailoverPlan.from_json(inp["plan"])
    acks = frozenset(inp.get("acknowledgements", ()))
    fences = {f["server"]: FenceResult.from_json(f) for f in inp["fences"]}

    def work() -> tuple[bool, str, dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for pair in plan.pairs:
            primary, replica = _server(reg, pair.primary), _server(reg, pair.replica)
            fence_result = fences.get(pair.primary)
            if primary.kind is ServerKind.LOCAL_CLUSTER and fence_result is not None \
                    and fence_result.state is FenceState.READ_ONLY:
                now = _local().observe_primary(pair.primary, _cluster(primary, pair.primary))
                if now.reachable and not now.read_only:
                    fence_result = FenceResult(pair.primary, FenceState.NOT_FENCED,
                                               "it accepts writes again since the fence", fence_result.final_lsn)
            reason = promotion_refusal(fence_result, acks, drill=False)
            if reason:
                return False, reason, {"promotions": out}
            if replica.kind is ServerKind.FLEXIBLE_SERVER:
                out.append(_promote_flexible(replica, forced=fence_result is None
                                             or fence_result.state is FenceState.UNREACHABLE))
                continue
            local = _local()
            cluster = _cluster(replica, pair.replica)
            waited = 0.0
            if fence_result is not None and fence_result.final_lsn:
                waited = local.wait_for_replay(fence_result.final_lsn, cluster)
            result = local.promote_replica(cluster)
            out.append({"server": pair.replica, "replay_wait_seconds": round(waited, 3), **result})
        return True, "; ".join(f"{p['server']} promoted" + (" (already)" if p.get("already_promoted") else "")
                               for p in out), {"promotions": out}

    return _step(StepName.PROMOTE, work, inp.get("run_id"))


def _promote_flexible(server: Server, forced: bool) -> dict[str, Any]:
    from continuity.adapters.azure.flexible_server import FlexibleServers, ServerRef

    assert server.resource_id is not None
    ref = ServerRef.parse(server.resource_id)
    return FlexibleServers.with_managed_identity(ref.subscription_id).promote_replica(
        server.resource_id, forced=forced)


def _writer_of(server: Server, name: str) -> tuple[str, int]:
    if server.kind is ServerKind.LOCAL_CLUSTER:
        from continuity.adapters.local.local_stack import LocalStack

        return "127.0.0.1", LocalStack().port(_cluster(server, name))
    assert server.host is not None
    return server.host, server.port


def repoint(inp: dict[str, Any]) -> dict[str, Any]:
    """Point every moving tenant's route at its new writer; publish continuity.routing.changed per change."""
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.postgres.routing import RoutingTable

    reg, plan = registry(), FailoverPlan.from_json(inp["plan"])

    def work() -> tuple[bool, str, dict[str, Any]]:
        table = RoutingTable(prepare())
        new_writer = {p.primary: p for p in plan.pairs}
        routes = []
        head: dict[str, Any] | None = None
        for tenant_id in plan.tenants:
            tenant = reg.get_tenant(tenant_id)
            pair = new_writer[tenant.server]
            host, port = _writer_of(_server(reg, pair.replica), pair.replica)
            route, changed = table.repoint(tenant_id, writer_host=host, writer_port=port, region=pair.target_region)
            if changed:
                # Every outgoing event carries the evidence chain's head (read once per step: the repoint
                # itself appends nothing), so a subscriber can later verify the chain against it.
                head = head or approval_service.chain_head()
                publish(EventType.ROUTING_CHANGED, event_id=f"{inp['run_id']}:routing:{tenant_id}:{route.version}",
                        subject=f"routing/{tenant_id}", tenant=tenant_id, chain_head=head, route=route.to_json(),
                        failover=inp["instance_id"])
            routes.append({**route.to_json(), "changed": changed})
        return True, f"{len(routes)} route(s) point at {plan.target_region}", {"routes": routes}

    return _step(StepName.REPOINT, work, inp.get("run_id"))


def _tenant_checks(reg: Registry, tenants: tuple[str, ...], dsn_of: Callable[[str], str]) -> list[dict[str, Any]]:
    local = _local()
    dsns = {t: dsn_of(reg.get_tenant(t).database) for t in tenants}
    assertions = {t: [(a.name, a.sql, a.expect) for a in reg.get_tenant(t).assertions] for t in tenants}
    results: list[dict[str, Any]] = local.smoke(dsns, assertions)
    return results


def verify(inp: dict[str, Any]) -> dict[str, Any]:
    """Write probe on each new primary, tenants' smoke queries there, and the old primary refusing writes."""
    from continuity.adapters.local.local_stack import LocalStack

    reg, plan = registry(), FailoverPlan.from_json(inp["plan"])

    def work() -> tuple[bool, str, dict[str, Any]]:
        stack, local = LocalStack(), _local()
        probes, old_refuses = [], []
        for pair in plan.pairs:
            cluster = _cluster(_server(reg, pair.replica), pair.replica)
            probes.append({"server": pair.replica, **local.write_probe(stack.dsn(cluster), inp["run_id"])})
            old = _cluster(_server(reg, pair.primary), pair.primary)
            old_refuses.append({"server": pair.primary, "refuses_writes": local.refuses_writes(old)})
        replica_cluster = _cluster(_server(reg, plan.pairs[0].replica), plan.pairs[0].replica)
        smoke = _tenant_checks(reg, plan.tenants, lambda db: stack.dsn(replica_cluster, db))
        ok = all(p["ok"] for p in probes) and all(s["ok"] for s in smoke) and all(o["refuses_writes"]
                                                                                   for o in old_refuses)
        failed = [s["tenant"] for s in smoke if not s["ok"]]
        detail = "new primary writable, smoke queries passed, old primary refuses writes" if ok else (
            f"verification failed: probes {[p['detail'] for p in probes]}, tenants failing {failed}, "
            f"old primary refuses writes: {[o['refuses_writes'] for o in old_refuses]}")
        return ok, detail, {"probes": probes, "smoke": smoke, "old_primary": old_refuses}

    return _step(StepName.VERIFY, work, inp.get("run_id"))


# ---- drill ------------------------------------------------------------------------------------


def drill_copy(inp: dict[str, Any]) -> dict[str, Any]:
    reg, plan = registry(), FailoverPlan.from_json(inp["plan"])
    pair = plan.pairs[0]

    def work() -> tuple[bool, str, dict[str, Any]]:
        copy = _local().drill_copy(inp["run_id"], _cluster(_server(reg, pair.replica), pair.replica))
        return True, f"replica {pair.replica} copied into the sandbox (unix socket only, port {copy.port})", \
            {"drill_id": copy.drill_id, "port": copy.port}

    return _step(StepName.COPY, work, inp.get("run_id"))


def drill_promote(inp: dict[str, Any]) -> dict[str, Any]:
    def work() -> tuple[bool, str, dict[str, Any]]:
        result = _local().promote_drill(inp["run_id"])
        return True, "sandbox copy promoted", result

    return _step(StepName.PROMOTE, work, inp.get("run_id"))


def drill_verify(inp: dict[str, Any]) -> dict[str, Any]:
    from continuity.adapters.local.local_stack import LocalStack

    reg, plan = registry(), FailoverPlan.from_json(inp["plan"])

    def work() -> tuple[bool, str, dict[str, Any]]:
        stack, local = LocalStack(), _local()
        copy = local.get_drill(inp["run_id"])
        probe = local.write_probe(copy.dsn(stack), inp["run_id"])
        smoke = _tenant_checks(reg, plan.tenants, lambda db: copy.dsn(stack, db))
        live = local.observe_replica(plan.pairs[0].replica)
        untouched = bool(live.reachable and live.in_recovery) and not local.observe_primary(
            plan.pairs[0].primary).read_only
        ok = probe["ok"] and all(s["ok"] for s in smoke) and untouched
        return ok, ("sandbox copy writable, smoke queries passed, live primary and replica untouched" if ok else
                    f"drill verification failed: probe {probe['detail']}, live untouched {untouched}"), \
            {"probe": probe, "smoke": smoke, "live_untouched": untouched}

    return _step(StepName.VERIFY, work, inp.get("run_id"))


def drill_cleanup(inp: dict[str, Any]) -> dict[str, Any]:
    return {"dropped": _local().drop_drill(inp["run_id"])}


# ---- the bundle -------------------------------------------------------------------------------


def write_bundle(inp: dict[str, Any]) -> dict[str, Any]:
    """Write the final evidence bundle (request, preflight, approval, steps, timings) once per run."""
    from continuity.adapters.storage.blob_store import BlobStore

    blobs = BlobStore()
    container = settings.get("CONTINUITY_EVIDENCE_CONTAINER")
    blobs.ensure_containers([container])
    name = f"{BUNDLE_PREFIX}/{inp['instance_id']}/{inp['run_id']}.json"
    body = json.dumps(inp["bundle"], sort_keys=True, indent=2, default=str).encode()
    body = blobs.upload_once(container, name, body, tags={"kind": "failover-bundle"})  # a re-run: the first stands
    return {"container": container, "blob": name, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
