"""Hostile request bodies on every POST of the live devhost: nested, oversized and short-sent.

Each is answered with a 4xx (never a 5xx) by a host that keeps serving; a body that never arrives in full
does not hold the connection: the host answers 408 and closes it.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from continuity.kernel.identity import Role
from tests.security.support import Caller, host_keys, make_caller, request
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

FILL = {"{tenant}": "acme-finance", "{id}": "failover-platform", "{operation}": "reconcile",
        "{backup_id}": "20260101T000000Z-abc123", "{run_id}": "retention-20260101"}
NESTED = b"[" * 100_000 + b"]" * 100_000  # 200 KB, under CONTINUITY_MAX_REQUEST_BYTES
NESTED_OBJECT = b'{"reason": ' + b'{"a": ' * 30_000 + b"1" + b"}" * 30_000 + b"}"


@pytest.fixture(scope="module")
def admin(stack: Any) -> Caller:
    return make_caller(stack, "hostile-admin", [Role.ADMIN], master=True)


def _post_paths(stack: Any) -> list[str]:
    def document() -> dict[str, Any] | None:
        status, body = request(stack, "GET", "/api/openapi.json", {})
        return body if status == 200 else None

    doc = wait_until(document, timeout=30, what="the devhost serving /api/openapi.json", interval=0.5)
    paths = []
    for template, operations in doc["paths"].items():
        # Every POST that takes a body (the catalog sweeps take none and read none).
        if "post" not in operations or "requestBody" not in operations["post"]:
            continue
        if template.startswith("/api/recoveries/"):
            # Each decision route decides its own kind of workflow only (refused 403 before the body is read).
            template = template.replace("{id}", "recovery-acme-finance")
        for name, value in FILL.items():
            template = template.replace(name, value)
        paths.append(template)
    assert len(paths) >= 10
    return sorted(paths)


def test_deeply_nested_json_on_every_post_is_refused_400_never_500(stack: Any, admin: Caller) -> None:
    answers = {}
    for path in _post_paths(stack):
        for body in (NESTED, NESTED_OBJECT):
            status, answer = request(stack, "POST", path, admin.headers, body)
            answers[(path, body[:2])] = (status, answer)
    server_errors = {k: v for k, v in answers.items() if v[0] >= 500}
    assert server_errors == {}
    not_refused_for_nesting = {k: v for k, v in answers.items()
                               if v[0] != 400 or "nested" not in v[1]["error"]["message"]}
    assert not_refused_for_nesting == {}
    assert request(stack, "GET", "/api/health", {})[0] == 200


def test_deeply_nested_json_to_the_durable_and_event_grid_webhooks_is_refused_400(stack: Any) -> None:
    keys = host_keys(stack)
    durable = keys["systemKeys"]["durabletask_extension"]
    status, answer = request(stack, "POST", f"/runtime/webhooks/durabletask/orchestrators/nightly_validation/"
                                            f"hostile-nested?code={durable}", {}, NESTED)
    assert status == 400, answer
    status, _ = request(stack, "GET", f"/runtime/webhooks/durabletask/instances/hostile-nested?code={durable}", {})
    assert status == 404  # nothing was started
    status, answer = request(stack, "POST", f"/runtime/webhooks/eventgrid?functionName=catalog_blob_created"
                                            f"&code={keys['eventGridKey']}",
                             {"aeg-event-type": "Notification"}, NESTED)
    assert status == 400, answer


def _raw(stack: Any, head: str, body: bytes) -> bytes:
    """Send a hand-made request and read until the host closes the connection."""
    with socket.create_connection(("127.0.0.1", stack.settings.devhost_port), timeout=120) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        while True:  # a host without a read timeout never closes: the socket timeout fails the test
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


def _head(admin: Caller, length: int) -> str:
    return (f"POST /api/validations/nightly HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"x-functions-key: {admin.headers['x-functions-key']}\r\n"
            f"X-Continuity-Key: {admin.headers['X-Continuity-Key']}\r\nContent-Length: {length}\r\n\r\n")


def test_oversized_body_on_a_post_is_refused_413_before_it_is_read(stack: Any, admin: Caller) -> None:
    from continuity.kernel import settings

    received = _raw(stack, _head(admin, settings.get_int("CONTINUITY_MAX_REQUEST_BYTES") + 1), b"")
    assert received.startswith(b"HTTP/1.1 413"), received[:200]


def test_short_sent_body_does_not_hold_the_connection(stack: Any, admin: Caller) -> None:
    received = _raw(stack, _head(admin, 1000), b'{"date": ')
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"request_timeout" in received
    assert request(stack, "GET", "/api/health", {})[0] == 200
