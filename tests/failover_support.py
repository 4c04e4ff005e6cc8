"""Shared by the failover integration, end-to-end tests and the bench: a dedicated throwaway stack and a
writer that commits numbered rows, so lost commits can be counted after a failover."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.storage.blob_store import BlobStore
from continuity.kernel.settings import LocalStackSettings
from devhost import process
from tests.waiting import wait_until

ACK = ["no_validated_backup"]  # a throwaway stack's catalog has no validated backup: approvers must say so


def dedicated_settings(port_base: int, name: str = "failover", offset: int = 40) -> LocalStackSettings:
    """Settings for a stack of its own: promoting its replica harms no other test."""
    base = LocalStackSettings.from_env()
    port_base += offset - 40
    return replace(base, base_dir=base.base_dir.parent / f"{base.base_dir.name}-{name}",
                   primary_port=port_base + 40, replica_port=port_base + 41, control_port=port_base + 42,
                   sandbox_port=port_base + 43, azurite_blob_port=base.azurite_blob_port,
                   azurite_queue_port=base.azurite_queue_port, azurite_table_port=base.azurite_table_port)


TENANT_DBS = ("odoo_acme_finance", "odoo_globex", "odoo_initech")


@contextlib.contextmanager
def failover_stack(port_base: int, name: str, offset: int) -> Iterator[LocalStack]:
    """A dedicated stack whose primary holds the tenants' databases (a company each), its replica rebuilt and the
    recovery credentials seeded: what a failover (or a drill) needs to run end to end."""
    from continuity.adapters.azure.secret_store import LocalSecrets, seed_local_recovery_credentials
    from continuity.adapters.postgres.connection import ensure_database

    with dedicated_stack(port_base, name, offset=offset) as local:
        for db in TENANT_DBS:
            ensure_database(local.dsn("primary"), db)
            with psycopg.connect(local.dsn("primary", db), autocommit=True) as conn:
                conn.execute("create table if not exists res_company (id serial primary key, name text)")
                conn.execute("insert into res_company (name) select 'Main' "
                             "where not exists (select 1 from res_company)")
        local.rebuild_replica()
        seed_local_recovery_credentials(["northeurope"], local.superuser_password(),
                                        LocalSecrets(local.base / "secrets" / "vault"))
        yield local


def evidence_container(stack: LocalStack) -> str:
    """The evidence container of a dedicated stack: its chain alone, indexed by its own control database alone.

    Azurite is shared; had a dedicated stack's chain gone into the shared ``evidence`` container, the session's
    devhost (catalog rejections of the dedicated stack's backup blobs) would append to the same chain, and a
    verify against the dedicated index would find records it never indexed (CI, stop 25).
    """
    name = re.sub(r"[^a-z0-9]+", "-", stack.settings.base_dir.name.lower()).strip("-")
    return f"evidence-{name}"[:63].rstrip("-")


@contextlib.contextmanager
def dedicated_stack(port_base: int, name: str = "failover", offset: int = 40,
                    keep: bool = False) -> Iterator[LocalStack]:
    """Clusters and an evidence container of its own (Azurite stays the shared one): up at entry, down and
    deleted at exit. While it is up, this process's evidence settings name its container."""
    stack = LocalStack(dedicated_settings(port_base, name, offset))
    blobs, container = BlobStore(), evidence_container(stack)
    if blobs.container(container).exists():  # a chain of an earlier run: its control database is gone
        blobs.container(container).delete_container()
    blobs.ensure_containers([container])
    saved = os.environ.get("CONTINUITY_EVIDENCE_CONTAINER")
    os.environ["CONTINUITY_EVIDENCE_CONTAINER"] = container
    stack.up_clusters()
    try:
        yield stack
    finally:
        if saved is None:
            os.environ.pop("CONTINUITY_EVIDENCE_CONTAINER", None)
        else:
            os.environ["CONTINUITY_EVIDENCE_CONTAINER"] = saved
        if not keep:
            stack.down_clusters()
            stack.delete_files()
            blobs.container(container).delete_container()


class Writer(threading.Thread):
    """Commits ``insert into ledger(n)`` with n = 1, 2, 3 ... as fast as it can; remembers every n whose
    commit was acknowledged. Connection errors (fence, termination) are counted and retried."""

    def __init__(self, dsn: str, table: str = "failover_ledger") -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.table = table
        self.acked: list[int] = []
        self.errors = 0
        self.refused = 0
        self._stop_event = threading.Event()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"create table if not exists {table} (n bigint primary key, at timestamptz default now())")
            row = conn.execute(f"select coalesce(max(n), 0) from {table}").fetchone()
        self.next_n = int(row[0]) + 1 if row else 1

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop_event.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                n = self.next_n
                conn.execute(f"insert into {self.table} (n) values (%s)", (n,))
                self.acked.append(n)
                self.next_n += 1
            except psycopg.errors.ReadOnlySqlTransaction:
                self.refused += 1
                time.sleep(0.01)
            except psycopg.Error:
                self.errors += 1
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def lost_on(self, dsn: str) -> list[int]:
        """Acknowledged commits missing from the server at ``dsn``."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            present = {r[0] for r in conn.execute(f"select n from {self.table}")}
        return [n for n in self.acked if n not in present]


class Host:
    """The devhost process serving function_app.py, and an HTTP client for the failover API."""

    def __init__(self, stack: LocalStack, keys: dict[str, str], port: int) -> None:
        self.stack = stack
        self.port = port
        self.user_keys = keys
        s = stack.settings
        self.env = {
            "CONTINUITY_LOCAL_DIR": str(s.base_dir), "CONTINUITY_PRIMARY_PORT": str(s.primary_port),
            "CONTINUITY_REPLICA_PORT": str(s.replica_port), "CONTINUITY_CONTROL_PORT": str(s.control_port),
            "CONTINUITY_SANDBOX_PORT": str(s.sandbox_port), "CONTINUITY_DEVHOST_PORT": str(port),
            "CONTINUITY_DEVHOST_APP": "function_app:app", "CONTINUITY_DEVHOST_SUBSCRIPTIONS": "",
            "CONTINUITY_DEVHOST_WATCHED_CONTAINERS": "", "CONTINUITY_APPROVAL_WINDOW_MINUTES": "0.5",
            "CONTINUITY_FAILOVER_STEP_PAUSE": "", "CONTINUITY_NIGHTLY_SCHEDULE": "0 0 0 1 1 *",
            "CONTINUITY_EVIDENCE_CONTAINER": evidence_container(stack),
        }
        self.pid: int | None = None

    def start(self, **overrides: str) -> None:
        self.pid = process.start(port=self.port, env={**self.env, **overrides}, timeout=60)

    def stop(self) -> None:
        process.stop(env=self.env)

    def kill(self) -> None:
        """SIGKILL the devhost and everything it started: no cleanup, no goodbye."""
        assert self.pid is not None
        pid = self.pid
        os.killpg(pid, signal.SIGKILL)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except OSError:
                return True
            with_zombie = Path(f"/proc/{pid}/stat")
            if with_zombie.exists() and " Z " in with_zombie.read_text():
                os.waitpid(pid, os.WNOHANG)
            return False

        wait_until(gone, timeout=10, what=f"the killed devhost {pid} gone", interval=0.05)

    @property
    def function_key(self) -> str:
        return str(json.loads((self.stack.base / "devhost" / "keys.json").read_text())["functionKey"])

    def call(self, method: str, path: str, user: str | None, body: Any = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "x-functions-key": self.function_key}
        if user:
            headers["X-Continuity-Key"] = self.user_keys[user]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, json.loads(payload) if payload else None
        finally:
            conn.close()

    def request(self, user: str, scope: str = "platform", drill: bool = False, region: str = "northeurope",
                reason: str = "westeurope outage") -> tuple[int, Any]:
        return self.call("POST", "/api/failovers", user, {"scope": scope, "target_region": region,
                                                          "reason": reason, "drill": drill})

    def decide(self, verdict: str, instance: str, user: str, ack: list[str] | None = None,
               comment: str = "ok") -> tuple[int, Any]:
        return self.call("POST", f"/api/failovers/{instance}/{verdict}", user,
                         {"comment": comment, "acknowledge": ACK if ack is None else ack})

    def status(self, instance: str, user: str = "amir") -> dict[str, Any]:
        code, body = self.call("GET", f"/api/failovers/{instance}", user)
        assert code == 200, body
        return dict(body)

    def wait_state(self, instance: str, *states: str, timeout: float = 90) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            try:
                body = self.status(instance)
            except (OSError, http.client.HTTPException):  # the host is restarting
                return None
            last.update(body)
            return body if body.get("state") in states else None

        try:
            return wait_until(reached, timeout=timeout, what=f"{instance} reaching {states}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {json.dumps(last)[:2000]}") from None
