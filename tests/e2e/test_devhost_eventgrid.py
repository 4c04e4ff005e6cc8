"""Event Grid on the devhost: the trigger webhook, the local custom topic, the blob watcher, deliveries."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from devhost.eventgrid import BASELINE_MARGIN
from tests.e2e.devhost_support import PORT_BASE, SampleDevhost
from tests.waiting import wait_until

pytestmark = pytest.mark.devhost
TOPIC_TYPES = ["continuity.test.published", "continuity.test.flaky"]


@pytest.fixture(scope="module")
def devhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleDevhost]:
    subscriptions = [{"name": "custom-to-on-event", "source": "topic", "function": "on_event",
                      "includedEventTypes": TOPIC_TYPES}]
    host = SampleDevhost(PORT_BASE + 75, tmp_path_factory.mktemp("devhost-eventgrid"),
                         CONTINUITY_DEVHOST_SUBSCRIPTIONS=json.dumps(subscriptions))
    host.start()
    yield host
    host.stop()


def eg_event(**overrides: Any) -> dict[str, Any]:
    event = {"id": str(uuid.uuid4()),
             "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.EventGrid/topics/z",
             "subject": "tenants/acme", "eventType": "continuity.test.delivered",
             "eventTime": dt.datetime.now(dt.UTC).isoformat(), "data": {"n": 1}, "dataVersion": "1.0",
             "metadataVersion": "1"}
    event.update(overrides)
    return event


def cloud_event(**overrides: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/continuity/tests", "type": "continuity.test.ce",
             "subject": "tenants/acme", "time": dt.datetime.now(dt.UTC).isoformat(), "data": {"n": 2}}
    event.update(overrides)
    return event


def webhook(host: SampleDevhost, function: str = "on_event", code: str | None = None) -> str:
    key = host.keys["eventGridKey"] if code is None else code
    return f"/runtime/webhooks/eventgrid?functionName={function}&code={key}"


def post(host: SampleDevhost, path: str, payload: Any, event_type: str = "Notification",
         content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return host.request("POST", path, body, {"aeg-event-type": event_type, "Content-Type": content_type})


def error_code(raw: bytes) -> str:
    return str(json.loads(raw)["error"]["code"])


# ---- handshakes ------------------------------------------------------------------------------------
def test_event_grid_schema_validation_handshake_echoes_the_code(devhost: SampleDevhost) -> None:
    validation = eg_event(eventType="Microsoft.EventGrid.SubscriptionValidationEvent",
                          data={"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x"})
    status, _, raw = post(devhost, webhook(devhost), [validation], event_type="SubscriptionValidation")
    assert status == 200 and json.loads(raw) == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert not [c for c in devhost.calls("on_event") if c["id"] == validation["id"]]


def test_cloudevents_abuse_protection_handshake_allows_the_origin(devhost: SampleDevhost) -> None:
    status, headers, _ = devhost.request("OPTIONS", webhook(devhost),
                                         headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert status == 200 and headers["webhook-allowed-origin"] == "eventgrid.azure.net"


def test_validation_without_a_validation_code_is_refused(devhost: SampleDevhost) -> None:
    status, _, raw = post(devhost, webhook(devhost), [eg_event()], event_type="SubscriptionValidation")
    assert status == 400 and error_code(raw) == "invalid_event"


# ---- deliveries to the webhook ----------------------------------------------------------------------
def test_event_grid_array_invokes_the_trigger_once_per_event(devhost: SampleDevhost) -> None:
    events = [eg_event(subject=f"tenants/t{i}") for i in range(3)]
    status, _, _ = post(devhost, webhook(devhost), events)
    assert status == 202
    ids = {e["id"] for e in events}
    calls = [c for c in devhost.calls("on_event") if c["id"] in ids]
    assert len(calls) == 3 and {c["id"] for c in calls} == ids
    first = next(c for c in calls if c["id"] == events[0]["id"])
    assert first["type"] == "EventGridEvent" and first["event_type"] == "continuity.test.delivered"
    assert first["subject"] == "tenants/t0" and first["data"] == {"n": 1} and first["data_version"] == "1.0"
    assert first["topic"] == events[0]["topic"]
    assert dt.datetime.fromisoformat(first["event_time"]) == dt.datetime.fromisoformat(events[0]["eventTime"])


def test_single_cloud_event_invokes_the_trigger_once_with_a_cloud_event(devhost: SampleDevhost) -> None:
    event = cloud_event()
    status, _, _ = post(devhost, webhook(devhost), event, content_type="application/cloudevents+json")
    assert status == 202
    calls = [c for c in devhost.calls("on_event") if c["id"] == event["id"]]
    assert len(calls) == 1
    assert calls[0]["type"] == "CloudEvent" and calls[0]["event_type"] == "continuity.test.ce"
    assert calls[0]["source"] == "/continuity/tests" and calls[0]["data"] == {"n": 2}


def test_cloud_event_batch_invokes_the_trigger_once_per_event(devhost: SampleDevhost) -> None:
    events = [cloud_event(), cloud_event()]
    status, _, _ = post(devhost, webhook(devhost), events, content_type="application/cloudevents-batch+json")
    assert status == 202
    assert len([c for c in devhost.calls("on_event") if c["id"] in {e["id"] for e in events}]) == 2


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "not JSON"),
    ([], "holds no events"),
    ([{"id": "1", "eventType": "x"}], "lacks subject, eventTime, dataVersion, data"),
    ([eg_event(eventTime="yesterday")], "is not ISO 8601"),
    ([cloud_event(specversion="0.3")], "only 1.0"),
    ([cloud_event(source=None)], "lacks source"),
    (["just a string"], "is not a JSON object"),
])
def test_malformed_deliveries_are_refused_with_400_and_invoke_nothing(devhost: SampleDevhost, payload: Any,
                                                                      reason: str) -> None:
    before = len(devhost.calls("on_event"))
    status, _, raw = post(devhost, webhook(devhost), payload)
    assert status == 400
    assert error_code(raw) == "invalid_event" and reason in json.loads(raw)["error"]["message"]
    assert len(devhost.calls("on_event")) == before


def test_webhook_refuses_a_missing_or_wrong_system_key(devhost: SampleDevhost) -> None:
    path = "/runtime/webhooks/eventgrid?functionName=on_event"
    assert post(devhost, path, [eg_event()])[0] == 401
    assert post(devhost, webhook(devhost, code="wrong"), [eg_event()])[0] == 401
    assert post(devhost, webhook(devhost, code=devhost.keys["functionKey"]), [eg_event()])[0] == 401


def test_webhook_refuses_unknown_and_non_event_grid_functions_with_404(devhost: SampleDevhost) -> None:
    for name in ("nope", "hello"):
        status, _, raw = post(devhost, webhook(devhost, function=name), [eg_event()])
        assert status == 404 and error_code(raw) == "function_not_found"


def test_a_failing_event_makes_the_webhook_answer_500_so_event_grid_retries(devhost: SampleDevhost) -> None:
    event = eg_event(data={"fail_times": 1})
    status, _, raw = post(devhost, webhook(devhost), [event])
    assert status == 500 and error_code(raw) == "function_failed"
    assert post(devhost, webhook(devhost), [event])[0] == 202  # the retry succeeds


# ---- local custom topic --------------------------------------------------------------------------
def publisher(host: SampleDevhost, key: str | None = None) -> EventGridPublisherClient:
    endpoint = f"http://127.0.0.1:{host.port}/eventgrid/topics/continuity/api/events"
    return EventGridPublisherClient(endpoint, AzureKeyCredential(key or host.keys["topicKey"]), retry_total=0)


def deliveries(host: SampleDevhost, event_id: str) -> list[dict[str, Any]]:
    return [e for e in host.events_log() if e["event"]["id"] == event_id]


def test_topic_accepts_an_sdk_publish_and_delivers_it_to_the_subscribed_trigger(devhost: SampleDevhost) -> None:
    event = EventGridEvent(subject="tenants/acme/backups/b1", event_type="continuity.test.published",
                           data={"tenant": "acme"}, data_version="1.0")
    with publisher(devhost) as client:
        client.send([event])
    call = wait_until(lambda: [c for c in devhost.calls("on_event") if c["id"] == str(event.id)], timeout=10,
                      what="on_event called with the event")[0]
    assert call["type"] == "EventGridEvent" and call["subject"] == "tenants/acme/backups/b1"
    assert call["data"] == {"tenant": "acme"} and call["topic"].endswith("/Microsoft.EventGrid/topics/continuity")
    logged = wait_until(lambda: deliveries(devhost, str(event.id)), timeout=15, what="the delivery logged")
    assert [(e["subscription"], e["function"], e["attempt"], e["outcome"]) for e in logged] == [
        ("custom-to-on-event", "on_event", 1, "delivered")]


def test_topic_accepts_a_cloud_event_publish_and_delivers_a_cloud_event(devhost: SampleDevhost) -> None:
    event = CloudEvent(source="/continuity/control-plane", type="continuity.test.published", data={"x": 1})
    with publisher(devhost) as client:
        client.send(event)
    call = wait_until(lambda: [c for c in devhost.calls("on_event") if c["id"] == str(event.id)], timeout=10,
                      what="on_event called with the event")[0]
    assert call["type"] == "CloudEvent" and call["source"] == "/continuity/control-plane"


def test_topic_refuses_a_publish_with_the_wrong_key(devhost: SampleDevhost) -> None:
    with publisher(devhost, key="not-the-key") as client, pytest.raises(ClientAuthenticationError):
        client.send(EventGridEvent(subject="s", event_type="continuity.test.published", data={}, data_version="1"))


def test_topic_refuses_a_missing_api_version_and_malformed_events(devhost: SampleDevhost) -> None:
    path = "/eventgrid/topics/continuity/api/events"
    headers = {"aeg-sas-key": devhost.keys["topicKey"], "Content-Type": "application/json"}
    status, _, raw = devhost.request("POST", path, json.dumps([eg_event()]).encode(), headers)
    assert status == 400 and "api-version" in json.loads(raw)["error"]["message"]
    status, _, raw = devhost.request("POST", path + "?api-version=2018-01-01", b"[{}]", headers)
    assert status == 400 and error_code(raw) == "invalid_event"


def test_failed_deliveries_are_retried_with_backoff_and_every_attempt_is_logged(devhost: SampleDevhost) -> None:
    event = EventGridEvent(subject="tenants/acme", event_type="continuity.test.flaky", data={"fail_times": 2},
                           data_version="1.0")
    with publisher(devhost) as client:
        client.send(event)
    logged = wait_until(lambda: (d := deliveries(devhost, str(event.id))) and d[-1]["outcome"] == "delivered" and d,
                        timeout=15, what="the event delivered after its retries")
    assert [(e["attempt"], e["outcome"]) for e in logged] == [(1, "failed"), (2, "failed"), (3, "delivered")]
    assert [e.get("retryInSeconds") for e in logged[:2]] == [0.5, 1.0]
    assert "failing attempt 1" not in logged[0]["error"]  # the caller-facing error names no user detail
    at = [dt.datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in logged]
    assert (at[2] - at[0]).total_seconds() >= 1.4


def test_events_no_subscription_wants_are_logged_as_unrouted_and_invoke_nothing(devhost: SampleDevhost) -> None:
    event = EventGridEvent(subject="s", event_type="continuity.test.unwanted", data={}, data_version="1")
    with publisher(devhost) as client:
        client.send(event)
    logged = wait_until(lambda: deliveries(devhost, str(event.id)), timeout=15, what="the delivery logged")
    assert [e["outcome"] for e in logged] == ["unrouted"]
    assert not [c for c in devhost.calls("on_event") if c["id"] == str(event.id)]


# ---- blob watcher (real Azurite) ----------------------------------------------------------------
@pytest.mark.stack
def test_blob_watcher_emits_a_real_blob_created_event_for_a_new_blob(blob_store: Any, tmp_path: Path) -> None:
    container = f"e2e-watch-{uuid.uuid4().hex[:8]}"
    blob_store.ensure_containers([container])
    blob_store.upload(container, "existing/before.txt", b"was here before the subscription")
    # The watcher counts a blob written within BASELINE_MARGIN of its start as new (Last-Modified has one-second
    # resolution): start it only once this blob is clearly older than that.
    before = blob_store.container(container).get_blob_client("existing/before.txt").get_blob_properties()
    wait_until(lambda: dt.datetime.now(dt.UTC) > before.last_modified + BASELINE_MARGIN, timeout=10,
               what="the pre-existing blob older than the watcher's baseline margin")
    subscriptions = [{"name": "backups-created", "source": "storage", "function": "on_event",
                      "includedEventTypes": ["Microsoft.Storage.BlobCreated"],
                      "subjectBeginsWith": f"/blobServices/default/containers/{container}/blobs/"}]
    host = SampleDevhost(PORT_BASE + 79, tmp_path, CONTINUITY_DEVHOST_SUBSCRIPTIONS=json.dumps(subscriptions),
                         CONTINUITY_DEVHOST_WATCHED_CONTAINERS=container, CONTINUITY_DEVHOST_BLOB_POLL_SECONDS="0.3")
    host.start()
    try:
        wait_until(lambda: (host.dir / "blobwatch.json").exists(), timeout=10, what="the watcher's baseline taken")
        name = "acme/2026/01/02/b-1/db.dump"
        blob_store.upload(container, name, b"\x00" * 1234)
        props = blob_store.container(container).get_blob_client(name).get_blob_properties()
        call = wait_until(lambda: host.calls("on_event"), timeout=15, what="on_event called for the new blob")
        assert len(call) == 1, "the blob that existed before the subscription must not be emitted"
        # The router logs "delivered" once the function has returned: after the call it made, so wait for it.
        event = wait_until(lambda: next((e["event"] for e in host.events_log() if e["outcome"] == "delivered"), None),
                           timeout=15, what="the delivery logged")
    finally:
        host.stop()
    assert event["eventType"] == "Microsoft.Storage.BlobCreated"
    assert event["subject"] == f"/blobServices/default/containers/{container}/blobs/{name}"
    assert event["topic"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    assert event["dataVersion"] == "" and event["metadataVersion"] == "1"
    uuid.UUID(event["id"])
    data = event["data"]
    assert data["api"] == "PutBlob" and data["blobType"] == "BlockBlob"
    assert data["url"] == f"{blob_store.container(container).url}/{name}"
    assert data["eTag"] == props.etag and data["contentLength"] == 1234
    assert data["contentType"] == props.content_settings.content_type
    assert re.fullmatch(r"[0-9a-f]{32}", data["sequencer"])
    assert dt.datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00")) == props.last_modified
    assert call[0]["type"] == "EventGridEvent" and call[0]["subject"] == event["subject"]


class _Recorder:
    """Stands in for the host's event router: records what the watcher publishes."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def subscriptions_for(self, source: str) -> list[Any]:
        return [source]

    def publish(self, source: str, events: list[dict[str, Any]]) -> int:
        self.published.extend(events)
        return len(events)


@pytest.mark.stack
def test_blob_written_before_the_watchers_first_listing_but_after_the_subscription_is_emitted(
        blob_store: Any, tmp_path: Path) -> None:
    # The race that lost the retention e2e's backups: the host answers ready, the test uploads at once, and
    # the watcher's first listing (its baseline) happened to run after the upload.
    from devhost.eventgrid import BlobWatcher

    container = f"e2e-race-{uuid.uuid4().hex[:8]}"
    blob_store.ensure_containers([container])
    subscribed = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)  # the host started a minute ago
    name = "acme/2026/01/02/b-1/db.dump"
    blob_store.upload(container, name, b"\x00" * 10)
    router = _Recorder()
    watcher = BlobWatcher(router, [container], tmp_path / "blobwatch.json", subscribed_at=subscribed)  # type: ignore[arg-type]
    first = watcher.poll(blob_store)
    assert [e["subject"] for e in first] == [f"/blobServices/default/containers/{container}/blobs/{name}"]
    assert watcher.poll(blob_store) == []  # seen once, emitted once


@pytest.mark.stack
def test_blob_older_than_the_subscription_is_the_baseline_and_never_emitted(blob_store: Any, tmp_path: Path) -> None:
    from devhost.eventgrid import BlobWatcher

    container = f"e2e-base-{uuid.uuid4().hex[:8]}"
    blob_store.ensure_containers([container])
    blob_store.upload(container, "existing/before.txt", b"was here before the subscription")
    subscribed = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)  # subscribed well after that write
    watcher = BlobWatcher(_Recorder(), [container], tmp_path / "blobwatch.json", subscribed_at=subscribed)  # type: ignore[arg-type]
    assert watcher.poll(blob_store) == []
    blob_store.upload(container, "existing/before.txt", b"overwritten: a new version is a new BlobCreated")
    assert [e["subject"].rsplit("/", 2)[-2:] for e in watcher.poll(blob_store)] == [["existing", "before.txt"]]


def test_local_topic_helper_gives_publishers_outside_the_devhost_a_working_endpoint(
        devhost: SampleDevhost, monkeypatch: pytest.MonkeyPatch) -> None:
    from devhost import process

    monkeypatch.setenv("CONTINUITY_LOCAL_DIR", str(devhost.local_dir))
    endpoint, key = process.local_topic(devhost.port)
    event = EventGridEvent(subject="cli", event_type="continuity.test.published", data={"from": "cli"},
                           data_version="1.0")
    with EventGridPublisherClient(endpoint, AzureKeyCredential(key), retry_total=0) as client:
        client.send(event)
    wait_until(lambda: [c for c in devhost.calls("on_event") if c["id"] == str(event.id)], timeout=10,
               what="on_event called with the event")
