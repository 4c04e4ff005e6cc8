"""Activities of the retention orchestration: thin wrappers over :mod:`continuity.retention.service`.

Inputs and outputs are small JSON (a run id, a batch number, counts); the plan itself stays in the
control database.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from continuity.retention import service as retention_service
from continuity.retention.planner import parse_time

bp = df.Blueprint()


@bp.activity_trigger(input_name="request")
def begin_retention_run(request: dict[str, Any]) -> dict[str, Any]:
    return retention_service.begin_run(retention_service.open_ports(), request["run_id"],
                                       parse_time(request["as_of"], "as_of"), request["requested_by"])


@bp.activity_trigger(input_name="request")
def plan_retention_run(request: dict[str, Any]) -> dict[str, Any]:
    return retention_service.prepare_run(retention_service.open_ports(), request["run_id"])


@bp.activity_trigger(input_name="request")
def apply_retention_batch(request: dict[str, Any]) -> dict[str, Any]:
    return retention_service.apply_batch(retention_service.open_ports(), request["run_id"], int(request["batch"]))


@bp.activity_trigger(input_name="request")
def finish_retention_run(request: dict[str, Any]) -> dict[str, Any]:
    return retention_service.finish_run(retention_service.open_ports(), request["run_id"], request.get("error"))


@bp.activity_trigger(input_name="request")
def apply_archive_retention(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Base backups and WAL of the servers we run, kept as long as their tenants' tiers promise."""
    from continuity.kernel import settings
    from continuity.pitr import service as pitr

    results = pitr.archive_retention_for_run(settings.configured_registry(), parse_time(request["as_of"], "as_of"))
    return [{"server": r["server"], "deleted": r["deleted"], "kept": len(r["plan"]["keep"]),
             "wal_kept_from": r["plan"]["wal_kept_from"]} for r in results]
