"""Attacks on the Durable management API (``/runtime/webhooks/durabletask/...``) of the devhost.

Each probe plays a local caller without the ``durabletask_extension`` system key (or the master key): it must
be answered 401 and change nothing. The real ``DurableOrchestrationClient`` and the management URLs the host
hands out keep working, because they carry the key.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import PORT_BASE
from tests.e2e.test_durable_conformance import Devhost, http

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

WEBHOOK = "/runtime/webhooks/durabletask"


@pytest.fixture(scope="module")
def devhost(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    host = Devhost(PORT_BASE + 84, "security_durable", tmp_path_factory.mktemp("devhost") / "devhost.log")
    host.start()
    yield host
    host.stop()


@pytest.fixture(scope="module")
def keys(stack: Any, devhost: Devhost) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((stack.base / "devhost" / "keys.json").read_text())
    return data


def _durable_key(keys: dict[str, Any]) -> str:
    return str(keys["systemKeys"]["durabletask_extension"])


def _waiting(devhost: Devhost) -> dict[str, Any]:
    """A ``staged`` orchestration waiting for its ``Go`` event."""
    links = devhost.started("staged")
    devhost.wait_for(links["id"], lambda s: s["customStatus"] == {"stage": "two", "progress": 50})
    return links


def _history_names(devhost: Devhost, instance_id: str) -> list[str]:
    return [str(e.get("Name")) for e in devhost.status(instance_id, history=True)["history"]]


def test_raise_event_without_key_is_refused_and_changes_nothing(devhost: Devhost) -> None:
    links = _waiting(devhost)
    status, payload = http("POST", f"{devhost.base}{WEBHOOK}/instances/{links['id']}/raiseEvent/Go",
                           {"by": {"name": "mallory", "roles": ["approver", "admin"]}})
    assert status == 401, payload
    assert "durabletask_extension" in payload["error"]["message"]
    current = devhost.status(links["id"], history=True)
    assert current["runtimeStatus"] == "Running"
    assert "Go" not in [str(e.get("Name")) for e in current["history"]]
    # The URL the host handed out carries the key and still delivers.
    assert http("POST", links["sendEventPostUri"].replace("{eventName}", "Go"), {"via": "key"})[0] == 202
    assert devhost.wait_done(links)["output"] == {"via": "key"}


def test_raise_event_with_a_function_key_or_a_wrong_key_is_refused(devhost: Devhost, keys: dict[str, Any]) -> None:
    links = _waiting(devhost)
    url = f"{devhost.base}{WEBHOOK}/instances/{links['id']}/raiseEvent/Go"
    assert http("POST", f"{url}?code={keys['functionKey']}", {"forged": True})[0] == 401
    assert http("POST", f"{url}?code={keys['eventGridKey']}", {"forged": True})[0] == 401
    assert http("POST", f"{url}?code=not-a-key", {"forged": True})[0] == 401
    forged_basic = base64.b64encode(b"durabletask_extension:guess").decode()
    import urllib.request

    request = urllib.request.Request(url, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Basic {forged_basic}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310 - local devhost
    assert refused.value.code == 401
    assert devhost.status(links["id"])["runtimeStatus"] == "Running"
    assert "Go" not in _history_names(devhost, links["id"])
    http("POST", links["terminatePostUri"].replace("{text}", "cleanup"))


def test_terminate_without_key_is_refused_and_the_instance_keeps_running(devhost: Devhost) -> None:
    links = _waiting(devhost)
    status, _ = http("POST", f"{devhost.base}{WEBHOOK}/instances/{links['id']}/terminate?reason=mallory")
    assert status == 401
    assert devhost.status(links["id"])["runtimeStatus"] == "Running"
    assert http("POST", links["terminatePostUri"].replace("{text}", "cleanup"))[0] == 202
    assert devhost.wait_done(links)["runtimeStatus"] == "Terminated"


def test_purge_without_key_is_refused_and_the_history_stays(devhost: Devhost) -> None:
    links = devhost.started("chaining")
    devhost.wait_done(links)
    assert http("DELETE", f"{devhost.base}{WEBHOOK}/instances/{links['id']}")[0] == 401
    assert http("DELETE", f"{devhost.base}{WEBHOOK}/instances?createdTimeFrom=2000-01-01T00:00:00Z")[0] == 401
    status, payload = http("GET", links["statusQueryGetUri"])
    assert (status, payload["runtimeStatus"]) == (200, "Completed")


def test_start_without_key_is_refused_and_starts_nothing(devhost: Devhost) -> None:
    instance_id = f"forged-{uuid.uuid4().hex[:8]}"
    assert http("POST", f"{devhost.base}{WEBHOOK}/orchestrators/chaining/{instance_id}", {})[0] == 401
    assert http("GET", f"{devhost.base}/api/status/{instance_id}")[0] == 404


def test_list_and_status_without_key_are_refused(devhost: Devhost) -> None:
    links = devhost.started("chaining")
    devhost.wait_done(links)
    assert http("GET", f"{devhost.base}{WEBHOOK}/instances")[0] == 401
    assert http("GET", f"{devhost.base}{WEBHOOK}/instances/{links['id']}")[0] == 401
    assert http("POST", f"{devhost.base}{WEBHOOK}/instances/{links['id']}/restart")[0] == 401


def test_the_system_key_and_the_master_key_open_the_management_api(devhost: Devhost, keys: dict[str, Any]) -> None:
    links = devhost.started("chaining")
    devhost.wait_done(links)
    status_url = f"{devhost.base}{WEBHOOK}/instances/{links['id']}"
    assert http("GET", f"{status_url}?code={_durable_key(keys)}")[0] == 200
    assert http("GET", f"{status_url}?code={keys['masterKey']}")[0] == 200
    import urllib.request

    request = urllib.request.Request(status_url, headers={"x-functions-key": keys["masterKey"]})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - local devhost
        assert resp.status == 200


def test_management_urls_handed_out_carry_the_system_key(devhost: Devhost, keys: dict[str, Any]) -> None:
    links = devhost.started("chaining")
    for name in ("statusQueryGetUri", "sendEventPostUri", "terminatePostUri", "purgeHistoryDeleteUri"):
        assert parse_qs(urlsplit(links[name]).query)["code"] == [_durable_key(keys)], name
    assert devhost.wait_done(links)["runtimeStatus"] == "Completed"
