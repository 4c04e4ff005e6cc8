"""Callers of the stack's devhost (``function_app``) for the red-team tests: keys, users, raw requests."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

from continuity.kernel.identity import Role


@dataclass(frozen=True)
class Caller:
    name: str
    headers: dict[str, str]


def host_keys(stack: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((stack.base / "devhost" / "keys.json").read_text())
    return data


def make_caller(stack: Any, name: str, roles: list[Role], tenants: list[str] | None = None, *,
                master: bool = False) -> Caller:
    from continuity.adapters.local.identity_store import IdentityStore

    keys = host_keys(stack)
    user_key = IdentityStore(stack.base).add_user(name, roles, replace=True, save_key=False, tenants=tenants)
    return Caller(name, {"x-functions-key": keys["masterKey" if master else "functionKey"],
                         "X-Continuity-Key": user_key})


def request(stack: Any, method: str, path: str, headers: dict[str, str], body: bytes | None = None,
            timeout: float = 60) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.settings.devhost_port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


def call(stack: Any, method: str, path: str, caller: Caller, payload: Any = None) -> tuple[int, Any]:
    body = json.dumps(payload).encode() if payload is not None else None
    return request(stack, method, path, caller.headers, body)
