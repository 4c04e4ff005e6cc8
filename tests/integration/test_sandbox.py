"""The sandbox guard and scratch databases against the real local clusters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.sandbox import Sandbox, production_dsns_of, scratch_database_name
from continuity.kernel.errors import ContinuityError, SandboxNotIsolated, ServerUnavailable
from continuity.kernel.tenants import Registry
from tests.integration.test_restore_validation import make_registry

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def registry() -> Registry:
    return make_registry(("vt-good",))


@pytest.fixture()
def sandbox(stack: LocalStack, registry: Registry) -> Sandbox:
    return Sandbox(stack.dsn("sandbox"), production_dsns_of(registry))


def _with(dsn: str, **changes: object) -> str:
    params = conninfo_to_dict(dsn)
    params.update(changes)
    return make_conninfo("", **params)


def test_local_sandbox_is_verified_isolated(sandbox: Sandbox) -> None:
    reason = sandbox.verify_isolated()
    assert reason.startswith("sandbox ") and "unix socket only" in reason


def test_sandbox_refuses_the_production_primary_over_tcp(stack: LocalStack, registry: Registry) -> None:
    target = Sandbox(stack.dsn("primary"), production_dsns_of(registry))
    with pytest.raises(SandboxNotIsolated) as err:
        target.verify_isolated()
    assert "is production server 'weu-primary' of the registry" in str(err.value)


def test_sandbox_refuses_the_production_primary_through_its_socket(stack: LocalStack, registry: Registry) -> None:
    via_socket = _with(stack.dsn("primary"), host=str(stack.socket_dir))
    target = Sandbox(via_socket, production_dsns_of(registry))
    with pytest.raises(SandboxNotIsolated) as err:
        target.verify_isolated()
    assert "production server 'weu-primary'" in str(err.value)


def test_sandbox_refuses_a_copy_of_production_by_system_identifier(stack: LocalStack) -> None:
    """The replica shares the primary's system identifier; reached at another port, identity still tells."""
    servers = {"neu-replica": stack.dsn("replica")}
    via_socket = _with(stack.dsn("primary"), host=str(stack.socket_dir))
    target = Sandbox(via_socket, servers)
    with pytest.raises(SandboxNotIsolated) as err:
        target.verify_isolated()
    assert "has the system identifier of production server 'neu-replica'" in str(err.value)


def test_sandbox_refuses_a_target_that_accepts_tcp(stack: LocalStack) -> None:
    """The control cluster is no production server, but it listens on TCP: not isolated."""
    target = Sandbox(_with(stack.dsn("control"), host=str(stack.socket_dir)), {})
    with pytest.raises(SandboxNotIsolated) as err:
        target.verify_isolated()
    expected = "accepts TCP (listen_addresses='127.0.0.1'); set listen_addresses='' on the sandbox cluster"
    assert expected in str(err.value)


def test_sandbox_refuses_a_tcp_host_before_connecting(registry: Registry) -> None:
    target = Sandbox("host=10.255.255.1 port=5432 user=x dbname=postgres connect_timeout=1",
                     production_dsns_of(registry))
    with pytest.raises(SandboxNotIsolated) as err:
        target.verify_isolated()
    assert "is reached over TCP" in str(err.value)


def test_stopped_sandbox_is_a_clear_unavailable_error(registry: Registry, tmp_path: Path) -> None:
    target = Sandbox(f"host={tmp_path} port=5999 user=continuity dbname=postgres connect_timeout=2",
                     production_dsns_of(registry))
    with pytest.raises(ServerUnavailable) as err:
        target.verify_isolated()
    assert "start it (`continuity local up`) or fix the sandbox connection" in str(err.value)


def test_scratch_database_is_created_and_dropped_and_drop_is_idempotent(sandbox: Sandbox) -> None:
    name = sandbox.create_scratch_database("vt-good")
    assert name.startswith("scratch_vt_good_") and name in sandbox.list_scratch_databases()
    with psycopg.connect(sandbox.scratch_dsn(name), autocommit=True) as conn:
        assert conn.execute("select current_database()").fetchone() == (name,)
    sandbox.drop_scratch_database(name)
    sandbox.drop_scratch_database(name)  # already gone: still succeeds
    assert name not in sandbox.list_scratch_databases()


def test_drop_refuses_a_database_that_is_not_a_scratch_database(sandbox: Sandbox) -> None:
    with pytest.raises(ContinuityError, match="not a scratch database name"):
        sandbox.drop_scratch_database("postgres")


def test_drop_succeeds_while_a_session_is_still_connected(sandbox: Sandbox) -> None:
    name = sandbox.create_scratch_database("vt-good")
    conn = psycopg.connect(sandbox.scratch_dsn(name), autocommit=True)
    try:
        sandbox.drop_scratch_database(name)
    finally:
        conn.close()
    assert name not in sandbox.list_scratch_databases()


def test_sweeper_drops_only_stale_scratch_databases(sandbox: Sandbox, stack: LocalStack) -> None:
    now = datetime.now(UTC)
    stale = sandbox.create_scratch_database(
        "vt-good", name=scratch_database_name("vt-good", now - timedelta(hours=8), "0a0b0c"))
    fresh = sandbox.create_scratch_database("vt-good", now=now)
    with psycopg.connect(stack.dsn("sandbox"), autocommit=True) as conn:
        conn.execute("create database not_scratch_keepme")
    try:
        dropped = sandbox.sweep_scratch_databases(older_than_minutes=360, now=now)
        assert dropped == [stale]
        assert sandbox.list_scratch_databases() == [fresh]
        with psycopg.connect(stack.dsn("sandbox"), autocommit=True) as conn:
            assert conn.execute("select 1 from pg_database where datname = 'not_scratch_keepme'").fetchone()
    finally:
        sandbox.drop_scratch_database(fresh)
        with psycopg.connect(stack.dsn("sandbox"), autocommit=True) as conn:
            conn.execute("drop database if exists not_scratch_keepme")
