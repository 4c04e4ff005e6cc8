"""Local Event Grid: the trigger webhook, a blob watcher (system topic), a custom topic, deliveries.

* ``POST /runtime/webhooks/eventgrid?functionName=NAME`` is the Functions host's Event Grid
  extension endpoint: subscription validation handshakes (Event Grid schema and CloudEvents
  abuse-protection ``OPTIONS``) and notifications, one invocation per event.
* :class:`BlobWatcher` polls the watched Azurite containers and emits
  ``Microsoft.Storage.BlobCreated`` events shaped like the storage system topic's.
* :class:`LocalTopic` accepts ``EventGridPublisherClient`` publishes (``aeg-sas-key``).
* :class:`EventRouter` delivers events to the subscriptions declared in
  ``CONTINUITY_DEVHOST_SUBSCRIPTIONS`` with retries and exponential backoff, appending every
  attempt and its outcome to ``events.jsonl``.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from continuity.kernel import settings
from continuity.kernel.errors import ConfigError, ContinuityError, InvalidRequest, Unauthorized

if TYPE_CHECKING:
    from devhost.host import Host
    from devhost.index import IndexedFunction
    from devhost.keys import HostKeys

logger = logging.getLogger(__name__)

LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
STORAGE_TOPIC = (f"/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/continuity-local/providers/"
                 f"Microsoft.Storage/storageAccounts/{settings.AZURITE_ACCOUNT}")
CUSTOM_TOPIC = (f"/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/continuity-local/providers/"
                f"Microsoft.EventGrid/topics/continuity")
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
TOPIC_API_VERSIONS = {"2018-01-01"}  # what EventGridPublisherClient (basic tier) sends
EVENT_GRID_REQUIRED = ("id", "subject", "eventType", "eventTime", "dataVersion")
CLOUD_EVENT_REQUIRED = ("id", "source", "type", "specversion")
MAX_ATTEMPTS = 6


class EventRejected(InvalidRequest):
    code = "invalid_event"


# ---- event parsing -----------------------------------------------------------------------------
def is_cloud_event(event: dict[str, Any]) -> bool:
    return "specversion" in event


def validate_events(payload: Any) -> list[dict[str, Any]]:
    """Check a batch of events (Event Grid schema or CloudEvents 1.0); one bad event refuses the batch.

    :raises EventRejected: naming the index and the missing or malformed field.
    """
    events = payload if isinstance(payload, list) else [payload]
    if not events:
        raise EventRejected("the request holds no events; send a JSON array of events or one CloudEvent")
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise EventRejected(f"event [{index}] is not a JSON object")
        if is_cloud_event(event):
            missing = [k for k in CLOUD_EVENT_REQUIRED if not isinstance(event.get(k), str) or not event.get(k)]
            if missing:
                raise EventRejected(f"CloudEvent [{index}] lacks {', '.join(missing)}")
            if event["specversion"] != "1.0":
                raise EventRejected(f"CloudEvent [{index}] has specversion {event['specversion']!r}; only 1.0 "
                                    f"is accepted")
        else:
            missing = [k for k in EVENT_GRID_REQUIRED if not isinstance(event.get(k), str)]
            if "data" not in event:
                missing.append("data")
            if missing:
                raise EventRejected(f"event [{index}] lacks {', '.join(missing)} (Event Grid schema: id, "
                                    f"subject, eventType, eventTime, data, dataVersion)")
            if not event["id"] or not event["eventType"]:
                raise EventRejected(f"event [{index}] has an empty id or eventType")
            try:
                dt.datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
            except ValueError as exc:
                raise EventRejected(f"event [{index}] eventTime {event['eventTime']!r} is not ISO 8601") from exc
    return events


def parse_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventRejected(f"the request body is not JSON ({exc})") from exc


def to_binding(event: dict[str, Any]) -> Any:
    """The object the Python worker hands the trigger: the azure.functions converter itself decides."""
    from azure.functions import meta
    from azure.functions.eventgrid import EventGridEventInConverter

    return EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata=None)


def to_cloud_event(event: dict[str, Any]) -> dict[str, Any]:
    """Event Grid schema to CloudEvents 1.0, the mapping Event Grid applies for CloudEvents delivery."""
    if is_cloud_event(event):
        return event
    converted = {"specversion": "1.0", "id": event["id"], "source": event.get("topic", ""),
                 "type": event["eventType"], "subject": event["subject"], "time": event["eventTime"],
                 "data": event.get("data")}
    if event.get("dataVersion"):
        converted["dataschema"] = event["dataVersion"]
    return converted


# ---- the trigger webhook ----------------------------------------------------------------------
Response = tuple[int, dict[str, str], bytes]


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(payload).encode()


def handle_webhook(host: Host, method: str, query: dict[str, str], headers: dict[str, str], body: bytes) -> Response:
    """``/runtime/webhooks/eventgrid``: handshake or notification for one Event Grid trigger.

    :raises Unauthorized: missing or wrong system key (``code``), as in Azure.
    :raises EventRejected: malformed payload.
    """
    from devhost.host import FunctionNotFound
    from devhost.index import TriggerType

    presented = query.get("code") or headers.get("x-functions-key")
    if not host.keys.allows_event_grid(presented):
        raise Unauthorized("the Event Grid webhook needs the eventgrid_extension system key as ?code=")
    name = query.get("functionName", "")
    if not name:
        raise InvalidRequest("missing query parameter functionName")
    function = host.function(name)
    if function.trigger_type != TriggerType.EVENT_GRID or function.unservable:
        raise FunctionNotFound(f"function {name!r} is not a served Event Grid trigger")
    if method == "OPTIONS":
        # CloudEvents 1.0 webhook abuse protection: echo the origin to allow it.
        origin = headers.get("webhook-request-origin")
        if not origin:
            raise InvalidRequest("OPTIONS needs a WebHook-Request-Origin header (CloudEvents abuse protection)")
        return 200, {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST"}, b""
    if method != "POST":
        raise InvalidRequest(f"{method} is not accepted here; Event Grid POSTs events")
    event_type = headers.get("aeg-event-type", "")
    payload = parse_body(body)
    if event_type == "SubscriptionValidation":
        events = validate_events(payload)
        first = events[0]
        data = first.get("data")
        code = data.get("validationCode") if isinstance(data, dict) else None
        if first.get("eventType") != VALIDATION_EVENT or not isinstance(code, str):
            raise EventRejected(f"a SubscriptionValidation request must carry one {VALIDATION_EVENT} with "
                                f"data.validationCode")
        logger.info("event grid subscription validated for %s", function.name)
        return _json(200, {"validationResponse": code})
    if event_type == "Unsubscribe":
        return 202, {}, b""
    content_type = headers.get("content-type", "")
    if event_type not in ("Notification", "") or (not event_type and "cloudevents" not in content_type):
        raise InvalidRequest("header aeg-event-type must be SubscriptionValidation, Notification or Unsubscribe")
    events = validate_events(payload)
    failures = 0
    for event in events:
        try:
            host.invoke_event(function, event)
        except ContinuityError:
            failures += 1
    if failures:
        # Event Grid retries the whole batch on a 5xx, as with the real host.
        return _json(500, {"error": {"code": "function_failed",
                                     "message": f"{failures} of {len(events)} event(s) failed in {function.name}; "
                                                f"see the devhost log"}})
    return 202, {}, b""


# ---- subscriptions and deliveries ---------------------------------------------------------------
class Subscription(BaseModel):
    """One local Event Grid subscription (the counterpart of one Bicep eventSubscription)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1)
    source: Literal["storage", "topic"]
    function: str = Field(min_length=1)
    included_event_types: list[str] | None = Field(default=None, alias="includedEventTypes")
    subject_begins_with: str = Field(default="", alias="subjectBeginsWith")
    subject_ends_with: str = Field(default="", alias="subjectEndsWith")
    event_delivery_schema: Literal["EventGridSchema", "CloudEventSchemaV1_0"] = Field(
        default="EventGridSchema", alias="eventDeliverySchema")

    def matches(self, source: str, event: dict[str, Any]) -> bool:
        if source != self.source:
            return False
        event_type = event.get("type") if is_cloud_event(event) else event.get("eventType")
        if self.included_event_types is not None and event_type not in self.included_event_types:
            return False
        subject = str(event.get("subject") or "").lower()
        # Event Grid subject filters are case-insensitive unless isSubjectCaseSensitive is set.
        return subject.startswith(self.subject_begins_with.lower()) and subject.endswith(
            self.subject_ends_with.lower())


def parse_subscriptions(raw: str, functions: dict[str, IndexedFunction]) -> tuple[list[Subscription], dict[str, str]]:
    """Read ``CONTINUITY_DEVHOST_SUBSCRIPTIONS``: the active subscriptions, and the inactive ones with why.

    A subscription whose function is not an Event Grid trigger of the served app is inactive, not
    fatal: the same settings serve function_app.py and the test apps.

    :raises ConfigError: malformed JSON or entry, naming the entry and field.
    """
    from devhost.index import TriggerType

    inactive: dict[str, str] = {}
    if not raw.strip():
        return [], inactive
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"CONTINUITY_DEVHOST_SUBSCRIPTIONS is not JSON ({exc}); expected a list of "
                          f'{{"name", "source", "function"}}') from exc
    if not isinstance(entries, list):
        raise ConfigError("CONTINUITY_DEVHOST_SUBSCRIPTIONS must be a JSON list")
    result = []
    for index, entry in enumerate(entries):
        try:
            sub = Subscription.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"CONTINUITY_DEVHOST_SUBSCRIPTIONS[{index}].{where}: {first['msg']}") from exc
        target = functions.get(sub.function)
        if target is None or target.trigger_type != TriggerType.EVENT_GRID or target.unservable:
            inactive[sub.name] = f"function {sub.function!r} is not a served Event Grid trigger of this app"
            logger.warning("event grid subscription %s is inactive: %s", sub.name, inactive[sub.name])
            continue
        result.append(sub)
    return result, inactive


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    subscription: Subscription = field(compare=False)
    event: dict[str, Any] = field(compare=False)
    attempt: int = field(default=1, compare=False)


class EventRouter:
    """Routes published events to subscriptions and delivers them in the background, with retries.

    A failed delivery is retried with exponential backoff (``backoff_seconds * 2**n``, at most 60 s)
    up to :data:`MAX_ATTEMPTS`, then dead-lettered (recorded as such). Every attempt is appended to
    the JSONL log with its outcome.
    """

    def __init__(self, host: Host, subscriptions: list[Subscription], log_path: Path, *,
                 backoff_seconds: float = 0.5, workers: int = 2) -> None:
        self.host = host
        self.subscriptions = subscriptions
        self.log_path = log_path
        self.backoff_seconds = backoff_seconds
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._log_lock = threading.Lock()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"eventgrid-delivery-{i}", daemon=True)
                         for i in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def subscriptions_for(self, source: str) -> list[Subscription]:
        return [s for s in self.subscriptions if s.source == source]

    def publish(self, source: Literal["storage", "topic"], events: list[dict[str, Any]]) -> int:
        """Queue each event for every matching subscription; returns how many deliveries were queued."""
        queued = 0
        with self._cond:
            for event in events:
                matched = [s for s in self.subscriptions if s.matches(source, event)]
                if not matched:
                    self._record({"source": source, "subscription": None, "function": None, "attempt": 0,
                                  "outcome": "unrouted", "event": event})
                for sub in matched:
                    heapq.heappush(self._queue, _Delivery(time.monotonic(), next(self._seq), sub, event))
                    queued += 1
            self._cond.notify_all()
        return queued

    def _record(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"), **entry}, default=str)
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as out:
                out.write(line + "\n")

    def _next(self) -> _Delivery | None:
        with self._cond:
            while not self._stopping:
                if self._queue:
                    wait = self._queue[0].due - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._queue)
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        while (item := self._next()) is not None:
            self._deliver(item)

    def _deliver(self, item: _Delivery) -> None:
        sub = item.subscription
        event = to_cloud_event(item.event) if sub.event_delivery_schema == "CloudEventSchemaV1_0" else item.event
        base = {"source": sub.source, "subscription": sub.name, "function": sub.function, "attempt": item.attempt,
                "event": event}
        try:
            self.host.invoke_event(self.host.function(sub.function), event)
        except ContinuityError as exc:
            if item.attempt >= MAX_ATTEMPTS:
                self._record({**base, "outcome": "dead-lettered", "error": str(exc)})
                logger.error("event %s dead-lettered after %d attempts to %s", event.get("id"), item.attempt,
                             sub.function)
                return
            delay = min(self.backoff_seconds * 2 ** (item.attempt - 1), 60.0)
            self._record({**base, "outcome": "failed", "error": str(exc), "retryInSeconds": delay})
            with self._cond:
                heapq.heappush(self._queue, _Delivery(time.monotonic() + delay, next(self._seq), sub, item.event,
                                                      item.attempt + 1))
                self._cond.notify_all()
            return
        self._record({**base, "outcome": "delivered"})


# ---- custom topic -------------------------------------------------------------------------------
class LocalTopic:
    """The local custom topic at ``/eventgrid/topics/continuity/api/events`` (``EventGridPublisherClient``)."""

    def __init__(self, router: EventRouter, keys: HostKeys) -> None:
        self.router = router
        self.keys = keys

    def handle(self, method: str, query: dict[str, str], headers: dict[str, str], body: bytes) -> Response:
        """Accept a publish: 200 and an empty body, like Event Grid; deliveries happen in the background.

        :raises Unauthorized: ``aeg-sas-key`` missing or wrong.
        :raises EventRejected: not JSON, not events, or an unsupported api-version.
        """
        if method != "POST":
            raise InvalidRequest(f"{method} is not accepted; publish events with POST")
        if not self.keys.allows_topic(headers.get("aeg-sas-key")):
            raise Unauthorized("publishing needs the topic key in the aeg-sas-key header "
                               "(CONTINUITY_EVENTGRID_TOPIC_KEY, or topicKey in the devhost keys.json)")
        version = query.get("api-version", "")
        if version not in TOPIC_API_VERSIONS:
            raise EventRejected(f"api-version {version!r} is not supported; use one of "
                                f"{', '.join(sorted(TOPIC_API_VERSIONS))}")
        events = validate_events(parse_body(body))
        content_type = headers.get("content-type", "")
        cloud = [is_cloud_event(e) for e in events]
        if any(cloud) and not all(cloud):
            raise EventRejected("a batch mixes CloudEvents and Event Grid events; send one schema per request")
        if all(cloud) and "cloudevents" not in content_type:
            raise EventRejected("CloudEvents must be sent as application/cloudevents-batch+json")
        for event in events:
            if not is_cloud_event(event):
                # Event Grid stamps the topic and metadata version on custom-topic events.
                event.setdefault("topic", CUSTOM_TOPIC)
                event.setdefault("metadataVersion", "1")
        self.router.publish("topic", events)
        return 200, {"Content-Length": "0"}, b""


# ---- blob watcher (storage system topic) -------------------------------------------------------
def quoted_etag(etag: object) -> str:
    """The ETag as the storage service sends it in BlobCreated (``"0x8D..."``, quotes included)."""
    text = str(etag)
    return text if text.startswith('"') else f'"{text}"'


BASELINE_MARGIN = dt.timedelta(seconds=2)


class BlobWatcher:
    """Polls Azurite containers and emits ``Microsoft.Storage.BlobCreated`` for new or overwritten blobs.

    Event Grid emits nothing for blobs that existed before the subscription: the first listing of a
    container takes those as its baseline, judged by their Last-Modified against ``subscribed_at`` (when
    this watcher was made), not by whether the first listing happened to see them. Blobs written between
    the host reporting ready and that first listing are therefore still emitted. What it has seen is kept
    in a state file, so blobs created while the devhost was down are emitted when it comes back, as Event
    Grid would deliver them late.
    """

    def __init__(self, router: EventRouter, containers: list[str], state_file: Path, *,
                 poll_seconds: float = 2.0, subscribed_at: dt.datetime | None = None) -> None:
        self.router = router
        self.subscribed_at = subscribed_at or dt.datetime.now(dt.UTC)
        self.containers = containers
        self.state_file = state_file
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventgrid-blob-watcher", daemon=True)
        self.last_error = ""
        self._state = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"sequencer": 0, "containers": {}}
        return data if isinstance(data, dict) and "containers" in data else {"sequencer": 0, "containers": {}}

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        os.replace(tmp, self.state_file)

    def start(self) -> None:
        if self.containers and self.router.subscriptions_for("storage"):
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from azure.core.exceptions import AzureError

        from continuity.adapters.storage.blob_store import BlobStore

        store: BlobStore | None = None
        while not self._stop.is_set():
            try:
                store = store or BlobStore()
                self.poll(store)
                self.last_error = ""
            except (AzureError, ContinuityError, OSError) as exc:
                if str(exc) != self.last_error:
                    logger.warning("blob watcher cannot list containers: %s", exc)
                self.last_error = str(exc)
            self._stop.wait(self.poll_seconds)

    def poll(self, store: Any) -> list[dict[str, Any]]:
        """List every watched container once; emit and return the BlobCreated events for new blobs."""
        from azure.core.exceptions import ResourceNotFoundError

        emitted: list[dict[str, Any]] = []
        for container in self.containers:
            client = store.container(container)
            try:
                blobs = {b.name: b for b in client.list_blobs(timeout=30)}
            except ResourceNotFoundError:
                blobs = {}
            known: dict[str, str] | None = self._state["containers"].get(container)
            if known is None:
                known = {name: quoted_etag(b.etag) for name, b in blobs.items() if self._before_subscription(b)}
                self._state["containers"][container] = known
                self._save()
            for name, blob in blobs.items():
                if known.get(name) == quoted_etag(blob.etag):
                    continue
                emitted.append(self._event(store, client, container, blob))
                known[name] = quoted_etag(blob.etag)
            for name in set(known) - set(blobs):
                del known[name]
            if emitted:
                self._save()
        if emitted:
            self.router.publish("storage", emitted)
        return emitted

    def _before_subscription(self, blob: Any) -> bool:
        """Whether the blob was last written clearly before the subscription. Last-Modified has one-second
        resolution: a blob within the margin counts as new (a duplicate event is harmless, a lost one is not)."""
        modified = blob.last_modified
        return modified is not None and modified < self.subscribed_at - BASELINE_MARGIN

    def _event(self, store: Any, client: Any, container: str, blob: Any) -> dict[str, Any]:
        self._state["sequencer"] = int(self._state.get("sequencer", 0)) + 1
        settings_ = blob.content_settings
        blob_type = str(getattr(blob.blob_type, "value", blob.blob_type) or "BlockBlob")
        api = "PutBlob"
        if blob_type == "BlockBlob":
            # The storage service reports the API that created the blob; a committed block list means
            # the SDK uploaded in blocks (PutBlockList), none means a single PutBlob.
            try:
                committed, _ = client.get_blob_client(blob.name).get_block_list("committed", timeout=30)
                api = "PutBlockList" if committed else "PutBlob"
            except Exception:  # noqa: BLE001 - the API name is informative only; fall back to PutBlob
                api = "PutBlob"
        created = blob.last_modified or dt.datetime.now(dt.UTC)
        url = f"{client.url.rstrip('/')}/{blob.name}"
        return {
            "topic": STORAGE_TOPIC,
            "subject": f"/blobServices/default/containers/{container}/blobs/{blob.name}",
            "eventType": "Microsoft.Storage.BlobCreated",
            "id": str(uuid.uuid4()),
            "data": {
                "api": api,
                "clientRequestId": str(uuid.uuid4()),
                "requestId": str(uuid.uuid4()),
                "eTag": quoted_etag(blob.etag),
                "contentType": settings_.content_type or "application/octet-stream",
                "contentLength": int(blob.size or 0),
                "blobType": blob_type,
                "url": url,
                "sequencer": f"{self._state['sequencer']:032x}",
                "storageDiagnostics": {"batchId": str(uuid.uuid4())},
            },
            "dataVersion": "",
            "metadataVersion": "1",
            "eventTime": created.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
