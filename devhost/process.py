"""Run the devhost in the background: its own session, a pidfile and a log under the local dir.

:func:`start` is idempotent (a healthy devhost on the same port is left alone) and waits until the
host answers ``/admin/host/ping``; :func:`stop` ends the whole process group and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuity.adapters.local.processes import live_pid, stop_group
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError, PortInUse, ServerUnavailable
from devhost.keys import devhost_dir, load_keys

START_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class DevhostPaths:
    dir: Path

    @property
    def pidfile(self) -> Path:
        return self.dir / "devhost.pid"

    @property
    def log(self) -> Path:
        return self.dir / "devhost.log"


def paths(env: dict[str, str] | None = None) -> DevhostPaths:
    if env and "CONTINUITY_LOCAL_DIR" in env:
        base = Path(env["CONTINUITY_LOCAL_DIR"])
        base = base if base.is_absolute() else settings.PROJECT_ROOT / base
        return DevhostPaths(base / "devhost")
    return DevhostPaths(devhost_dir())


def endpoint(port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or settings.get_int('CONTINUITY_DEVHOST_PORT')}"


def ping(port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint(port)}/admin/host/ping", timeout=timeout) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _port_free(port: int) -> bool:
    from continuity.adapters.local.local_stack import port_is_free

    return port_is_free(port)


def start(app: str | None = None, port: int | None = None, *, env: dict[str, str] | None = None,
          durable: bool = True, timeout: float = START_TIMEOUT_SECONDS) -> int:
    """Start the devhost in the background unless one already answers on the port; returns its pid.

    :param env: settings for the child on top of this process's environment (tests give their own).
    :raises PortInUse: another process holds the port.
    :raises ServerUnavailable: the devhost exited or did not answer in time (the log tail says why).
    """
    child_env = {**os.environ, **(env or {})}
    port = port or int(child_env.get("CONTINUITY_DEVHOST_PORT") or settings.get_int("CONTINUITY_DEVHOST_PORT"))
    app = app or child_env.get("CONTINUITY_DEVHOST_APP") or settings.get("CONTINUITY_DEVHOST_APP")
    where = paths(env)
    running = live_pid(where.pidfile)
    if running is not None and ping(port):
        return running
    if running is not None:
        stop(env=env)
    if not _port_free(port):
        raise PortInUse(f"port {port} for the devhost is in use by another process; free it or set "
                        f"CONTINUITY_DEVHOST_PORT to a free port")
    where.dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "devhost", "--app", app, "--port", str(port)]
    if not durable:
        args.append("--no-durable")
    with open(where.log, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=str(settings.PROJECT_ROOT), env=child_env)
    where.pidfile.write_text(f"{proc.pid} {port}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(port, timeout=0.5):
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = _tail(where.log)
    stop(env=env)
    raise ServerUnavailable(f"the devhost did not start on port {port}: {tail or 'no output'}; see {where.log}")


def _tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def stop(*, env: dict[str, str] | None = None, timeout: float = 15) -> bool:
    """Stop the background devhost and every process it started; returns whether one was running."""
    where = paths(env)
    pid = live_pid(where.pidfile)
    if pid is None:
        where.pidfile.unlink(missing_ok=True)
        return False
    stop_group(pid, timeout)
    where.pidfile.unlink(missing_ok=True)
    return True


def admin_request(method: str, path: str, *, port: int | None = None, body: Any = None,
                  endpoint_url: str | None = None, timeout: float = 10,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Call the devhost with the master key (read from settings or keys.json; never printed).

    :param headers: more headers, e.g. the caller's ``X-Continuity-Key`` for a route that names its user.
    :raises ServerUnavailable: the devhost does not answer.
    """
    url = f"{(endpoint_url or endpoint(port)).rstrip('/')}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={  # noqa: S310 - our own endpoint
        "x-functions-key": load_keys().master_key, "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    except (OSError, urllib.error.URLError) as exc:
        raise ServerUnavailable(f"the devhost at {url.split('/admin')[0]} does not answer ({exc}); "
                                f"start it with `continuity local up`") from exc
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, payload


def status(port: int | None = None) -> dict[str, Any]:
    """Health, functions and running orchestrations of the background devhost, for ``local status``."""
    port = port or settings.get_int("CONTINUITY_DEVHOST_PORT")
    where = paths()
    pid = live_pid(where.pidfile)
    info: dict[str, Any] = {"healthy": False, "port": port, "pid": pid, "log": str(where.log)}
    if not ping(port):
        info["detail"] = "not running" if pid is None else "process alive but not answering /admin/host/ping"
        return info
    try:
        code, payload = admin_request("GET", "/admin/host/status", port=port, timeout=5)
    except ContinuityError as exc:
        info["detail"] = str(exc)
        return info
    if code != 200 or not isinstance(payload, dict):
        info["detail"] = f"/admin/host/status answered {code}"
        return info
    info.update(healthy=True, app=payload.get("app"), functions=payload.get("functions", []),
                durable=payload.get("durable", {}), eventGrid=payload.get("eventGrid", {}),
                detail=f"{len(payload.get('functions', []))} functions")
    return info


def local_topic(port: int | None = None) -> tuple[str, str]:
    """Endpoint and key of the devhost's local custom topic, for publishers outside the devhost (the CLI).

    Inside the devhost, ``CONTINUITY_EVENTGRID_TOPIC_ENDPOINT``/``_KEY`` already default to these.
    """
    from devhost.http import TOPIC_PATH

    return f"{endpoint(port)}{TOPIC_PATH}", load_keys().topic_key
