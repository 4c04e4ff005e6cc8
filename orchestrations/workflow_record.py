"""What an approval-gated workflow (failover, tenant recovery) shows and records, shared by both.

``show`` updates the custom status callers poll; ``record`` appends one evidence record (and optionally publishes
an event) through the workflow's own evidence activity, then shows the new chain head. Deterministic: only
Durable calls, in the same order as before, so histories of running instances replay unchanged.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from continuity.kernel.events import EventType


class WorkflowRecord:
    def __init__(self, context: df.DurableOrchestrationContext, status: dict[str, Any], activity: Any,
                 retry: df.RetryOptions, *, tenant: str | None, event_data: dict[str, Any]) -> None:
        self.context = context
        self.status = status
        self.activity = activity
        self.retry = retry
        self.tenant = tenant
        self.event_data = event_data

    def show(self, **changes: Any) -> None:
        self.status.update(changes)
        self.context.set_custom_status(self.status)

    def record(self, action: str, actor: str, data: dict[str, Any], event: EventType | None = None,
               key: str | None = None, **event_data: Any) -> Generator[Any, Any, None]:
        result = yield self.context.call_activity_with_retry(self.activity, self.retry, {
            "instance_id": self.context.instance_id, "run_id": self.status["run_id"], "action": action,
            "actor": actor, "data": data, "event": str(event) if event else None, "tenant": self.tenant,
            "key": key or action, "event_data": {**self.event_data, **event_data}})
        self.show(chain_head=result["chain_head"])
