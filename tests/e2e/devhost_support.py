"""Helpers for the devhost tests: run tests/e2e/sample_app.py in a real devhost process and talk to it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devhost import process

if TYPE_CHECKING:
    from continuity.adapters.local.local_stack import LocalStack
    from continuity.adapters.storage.blob_store import BlobStore
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


@contextlib.contextmanager
def app_devhost_on_own_catalog(stack: LocalStack, blob_store: BlobStore, *, database: str, backups: str,
                               evidence: str, subscription: str, env: dict[str, str] | None = None,
                               topic_subscriptions: list[dict[str, Any]] | None = None) -> Iterator[str]:
    """The stack's devhost (function_app) restarted on a control database and containers of this module's own,
    from nothing; this process reads the same (its environment follows). Yields the control DSN; restores the
    environment and the stack's own devhost afterwards, so no other module sees these settings."""
    from continuity.adapters.postgres.connection import connect, ensure_database
    from continuity.adapters.postgres.control_db import prepare

    with connect(stack.dsn("control")) as conn:  # start from nothing: no catalog or evidence of an earlier run
        conn.execute(f"drop database if exists {database} with (force)")
    ensure_database(stack.dsn("control"), database)
    dsn = prepare(stack.dsn("control", database))  # migrated before anything polls it
    for name in (backups, evidence):
        if blob_store.container(name).exists():
            blob_store.container(name).delete_container()
    blob_store.ensure_containers([backups, evidence])
    settings = {
        "CONTINUITY_CONTROL_DSN": dsn, "CONTINUITY_BACKUP_CONTAINER": backups,
        "CONTINUITY_EVIDENCE_CONTAINER": evidence,
        "CONTINUITY_DEVHOST_WATCHED_CONTAINERS": backups, "CONTINUITY_DEVHOST_BLOB_POLL_SECONDS": "1",
        "CONTINUITY_DEVHOST_SUBSCRIPTIONS": json.dumps([
            {"name": subscription, "source": "storage", "function": "catalog_blob_created",
             "includedEventTypes": ["Microsoft.Storage.BlobCreated"],
             "subjectBeginsWith": f"/blobServices/default/containers/{backups}/"}, *(topic_subscriptions or [])]),
        **(env or {}),
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    process.stop()
    process.start("function_app:app", env=settings, timeout=60)
    try:
        yield dsn
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.stop()
        process.start("function_app:app", timeout=60)
