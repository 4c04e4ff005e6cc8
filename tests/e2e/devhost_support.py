"""Helpers for the devhost tests: run tests/e2e/sample_app.py in a real devhost process and talk to it."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

from devhost import process
from tests.conftest import PORT_BASE as PORT_BASE  # re-exported for the devhost tests

SAMPLE_APP = "tests.e2e.sample_app:app"
YEARLY = "0 0 0 1 1 *"  # keeps the sample's %SAMPLE_TICK_SCHEDULE% timer quiet
YEARLY_TIMER_SCHEDULE = "0 0 3 1 1 *"  # the sample's `yearly` timer


class SampleDevhost:
    """One background devhost serving the sample app, with its own local dir (keys, logs, state)."""

    def __init__(self, port: int, workdir: Path, **settings: str) -> None:
        self.port = port
        self.workdir = workdir
        self.local_dir = workdir / "local"
        self.env = {
            "CONTINUITY_LOCAL_DIR": str(self.local_dir),
            "CONTINUITY_DEVHOST_PORT": str(port),
            "SAMPLE_OUT_DIR": str(workdir),
            "SAMPLE_TICK_SCHEDULE": YEARLY,
            "CONTINUITY_MAX_REQUEST_BYTES": "4096",
            "CONTINUITY_DEVHOST_SUBSCRIPTIONS": "",
            "CONTINUITY_DEVHOST_WATCHED_CONTAINERS": "",
            **settings,
        }
        self.pid: int | None = None

    @property
    def dir(self) -> Path:
        return self.local_dir / "devhost"

    def start(self) -> SampleDevhost:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pid = process.start(SAMPLE_APP, self.port, env=self.env, timeout=30)
        return self

    def stop(self) -> bool:
        return process.stop(env=self.env)

    @property
    def keys(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / "keys.json").read_text())
        return data

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            chunked = "chunked" in (headers or {}).get("Transfer-Encoding", "")
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, payload: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        body = json.dumps(payload).encode() if payload is not None else None
        status, _, raw = self.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        return status, (json.loads(raw) if raw else None)

    def calls(self, function: str | None = None) -> list[dict[str, Any]]:
        out = self.workdir / "calls.jsonl"
        if not out.exists():
            return []
        records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        return [r for r in records if function is None or r["function"] == function]

    def events_log(self) -> list[dict[str, Any]]:
        path = self.dir / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def log_text(self) -> str:
        return (self.dir / "devhost.log").read_text(errors="replace")
