"""The guards themselves, without a host: keys on management URLs, presented keys, nested JSON refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest
from pydantic import BaseModel, ConfigDict

from continuity.kernel.errors import InvalidRequest
from devhost.durable.management import client_binding, management_urls, payload_text
from devhost.keys import DURABLE_SYSTEM_KEY, load_keys, presented_key
from triggers.common import parse_body

NESTED = b"[" * 100_000 + b"]" * 100_000


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = ""


def _request(body: bytes) -> func.HttpRequest:
    return func.HttpRequest(method="POST", url="http://127.0.0.1/api/x", headers={}, params={}, route_params={},
                            body=body)


def test_deeply_nested_json_body_is_refused_as_invalid_request_not_a_recursion_error() -> None:
    for body in (NESTED, b'{"reason": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}"):
        with pytest.raises(InvalidRequest, match="nested too deeply"):
            parse_body(_request(body), Body)


def test_deeply_nested_event_payload_is_refused_as_invalid_json() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        payload_text(NESTED)


def test_the_durabletask_extension_key_is_generated_once_and_opens_only_the_management_api(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys = load_keys(["f"], path)
    stored = json.loads(path.read_text())
    assert stored["systemKeys"][DURABLE_SYSTEM_KEY] == keys.durable_task_key
    assert load_keys(["f"], path).durable_task_key == keys.durable_task_key
    assert keys.allows_durable(keys.durable_task_key) and keys.allows_durable(keys.master_key)
    for other in (keys.function_key, keys.per_function["f"], keys.event_grid_key, keys.topic_key, "", None):
        assert not keys.allows_durable(other)
    assert not keys.allows_function("f", keys.durable_task_key)
    assert not keys.allows_admin(keys.durable_task_key)


def test_presented_key_reads_header_query_and_basic_credentials() -> None:
    basic = base64.b64encode(b"durabletask_extension:k3").decode()
    assert presented_key({"x-functions-key": "k1"}, {"code": "k2"}) == "k1"
    assert presented_key({}, {"code": "k2"}) == "k2"
    assert presented_key({"authorization": f"Basic {basic}"}, {}) == "k3"
    assert presented_key({"authorization": "Basic !!!"}, {}) is None
    assert presented_key({"authorization": "Bearer k3"}, {}) is None
    assert presented_key({}, {}) is None


def test_management_urls_and_the_client_binding_carry_the_system_key() -> None:
    urls = management_urls("http://127.0.0.1:7071", "Hub", "i-1", "s3cret")
    for name in ("statusQueryGetUri", "sendEventPostUri", "terminatePostUri", "purgeHistoryDeleteUri"):
        assert parse_qs(urlsplit(urls[name]).query)["code"] == ["s3cret"], name
    binding = client_binding("http://127.0.0.1:7071", "Hub", "s3cret")
    rpc = urlsplit(binding["rpcBaseUrl"])
    assert (rpc.username, rpc.password, rpc.hostname, rpc.port) == ("durabletask_extension", "s3cret",
                                                                      "127.0.0.1", 7071)
    assert binding["requiredQueryStringParameters"] == "code=s3cret"
    assert "code=s3cret" in binding["managementUrls"]["statusQueryGetUri"]
