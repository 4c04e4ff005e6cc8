"""Activities of the tenant recovery orchestration: thin wrappers over continuity.recovery.service."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from continuity.recovery import service as recovery_service

bp = df.Blueprint()


@bp.activity_trigger(input_name="inp")
def record_recovery_evidence(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.record_event(inp)


@bp.activity_trigger(input_name="inp")
def rewind_tenant(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.rewind(inp)


@bp.activity_trigger(input_name="inp")
def confirm_recovery_backup(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.confirm_backup(inp)


@bp.activity_trigger(input_name="inp")
def stage_recovery(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.stage(inp)


@bp.activity_trigger(input_name="inp")
def check_staged_copy(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.check(inp)


@bp.activity_trigger(input_name="inp")
def fence_tenant_database(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.fence(inp)


@bp.activity_trigger(input_name="inp")
def swap_tenant_database(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.swap(inp)


@bp.activity_trigger(input_name="inp")
def reopen_tenant_database(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.reopen(inp)


@bp.activity_trigger(input_name="inp")
def verify_recovery(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.verify(inp)


@bp.activity_trigger(input_name="inp")
def rollback_recovery(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.rollback(inp)


@bp.activity_trigger(input_name="inp")
def drop_staged_copy(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.cleanup(inp)


@bp.activity_trigger(input_name="inp")
def backup_recovered_state(inp: dict[str, Any]) -> dict[str, Any]:
    return recovery_service.backup_after(inp)
