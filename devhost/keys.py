"""Function keys of the devhost, shaped like the Functions host's: master, host default, system, per function.

A key comes from its setting when that is set (``CONTINUITY_DEVHOST_MASTER_KEY``,
``CONTINUITY_DEVHOST_FUNCTION_KEY``, ``CONTINUITY_DEVHOST_EVENTGRID_KEY``,
``CONTINUITY_EVENTGRID_TOPIC_KEY``), else from ``<local dir>/devhost/keys.json`` (mode 600), where
random keys are generated on first use. Keys are never logged; the CLI reads them from the same file.

System keys (``systemKeys`` in keys.json) are named as the Functions host names them: ``durabletask_extension``
opens the Durable management API under ``/runtime/webhooks/durabletask/``, as it does in Azure.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from continuity.adapters.local.private_files import write_private
from continuity.kernel import settings
from continuity.kernel.errors import ConfigError

# Setting that overrides each generated key, by its name in keys.json.
KEY_SETTINGS = {
    "masterKey": "CONTINUITY_DEVHOST_MASTER_KEY",
    "functionKey": "CONTINUITY_DEVHOST_FUNCTION_KEY",
    "eventGridKey": "CONTINUITY_DEVHOST_EVENTGRID_KEY",
    "topicKey": "CONTINUITY_EVENTGRID_TOPIC_KEY",
}
# The system key of the Durable extension, by the name the Functions host gives it.
DURABLE_SYSTEM_KEY = "durabletask_extension"


def devhost_dir() -> Path:
    """Where the devhost keeps its keys, pidfile, log, timer status and event log."""
    return settings.LocalStackSettings.from_env().base_dir / "devhost"


def keys_file() -> Path:
    return devhost_dir() / "keys.json"


def _same(presented: str | None, expected: str) -> bool:
    return bool(presented) and hmac.compare_digest(str(presented).encode(), expected.encode())


@dataclass(frozen=True)
class HostKeys:
    """The keys one devhost accepts.

    ``function_key`` is a host-level key (like Azure's host ``default`` key): it opens every
    FUNCTION-level route. ``per_function`` holds each function's own ``default`` key, which opens
    that function only. ``master_key`` opens everything, including ADMIN routes and the admin API.
    """

    master_key: str
    function_key: str
    event_grid_key: str
    topic_key: str
    per_function: dict[str, str] = field(default_factory=dict)
    durable_task_key: str = ""

    def allows_function(self, function_name: str, presented: str | None) -> bool:
        own = self.per_function.get(function_name)
        return (_same(presented, self.master_key) or _same(presented, self.function_key)
                or (own is not None and _same(presented, own)))

    def allows_admin(self, presented: str | None) -> bool:
        return _same(presented, self.master_key)

    def allows_event_grid(self, presented: str | None) -> bool:
        """The ``eventgrid_extension`` system key, or the master key, as in Azure."""
        return _same(presented, self.event_grid_key) or _same(presented, self.master_key)

    def allows_topic(self, presented: str | None) -> bool:
        return _same(presented, self.topic_key)

    def allows_durable(self, presented: str | None) -> bool:
        """The ``durabletask_extension`` system key, or the master key, as in Azure."""
        return (bool(self.durable_task_key) and _same(presented, self.durable_task_key)) \
            or _same(presented, self.master_key)


def presented_key(headers: dict[str, str], query: dict[str, str]) -> str | None:
    """The key a request presents: ``x-functions-key``, else ``?code=``, else the password of Basic credentials.

    The Basic form serves the durable client's RPC calls: the SDK appends paths to ``rpcBaseUrl`` and sends
    no headers of its own, so the host gives it a base URL with the system key as its credentials.

    :param headers: lower-cased header names.
    """
    explicit = headers.get("x-functions-key") or query.get("code")
    if explicit:
        return explicit
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def _read(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); delete it and the devhost generates new keys") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object; delete it and the devhost generates new keys")
    return data


def _write_private(path: Path, data: dict[str, object]) -> None:
    write_private(path, json.dumps(data, indent=2), private_dir=True)


def load_keys(function_names: list[str] | None = None, path: Path | None = None) -> HostKeys:
    """The devhost's keys: settings win, else keys.json, else newly generated (and saved, mode 600).

    :param function_names: functions that need their own ``default`` key; generated when missing.
    """
    path = path or keys_file()
    stored = _read(path)
    changed = False
    resolved: dict[str, str] = {}
    for name, setting in KEY_SETTINGS.items():
        configured = os.environ.get(setting, "")
        if configured:
            resolved[name] = configured
            continue
        value = stored.get(name)
        if not isinstance(value, str) or not value:
            value = secrets.token_urlsafe(32)
            stored[name] = value
            changed = True
        resolved[name] = value
    raw_functions = stored.get("functions")
    per_function: dict[str, str] = (
        {k: v for k, v in raw_functions.items() if isinstance(v, str)} if isinstance(raw_functions, dict) else {}
    )
    for fname in function_names or []:
        if fname not in per_function:
            per_function[fname] = secrets.token_urlsafe(32)
            changed = True
    raw_system = stored.get("systemKeys")
    system: dict[str, object] = dict(raw_system) if isinstance(raw_system, dict) else {}
    durable_key = system.get(DURABLE_SYSTEM_KEY)
    if not isinstance(durable_key, str) or not durable_key:
        durable_key = secrets.token_urlsafe(32)
        system[DURABLE_SYSTEM_KEY] = durable_key
        stored["systemKeys"] = system
        changed = True
    if changed:
        stored["functions"] = per_function
        _write_private(path, stored)
    return HostKeys(master_key=resolved["masterKey"], function_key=resolved["functionKey"],
                    event_grid_key=resolved["eventGridKey"], topic_key=resolved["topicKey"],
                    per_function=per_function, durable_task_key=durable_key)
