"""The devhost's HTTP front door in this process, with a stub host: short-sent bodies and key-less management calls."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devhost import http as front_door
from devhost.keys import HostKeys, load_keys


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, HostKeys]]:
    monkeypatch.setattr(front_door, "BODY_READ_TIMEOUT_SECONDS", 0.5)
    keys = load_keys([], tmp_path / "keys.json")
    host: Any = SimpleNamespace(keys=keys, engine=None, engine_detail="stub host", route_prefix="api",
                                http_routes=[], base_url="http://127.0.0.1")
    served = front_door.serve(host, 0, 4096)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served.server_address[1], keys
    served.shutdown()
    served.server_close()


def _exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode()


def test_short_sent_body_is_answered_408_and_the_connection_closed(server: tuple[int, HostKeys]) -> None:
    port, _ = server
    received = _exchange(port, b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\": ")
    assert received.startswith(b"HTTP/1.1 408") and b"request_timeout" in received


def test_short_sent_chunked_body_is_answered_408(server: tuple[int, HostKeys]) -> None:
    port, _ = server
    received = _exchange(port, b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{\"a\"")
    assert received.startswith(b"HTTP/1.1 408")


def test_management_call_without_key_is_401_before_anything_else(server: tuple[int, HostKeys]) -> None:
    port, keys = server
    path = "/runtime/webhooks/durabletask/instances/x/raiseEvent/approval_decision"
    assert _exchange(port, _get(path)).startswith(b"HTTP/1.1 401")
    assert _exchange(port, _get(f"{path}?code={keys.function_key}")).startswith(b"HTTP/1.1 401")
    wrong = base64.b64encode(b"durabletask_extension:guess").decode()
    assert _exchange(port, _get(path, f"Authorization: Basic {wrong}\r\n")).startswith(b"HTTP/1.1 401")
    # With the key the request reaches the (absent) engine.
    right = base64.b64encode(f"durabletask_extension:{keys.durable_task_key}".encode()).decode()
    assert _exchange(port, _get(path, f"Authorization: Basic {right}\r\n")).startswith(b"HTTP/1.1 503")
    assert _exchange(port, _get(f"{path}?code={keys.durable_task_key}")).startswith(b"HTTP/1.1 503")
    assert _exchange(port, _get(path, f"x-functions-key: {keys.master_key}\r\n")).startswith(b"HTTP/1.1 503")
