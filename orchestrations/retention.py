"""Retention: plan (pure, in an activity) → apply in batches (one activity each, retried) → record.

Instance id ``retention-YYYYMMDD`` (the trigger makes it; a second start the same day answers with the
existing instance). The plan's ``now`` is the input's ``as_of`` (admin route, tests) or the context's
replay-safe clock. One run applies at a time: the first activity takes a lease in the control database
and a refusal ends the run with its reason. A batch that keeps failing after its retries fails the run
(recorded, lease released); starting the same instance again resumes: done actions are not redone.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities import retention as steps

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)


class RetentionRunFailed(Exception):
    """The run stopped after recording what it did; restart the instance to resume."""


@bp.orchestration_trigger(context_name="context")
def retention(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request: dict[str, Any] = context.get_input() or {}
    as_of = request.get("as_of") or context.current_utc_datetime.isoformat()
    run = {"run_id": context.instance_id, "as_of": as_of, "requested_by": request.get("requested_by", "timer")}
    begun: dict[str, Any] = yield context.call_activity(steps.begin_retention_run, run)
    if begun["state"] in ("refused", "completed"):
        context.set_custom_status({"stage": begun["state"], "reason": begun.get("reason")})
        return begun
    error: str | None = None
    archive: list[dict[str, Any]] = []
    try:
        planned = yield context.call_activity_with_retry(steps.plan_retention_run, RETRY, run)
        context.set_custom_status({"stage": "applying", "batches": planned["batches"], "done": 0,
                                   "summary": planned["summary"]})
        for batch in range(planned["batches"]):
            yield context.call_activity_with_retry(steps.apply_retention_batch, RETRY, {**run, "batch": batch})
            context.set_custom_status({"stage": "applying", "batches": planned["batches"], "done": batch + 1,
                                       "summary": planned["summary"]})
        # The WAL archive of the servers we run: base backups (and the WAL only they need) past every tier's
        # point-in-time window go, with Barman's own delete.
        archive = yield context.call_activity_with_retry(steps.apply_archive_retention, RETRY, run)
    except Exception as exc:  # noqa: BLE001 - record the failure and release the lease before failing
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
    summary: dict[str, Any] = yield context.call_activity_with_retry(steps.finish_retention_run, RETRY,
                                                                     {**run, "error": error})
    context.set_custom_status({"stage": summary["state"], "outcomes": summary.get("outcomes"),
                               "not_done_count": summary.get("not_done_count")})
    if error:
        raise RetentionRunFailed(f"retention run {context.instance_id} failed: {error}; restart it to resume")
    return {**summary, "archive": archive}
