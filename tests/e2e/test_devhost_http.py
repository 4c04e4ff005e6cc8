"""The devhost's HTTP surface, over real sockets against a devhost process serving the sample app."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.kernel.errors import ConfigError, ServerUnavailable
from devhost.index import compile_route
from tests.e2e.devhost_support import PORT_BASE, SampleDevhost

pytestmark = pytest.mark.devhost
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def devhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleDevhost]:
    host = SampleDevhost(PORT_BASE + 72, tmp_path_factory.mktemp("devhost-http")).start()
    yield host
    host.stop()


def error_of(raw: bytes) -> dict[str, str]:
    payload = json.loads(raw)
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}, payload
    return dict(payload["error"])


# ---- routing ----------------------------------------------------------------------------------------
def test_route_params_reach_the_function_with_optional_int_id(devhost: SampleDevhost) -> None:
    key = devhost.keys["functionKey"]
    status, body = devhost.json("GET", f"/api/tenants/acme/backups/42?code={key}")
    assert status == 200
    assert body["route_params"] == {"tenant": "acme", "id": "42"}
    assert body["type"] == "HttpRequest" and body["method"] == "GET"
    status, body = devhost.json("GET", f"/api/tenants/acme/backups?code={key}")
    assert status == 200 and body["route_params"] == {"tenant": "acme"}


def test_post_body_reaches_the_function_and_its_status_code_comes_back(devhost: SampleDevhost) -> None:
    status, body = devhost.json("POST", "/api/tenants/acme/backups", {"x": 1},
                                headers={"x-functions-key": devhost.keys["functionKey"]})
    assert status == 201 and body["body_bytes"] == len(json.dumps({"x": 1}))


def test_literal_route_wins_over_parameterised_route(devhost: SampleDevhost) -> None:
    status, body = devhost.json("GET", f"/api/tenants/acme/backups/latest?code={devhost.keys['functionKey']}")
    assert status == 200 and body == {"latest_for": "acme"}


def test_int_constraint_refuses_non_numeric_segment_with_404_json(devhost: SampleDevhost) -> None:
    status, _, raw = devhost.request("GET", f"/api/tenants/acme/backups/abc?code={devhost.keys['functionKey']}")
    assert status == 404 and error_of(raw)["code"] == "not_found"


def test_unknown_route_is_404_json(devhost: SampleDevhost) -> None:
    for path in ("/api/nowhere", "/elsewhere"):
        status, headers, raw = devhost.request("GET", path)
        assert status == 404 and headers["content-type"].startswith("application/json")
        assert error_of(raw)["code"] == "not_found"


def test_wrong_method_is_405_json_with_allow_header(devhost: SampleDevhost) -> None:
    status, headers, raw = devhost.request("DELETE", f"/api/tenants/acme/backups/1?code={devhost.keys['functionKey']}")
    assert status == 405
    assert headers["allow"] == "GET, POST"
    assert error_of(raw)["code"] == "method_not_allowed"


def test_route_template_compiles_constraints_catch_all_and_refuses_duplicates() -> None:
    route = compile_route("files/{kind:alpha}/{*rest}")
    assert route.match("files/dump/a/b/c.txt") == {"kind": "dump", "rest": "a/b/c.txt"}
    assert route.match("files/123/x") is None
    assert compile_route("x/{when:datetime:regex(^\\d+$)}").match("x/2024") == {"when": "2024"}
    with pytest.raises(ConfigError, match="appears twice"):
        compile_route("a/{id}/b/{id}")


# ---- keys -------------------------------------------------------------------------------------------
def test_function_route_refuses_a_missing_key_with_401_json(devhost: SampleDevhost) -> None:
    status, _, raw = devhost.request("GET", "/api/tenants/acme/backups/1")
    assert status == 401 and error_of(raw)["code"] == "unauthorized"


def test_function_route_refuses_a_wrong_key_with_401_json(devhost: SampleDevhost) -> None:
    status, _, raw = devhost.request("GET", "/api/tenants/acme/backups/1", headers={"x-functions-key": "nope"})
    assert status == 401 and error_of(raw)["code"] == "unauthorized"
    status, _, _ = devhost.request("GET", "/api/tenants/acme/backups/1?code=nope")
    assert status == 401


def test_function_route_accepts_its_own_default_key_but_not_another_functions(devhost: SampleDevhost) -> None:
    keys = devhost.keys["functions"]
    assert devhost.request("GET", f"/api/tenants/acme/backups/1?code={keys['tenant_backups']}")[0] == 200
    assert devhost.request("GET", f"/api/tenants/acme/backups/1?code={keys['latest_backup']}")[0] == 401
    assert devhost.request("GET", f"/api/tenants/acme/backups/1?code={devhost.keys['masterKey']}")[0] == 200


def test_admin_route_needs_the_master_key(devhost: SampleDevhost) -> None:
    assert devhost.request("GET", f"/api/master-only?code={devhost.keys['functionKey']}")[0] == 401
    status, _, raw = devhost.request("GET", "/api/master-only", headers={"x-functions-key": devhost.keys["masterKey"]})
    assert status == 200 and raw == b"admin ok"


def test_anonymous_route_needs_no_key_and_sees_query_params(devhost: SampleDevhost) -> None:
    status, body = devhost.json("GET", "/api/hello/ana?lang=pt")
    assert status == 200 and body == {"hello": "ana", "params": {"lang": "pt"}}


def test_keys_file_is_private_and_no_key_reaches_the_log(devhost: SampleDevhost) -> None:
    assert stat.S_IMODE((devhost.dir / "keys.json").stat().st_mode) == 0o600
    devhost.request("GET", f"/api/tenants/acme/backups/1?code={devhost.keys['functionKey']}")
    log = devhost.log_text()
    keys = devhost.keys
    secrets_ = [keys["masterKey"], keys["functionKey"], keys["eventGridKey"], keys["topicKey"],
                *keys["functions"].values()]
    assert "GET /api/tenants/acme/backups/1 -> 200" in log
    assert not [k for k in secrets_ if k in log]


# ---- limits and failures ----------------------------------------------------------------------------
def test_oversized_body_is_refused_with_413_json(devhost: SampleDevhost) -> None:
    status, _, raw = devhost.request("POST", "/api/echo", body=b"x" * 5000)
    assert status == 413 and error_of(raw)["code"] == "payload_too_large"
    status, _, raw = devhost.request("POST", "/api/echo", body=b"x" * 4000)
    assert status == 200 and raw == b"x" * 4000


def test_oversized_chunked_body_is_refused_with_413_json(devhost: SampleDevhost) -> None:
    chunks = iter([b"y" * 3000, b"y" * 3000])
    status, _, raw = devhost.request("POST", "/api/echo", body=chunks,  # type: ignore[arg-type]
                                     headers={"Transfer-Encoding": "chunked"})
    assert status == 413 and error_of(raw)["code"] == "payload_too_large"


def test_unhandled_exception_is_500_json_without_detail_and_host_keeps_serving(devhost: SampleDevhost) -> None:
    status, _, raw = devhost.request("GET", "/api/boom")
    error = error_of(raw)
    assert status == 500 and error["code"] == "function_failed"
    assert "must not reach the caller" not in error["message"]
    assert "RuntimeError: sample failure" in devhost.log_text()
    assert devhost.request("GET", "/api/hello/after")[0] == 200


def test_str_return_becomes_text_plain(devhost: SampleDevhost) -> None:
    status, headers, raw = devhost.request("GET", "/api/plain")
    assert status == 200 and raw == b"plain text" and headers["content-type"].startswith("text/plain")


def test_async_functions_share_one_loop_and_get_a_context(devhost: SampleDevhost) -> None:
    first = devhost.json("GET", "/api/async-hello")[1]
    second = devhost.json("GET", "/api/async-hello")[1]
    assert first["function"] == second["function"] == "async_hello"
    assert first["invocation"] != second["invocation"]


def test_durable_management_path_without_engine_is_503_json(devhost: SampleDevhost) -> None:
    status, _, raw = devhost.request("GET", "/runtime/webhooks/durabletask/instances/x",
                                     headers={"x-functions-key": devhost.keys["masterKey"]})
    assert status == 503 and error_of(raw)["code"] == "durable_unavailable"


def test_durable_management_path_without_key_is_401_even_without_engine(devhost: SampleDevhost) -> None:
    status, _, raw = devhost.request("GET", "/runtime/webhooks/durabletask/instances/x")
    assert status == 401 and "durabletask_extension" in error_of(raw)["message"]


# ---- admin API and process ----------------------------------------------------------------------------
def test_admin_status_lists_functions_only_with_the_master_key(devhost: SampleDevhost) -> None:
    assert devhost.request("GET", "/admin/host/status")[0] == 401
    status, body = devhost.json("GET", "/admin/host/status", headers={"x-functions-key": devhost.keys["masterKey"]})
    assert status == 200
    functions = {f["name"]: f for f in body["functions"]}
    assert functions["tenant_backups"]["route"] == "tenants/{tenant}/backups/{id:int?}"
    assert functions["tenant_backups"]["methods"] == ["GET", "POST"]
    assert functions["tick"]["trigger"] == "timerTrigger" and functions["on_event"]["trigger"] == "eventGridTrigger"


def test_start_is_idempotent_and_stop_leaves_no_process(tmp_path: Path) -> None:
    host = SampleDevhost(PORT_BASE + 76, tmp_path)
    pid = host.start().pid
    assert pid is not None and host.start().pid == pid
    assert host.stop() is True
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (host.dir / "devhost.pid").exists()
    assert host.stop() is False


def test_devhost_refuses_an_app_it_cannot_import() -> None:
    result = subprocess.run([sys.executable, "-m", "devhost", "--app", "no_such_module:app", "--port",
                             str(PORT_BASE + 77)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "cannot import 'no_such_module'" in result.stderr


def test_subscription_to_a_function_that_is_not_an_event_grid_trigger_is_inactive(tmp_path: Path) -> None:
    host = SampleDevhost(PORT_BASE + 77, tmp_path, CONTINUITY_DEVHOST_SUBSCRIPTIONS=json.dumps(
        [{"name": "bad", "source": "topic", "function": "hello"},
         {"name": "good", "source": "topic", "function": "on_event"}]))
    host.start()
    try:
        status, body = host.json("GET", "/admin/host/status", headers={"x-functions-key": host.keys["masterKey"]})
    finally:
        host.stop()
    assert status == 200
    assert body["eventGrid"]["subscriptions"] == ["good"]
    assert body["eventGrid"]["inactiveSubscriptions"] == {
        "bad": "function 'hello' is not a served Event Grid trigger of this app"}


def test_devhost_refuses_malformed_subscriptions_naming_the_field(tmp_path: Path) -> None:
    host = SampleDevhost(PORT_BASE + 77, tmp_path, CONTINUITY_DEVHOST_SUBSCRIPTIONS=json.dumps(
        [{"name": "bad", "source": "queue", "function": "on_event"}]))
    with pytest.raises(ServerUnavailable, match=r"CONTINUITY_DEVHOST_SUBSCRIPTIONS\[0\]\.source"):
        host.start()
    assert not (host.dir / "devhost.pid").exists()


def test_local_status_shows_the_devhost_health_and_functions(devhost: SampleDevhost,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from continuity.cli.commands.local import render_devhost
    from devhost import process

    monkeypatch.setenv("CONTINUITY_LOCAL_DIR", str(devhost.local_dir))
    info = process.status(devhost.port)
    assert info["healthy"] is True and info["pid"] == devhost.pid
    assert info["durable"]["engine"] == "no durable functions in this app"
    text = "\n".join(render_devhost(info))
    assert text.startswith("devhost   healthy")
    assert "fn tenant_backups" in text and "/tenants/{tenant}/backups/{id:int?} GET,POST (FUNCTION)" in text
    assert "fn tick" in text and "timerTrigger" in text


def test_local_status_reports_a_devhost_that_is_not_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from devhost import process

    monkeypatch.setenv("CONTINUITY_LOCAL_DIR", str(tmp_path))
    info = process.status(PORT_BASE + 78)
    assert info["healthy"] is False and info["detail"] == "not running"
