"""Outgoing events: CloudEvents 1.0 with type prefix ``continuity.``; pure construction only.

Every event carries the tenant (or scope), the subject it is about, and the evidence chain head at
the time it was published, so that a consumer can tie it to the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

SOURCE = "/continuity/control-plane"


class EventType(StrEnum):
    BACKUP_CATALOGED = "continuity.backup.cataloged"
    BACKUP_REJECTED = "continuity.backup.rejected"
    RPO_AT_RISK = "continuity.rpo.at_risk"
    RPO_BREACHED = "continuity.rpo.breached"
    VALIDATION_SUCCEEDED = "continuity.validation.succeeded"
    VALIDATION_FAILED = "continuity.validation.failed"
    FAILOVER_REQUESTED = "continuity.failover.requested"
    FAILOVER_APPROVED = "continuity.failover.approved"
    FAILOVER_REJECTED = "continuity.failover.rejected"
    FAILOVER_EXPIRED = "continuity.failover.expired"
    FAILOVER_COMPLETED = "continuity.failover.completed"
    FAILOVER_FAILED = "continuity.failover.failed"
    RECOVERY_REQUESTED = "continuity.recovery.requested"
    RECOVERY_APPROVED = "continuity.recovery.approved"
    RECOVERY_COMPLETED = "continuity.recovery.completed"
    RECOVERY_FAILED = "continuity.recovery.failed"
    ROUTING_CHANGED = "continuity.routing.changed"
    RECOVERY_CHAIN_BROKEN = "continuity.recovery_chain.broken"


# Application Insights: the log record attribute that makes a log line a custom event (customEvents table),
# as azure-monitor-opentelemetry's exporter reads it. The alert rules and the workbook (infra/modules/alerts.bicep)
# query these names.
CUSTOM_EVENT_ATTRIBUTE = "microsoft.custom_event.name"


def custom_event_name(event_type: str) -> str:
    """The custom event an outgoing event is logged as: its type without ``continuity.`` (``rpo.breached``)."""
    return event_type.removeprefix("continuity.")


@dataclass(frozen=True)
class OutgoingEvent:
    """One event to publish; ``id`` is chosen by the caller so a retried publish is deduplicable."""

    id: str
    type: EventType
    subject: str
    time: datetime
    data: dict[str, Any] = field(default_factory=dict)

    def to_cloud_event(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": SOURCE,
            "type": str(self.type),
            "subject": self.subject,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "data": self.data,
        }


def make_event(event_type: EventType, *, event_id: str, subject: str, at: datetime, tenant: str | None,
               chain_head: dict[str, Any] | None, **data: Any) -> OutgoingEvent:
    """Build an event whose data always names the tenant (or None for platform scope) and the chain head."""
    payload: dict[str, Any] = {"tenant": tenant, "evidence_chain_head": chain_head}
    payload.update(data)
    return OutgoingEvent(id=event_id, type=event_type, subject=subject, time=at, data=payload)
