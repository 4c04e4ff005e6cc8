"""Activities of the catalog orchestrations: thin wrappers over continuity.catalog.service."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from continuity.catalog import service as catalog_service

bp = df.Blueprint()


@bp.activity_trigger(input_name="request")
def ingest_backup_blob(request: dict[str, Any]) -> dict[str, Any]:
    return catalog_service.ingest(request["blob"], request.get("event_id"))


@bp.activity_trigger(input_name="request")
def publish_catalog_event(request: dict[str, Any]) -> dict[str, Any]:
    return catalog_service.publish_outcome(request["outcome"], request["event_id"])


@bp.activity_trigger(input_name="operation")
def catalog_sweep(operation: str) -> dict[str, Any]:
    if operation == "rebuild":
        return catalog_service.rebuild()
    return catalog_service.reconcile()
