from __future__ import annotations

import secrets
import socket
import time
from typing import Any

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.storage.blob_store import BlobStore
from continuity.kernel.errors import PortInUse
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


def test_status_reports_every_part_healthy_with_roles(stack: LocalStack) -> None:
    status = stack.status()
    roles = {c.name: c.role for c in status.clusters}
    assert status.healthy, status.to_json()
    assert roles == {"primary": "primary", "replica": "standby", "sandbox": "primary", "control": "primary"}


def stack_state(stack: LocalStack, blobs: BlobStore, marker: str) -> dict[str, Any]:
    """What a second ``up`` could change: each cluster's identity, start time, role, config and the marker
    row; Azurite's and the devhost's processes and data; the generated secrets and keys."""
    from devhost import process

    clusters: dict[str, Any] = {}
    for name in ("primary", "replica", "sandbox", "control"):
        with psycopg.connect(stack.dsn(name), autocommit=True) as conn:
            identity = conn.execute("select pg_postmaster_start_time(), pg_is_in_recovery(), "
                                    "(select system_identifier from pg_control_system())").fetchone()
            # on the primary only: the replica receives it asynchronously
            databases = {r[0] for r in conn.execute("select datname from pg_database where datname = %s",
                                                    (f"noop_{marker}",))} if name == "primary" else None
        data = stack.data_dir(name)
        clusters[name] = {"identity": identity, "marker_database": databases,
                          "config": [(data / f).read_text() for f in ("postgresql.conf", "continuity.conf")]}
    props = blobs.container("attachments").get_blob_client(f"noop/{marker}").get_blob_properties()
    return {
        "clusters": clusters,
        "azurite_pid": stack.azurite_pidfile.read_text(),
        "marker_blob": (props.etag, blobs.download("attachments", f"noop/{marker}")),
        "devhost_pid": process.status(stack.settings.devhost_port)["pid"],
        "files": {str(p): p.read_bytes() for p in (stack.pgpass, stack.base / "secrets" / "pg-superuser",
                                                   stack.base / "devhost" / "keys.json")},
    }


def test_up_twice_is_a_no_op(stack: LocalStack, blob_store: BlobStore) -> None:
    marker = secrets.token_hex(4)
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f"create database noop_{marker}")
    blob_store.upload("attachments", f"noop/{marker}", marker.encode())  # a container no watcher reacts to
    try:
        assert stack.status().healthy
        before = stack_state(stack, blob_store, marker)
        assert before["clusters"]["primary"]["marker_database"] == {f"noop_{marker}"}
        assert before["clusters"]["replica"]["identity"][1] is True  # the replica is a standby before, too
        stack.up()
        assert stack_state(stack, blob_store, marker) == before
        assert stack.status().healthy
    finally:
        with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
            conn.execute(f"drop database if exists noop_{marker}")
        blob_store.delete("attachments", f"noop/{marker}")


def test_replica_streams_writes_from_primary(stack: LocalStack) -> None:
    token = f"probe-{time.time_ns()}"
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute("create table if not exists replication_probe (token text primary key)")
        conn.execute("insert into replication_probe values (%s)", (token,))
    with psycopg.connect(stack.dsn("replica"), autocommit=True) as conn:

        def replicated() -> bool:
            try:
                return conn.execute("select 1 from replication_probe where token = %s", (token,)).fetchone() is not None
            except psycopg.errors.UndefinedTable:
                return False

        wait_until(replicated, timeout=15, what="the write on primary reaching the replica")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("insert into replication_probe values ('x')")


def test_sandbox_accepts_no_tcp(stack: LocalStack) -> None:
    with psycopg.connect(stack.dsn("sandbox"), autocommit=True) as conn:
        assert conn.execute("show listen_addresses").fetchone() == ("",)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", stack.port("sandbox")), timeout=1).close()


def test_port_in_use_is_refused_with_the_setting_to_change(stack: LocalStack) -> None:
    from dataclasses import replace

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        other = LocalStack(replace(stack.settings, base_dir=stack.base / "port-clash", azurite_blob_port=busy))
        with pytest.raises(PortInUse, match="CONTINUITY_AZURITE_BLOB_PORT"):
            other.up_azurite()
