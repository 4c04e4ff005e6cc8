"""Activities of the failover orchestration: thin wrappers over continuity.failover.service."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from continuity.failover import service as failover_service

bp = df.Blueprint()


@bp.activity_trigger(input_name="inp")
def record_failover_evidence(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.record_event(inp)


@bp.activity_trigger(input_name="inp")
def failover_preflight(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.preflight(inp)


@bp.activity_trigger(input_name="inp")
def fence_primary(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.fence(inp)


@bp.activity_trigger(input_name="inp")
def promote_replica(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.promote(inp)


@bp.activity_trigger(input_name="inp")
def repoint_routing(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.repoint(inp)


@bp.activity_trigger(input_name="inp")
def verify_failover(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.verify(inp)


@bp.activity_trigger(input_name="inp")
def drill_copy(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.drill_copy(inp)


@bp.activity_trigger(input_name="inp")
def drill_promote(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.drill_promote(inp)


@bp.activity_trigger(input_name="inp")
def drill_verify(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.drill_verify(inp)


@bp.activity_trigger(input_name="inp")
def drill_cleanup(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.drill_cleanup(inp)


@bp.activity_trigger(input_name="inp")
def write_failover_bundle(inp: dict[str, Any]) -> dict[str, Any]:
    return failover_service.write_bundle(inp)
