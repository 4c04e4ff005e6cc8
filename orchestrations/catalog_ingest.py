"""Catalog ingest (BlobCreated) and catalog sweeps (reconcile timer, rebuild on request).

Ingest instance id ``catalog-{blob}-{etag}``: the same blob version delivered twice starts nothing new,
and the ingest itself is idempotent (duplicate, late and reordered events give one correct entry).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities import catalog as steps

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=4)


@bp.orchestration_trigger(context_name="context")
def catalog_ingest(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request: dict[str, Any] = context.get_input()
    outcome = yield context.call_activity_with_retry(steps.ingest_backup_blob, RETRY, request)
    context.set_custom_status({"action": outcome["action"], "tenant": outcome.get("tenant")})
    if outcome["action"] in ("cataloged", "rejected", "conflict"):
        yield context.call_activity_with_retry(steps.publish_catalog_event, RETRY,
                                               {"outcome": outcome, "event_id": request["event_id"]})
    return dict(outcome)


@bp.orchestration_trigger(context_name="context")
def catalog_maintenance(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    operation: str = context.get_input()
    report = yield context.call_activity_with_retry(steps.catalog_sweep, RETRY, operation)
    context.set_custom_status({"operation": operation, "ingested": report.get("ingested")})
    return dict(report)
