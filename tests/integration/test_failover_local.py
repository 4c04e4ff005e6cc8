"""Failover of real local clusters on a dedicated throwaway stack (the shared test stack keeps its replica)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.failover_local import FailoverError, LocalFailover
from continuity.adapters.postgres.routing import RoutingTable
from continuity.failover.rules import FenceState, promotion_refusal
from tests.conftest import PORT_BASE
from tests.failover_support import Writer, dedicated_stack
from tests.waiting import wait_until

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def fstack() -> Iterator[LocalStack]:
    with dedicated_stack(PORT_BASE, "failover-int", offset=40) as stack:
        yield stack


@pytest.fixture()
def failover(fstack: LocalStack) -> Iterator[LocalFailover]:
    """Each test starts from a writable primary and a streaming replica, whatever the last one did."""
    local = LocalFailover(fstack)
    with psycopg.connect(fstack.dsn("replica"), autocommit=True) as conn:
        promoted = not conn.execute("select pg_is_in_recovery()").fetchone()[0]
    if promoted or local.observe_primary("weu-primary").read_only:
        local.restore_original_roles()
    yield local


def wait_streaming(local: LocalFailover, timeout: float = 20) -> None:
    def streaming() -> bool:
        obs = local.observe_replica("neu-replica")
        return obs.reachable and obs.in_recovery and "streaming" in obs.detail

    wait_until(streaming, timeout=timeout, what="the replica streaming from the primary")


def test_replica_observed_reachable_in_recovery_with_lag(failover: LocalFailover) -> None:
    wait_streaming(failover)
    obs = failover.observe_replica("neu-replica")
    assert obs.reachable and obs.in_recovery
    assert obs.lag_bytes is not None and obs.lag_bytes >= 0
    assert obs.lag_seconds is not None


def test_fence_makes_old_primary_refuse_writes_and_ends_sessions(failover: LocalFailover, fstack: LocalStack) -> None:
    victim = psycopg.connect(fstack.dsn("primary"), autocommit=False)
    victim.execute("create table if not exists fence_victim (x int)")
    fence = failover.fence_primary("weu-primary")
    assert fence.state is FenceState.READ_ONLY and fence.final_lsn
    with pytest.raises(psycopg.OperationalError):
        victim.execute("insert into fence_victim values (1)")  # the session was terminated by the fence
    victim.close()
    assert failover.refuses_writes("primary")
    assert failover.observe_primary("weu-primary").read_only is True


def test_fence_twice_is_idempotent(failover: LocalFailover) -> None:
    first = failover.fence_primary("weu-primary")
    second = failover.fence_primary("weu-primary")
    assert first.state is second.state is FenceState.READ_ONLY


def test_failover_under_write_load_loses_no_acknowledged_commit(failover: LocalFailover, fstack: LocalStack) -> None:
    wait_streaming(failover)
    writer = Writer(fstack.dsn("primary"))
    writer.start()
    wait_until(lambda: len(writer.acked) >= 50, timeout=30, what="the writer committing before the fence")
    fence = failover.fence_primary("weu-primary")
    # The writer is still at it when the fence lands: it is refused, so the fence stopped live writes.
    wait_until(lambda: writer.refused + writer.errors > 0, timeout=30, what="the writer refused by the fence")
    assert promotion_refusal(fence, frozenset(), drill=False) is None
    failover.wait_for_replay(fence.final_lsn or "0/0")
    result = failover.promote_replica()
    writer.stop()
    assert result["already_promoted"] is False
    assert writer.lost_on(fstack.dsn("replica")) == []
    assert failover.write_probe(fstack.dsn("replica"), "test-run")["ok"]
    assert failover.refuses_writes("primary")


def test_promote_twice_reports_already_promoted(failover: LocalFailover) -> None:
    fence = failover.fence_primary("weu-primary")
    failover.wait_for_replay(fence.final_lsn or "0/0")
    assert failover.promote_replica()["already_promoted"] is False
    assert failover.promote_replica()["already_promoted"] is True


def test_stopped_primary_counts_as_fenced(failover: LocalFailover, fstack: LocalStack) -> None:
    fence = failover.fence_primary("weu-primary", mode="stop")
    assert fence.state is FenceState.STOPPED
    assert not fstack.is_running("primary")
    again = failover.fence_primary("weu-primary", mode="stop")
    assert again.state is FenceState.STOPPED
    fstack._start("primary")


def test_unknown_fence_mode_refused(failover: LocalFailover) -> None:
    with pytest.raises(FailoverError, match="fence mode 'pause' must be 'read-only' or 'stop'"):
        failover.fence_primary("weu-primary", mode="pause")


def test_replica_already_promoted_is_observed_not_in_recovery(failover: LocalFailover) -> None:
    failover.fence_primary("weu-primary")
    failover.promote_replica()
    obs = failover.observe_replica("neu-replica")
    assert obs.reachable and obs.in_recovery is False


def test_unreachable_replica_is_observed_unreachable(failover: LocalFailover, fstack: LocalStack) -> None:
    fstack._pg_ctl("replica", "-m", "fast", "-w", "stop")
    try:
        obs = failover.observe_replica("neu-replica")
        assert obs.reachable is False and "cannot connect" in obs.detail
    finally:
        fstack._start("replica")


def test_drill_promotes_a_sandbox_copy_and_never_touches_live_clusters(failover: LocalFailover,
                                                                       fstack: LocalStack) -> None:
    wait_streaming(failover)
    copy = failover.drill_copy("drill-test")
    try:
        with psycopg.connect(copy.dsn(fstack), autocommit=True) as conn:
            assert conn.execute("show listen_addresses").fetchone() == ("",)
        assert failover.promote_drill("drill-test")["already_promoted"] is False
        assert failover.write_probe(copy.dsn(fstack), "drill")["ok"]
        assert failover.observe_replica("neu-replica").in_recovery is True
        assert failover.observe_primary("weu-primary").read_only is False
    finally:
        assert failover.drop_drill("drill-test") is True
    assert failover.drop_drill("drill-test") is False


def test_repoint_bumps_version_once_and_is_idempotent(fstack: LocalStack) -> None:
    from continuity.adapters.postgres.connection import ensure_database

    ensure_database(fstack.dsn("control"), "continuity")
    routes = RoutingTable(fstack.dsn("control", "continuity"))
    first, changed1 = routes.repoint("acme-finance", writer_host="127.0.0.1", writer_port=1111, region="westeurope")
    moved, changed2 = routes.repoint("acme-finance", writer_host="127.0.0.1", writer_port=2222, region="northeurope")
    again, changed3 = routes.repoint("acme-finance", writer_host="127.0.0.1", writer_port=2222, region="northeurope")
    assert changed2 and not changed3
    assert moved.version == first.version + 1 == again.version
    assert routes.get_route("acme-finance") == again


def test_synchronous_replication_loses_no_commit_when_primary_crashes_unfenced(failover: LocalFailover,
                                                                              fstack: LocalStack) -> None:
    """The unreachable-primary case: no fence, no final LSN to wait for. With synchronous_standby_names naming
    the replica and synchronous_commit=on, every acknowledged commit is already flushed on the replica."""
    wait_streaming(failover)
    with psycopg.connect(fstack.dsn("primary"), autocommit=True) as conn:
        names = [r[0] for r in conn.execute("select application_name from pg_stat_replication")]
        assert "replica" in names, names  # the walreceiver reports cluster_name as its application_name
        conn.execute("alter system set synchronous_standby_names = 'replica'")
        conn.execute("alter system set synchronous_commit = 'on'")
        conn.execute("select pg_reload_conf()")
    try:
        writer = Writer(fstack.dsn("primary"), table="sync_ledger")
        writer.start()
        wait_until(lambda: len(writer.acked) >= 20, timeout=30, what="the writer committing before the crash")
        fstack._pg_ctl("primary", "-m", "immediate", "-w", "stop")  # a crash: no shutdown checkpoint, no goodbye
        writer.stop()
        fence = failover.fence_primary("weu-primary")
        assert fence.state is FenceState.STOPPED and fence.final_lsn is None
        failover.promote_replica()
        assert writer.lost_on(fstack.dsn("replica")) == []
    finally:
        fstack._start("primary")
        with psycopg.connect(fstack.dsn("primary"), autocommit=True) as conn:
            conn.execute("alter system reset synchronous_standby_names")
            conn.execute("alter system reset synchronous_commit")
            conn.execute("select pg_reload_conf()")
