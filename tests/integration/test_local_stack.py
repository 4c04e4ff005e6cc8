from __future__ import annotations

import socket
import time

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.kernel.errors import PortInUse

pytestmark = pytest.mark.stack


def test_status_reports_every_part_healthy_with_roles(stack: LocalStack) -> None:
    status = stack.status()
    roles = {c.name: c.role for c in status.clusters}
    assert status.healthy, status.to_json()
    assert roles == {"primary": "primary", "replica": "standby", "sandbox": "primary", "control": "primary"}


def test_up_twice_is_a_no_op(stack: LocalStack) -> None:
    started = time.monotonic()
    stack.up()
    assert stack.status().healthy
    assert time.monotonic() - started < 10


def test_replica_streams_writes_from_primary(stack: LocalStack) -> None:
    token = f"probe-{time.time_ns()}"
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute("create table if not exists replication_probe (token text primary key)")
        conn.execute("insert into replication_probe values (%s)", (token,))
    deadline = time.monotonic() + 15
    seen = False
    with psycopg.connect(stack.dsn("replica"), autocommit=True) as conn:
        while time.monotonic() < deadline and not seen:
            try:
                seen = conn.execute("select 1 from replication_probe where token = %s", (token,)).fetchone() is not None
            except psycopg.errors.UndefinedTable:
                seen = False
            if not seen:
                time.sleep(0.1)
        assert seen, "the write on primary never reached the replica"
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
