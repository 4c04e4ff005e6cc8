"""Publishing outgoing events to the Event Grid custom topic (the devhost's local topic in `make run`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from continuity.kernel import settings
from continuity.kernel.errors import ConfigError, StoreUnavailable
from continuity.kernel.events import CUSTOM_EVENT_ATTRIBUTE, SOURCE, OutgoingEvent, custom_event_name

logger = logging.getLogger(__name__)


class EventPublisher:
    """Sends CloudEvents through ``EventGridPublisherClient``; every call bounded by a timeout."""

    def __init__(self, endpoint: str | None = None, key: str | None = None) -> None:
        self.endpoint = endpoint or settings.get("CONTINUITY_EVENTGRID_TOPIC_ENDPOINT") or _local_topic_endpoint()
        self.key = key or settings.get("CONTINUITY_EVENTGRID_TOPIC_KEY") or _local_topic_key()
        if not self.endpoint or not self.key:
            raise ConfigError("no Event Grid topic configured: set CONTINUITY_EVENTGRID_TOPIC_ENDPOINT and "
                              "CONTINUITY_EVENTGRID_TOPIC_KEY (locally the devhost provides both)")
        self.client = EventGridPublisherClient(self.endpoint, AzureKeyCredential(self.key),
                                               connection_timeout=5, read_timeout=15, retry_total=3)

    def publish(self, events: Sequence[OutgoingEvent]) -> None:
        if not events:
            return
        cloud = [CloudEvent(source=SOURCE, type=str(e.type), data=e.data, subject=e.subject, id=e.id, time=e.time)
                 for e in events]
        try:
            self.client.send(cloud)
        except AzureError as exc:
            raise StoreUnavailable(f"publishing {len(cloud)} event(s) failed: {str(exc).splitlines()[0][:200]}; "
                                   "check the Event Grid topic endpoint and key") from exc
        for e in events:
            # Also a custom event in Application Insights (``rpo.breached``...), which the alert rules query.
            logger.info("event published", extra={"event_type": str(e.type), "event_id": e.id,
                                                   "tenant": e.data.get("tenant"),
                                                   CUSTOM_EVENT_ATTRIBUTE: custom_event_name(str(e.type))})


def _devhost_state_file() -> Path:
    from continuity.kernel.settings import LocalStackSettings

    return LocalStackSettings.from_env().base_dir / "devhost" / "topic.json"


def _local_topic_endpoint() -> str:
    path = _devhost_state_file()
    if path.exists():
        return str(json.loads(path.read_text()).get("endpoint", ""))
    return ""


def _local_topic_key() -> str:
    path = _devhost_state_file()
    if path.exists():
        return str(json.loads(path.read_text()).get("key", ""))
    return ""
