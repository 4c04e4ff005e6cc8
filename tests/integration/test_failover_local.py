"""Failover of real local clusters on a dedicated throwaway stack (the shared test stack keeps its replica)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.local.run_folders import LeftoverNotOurs, create_marked
from continuity.adapters.postgres.failover_local import FailoverError, LocalFailover
from continuity.adapters.postgres.routing import RoutingTable
from continuity.failover.rules import FenceState, promotion_refusal
from tests.conftest import PORT_BASE
from tests.failover_support import Writer, dedicated_stack
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]


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


# ---- drills killed and retried: at-least-once delivery of the copy step ---------------------------------

KILL_DRILL = """
import json, sys
from continuity.failover import service
print(json.dumps(service.drill_copy(json.loads(sys.argv[1]))), flush=True)
"""


def stack_env(stack: LocalStack) -> dict[str, str]:
    """The settings that point the activities at the dedicated stack (its clusters and control database)."""
    s = stack.settings
    return {"CONTINUITY_LOCAL_DIR": str(s.base_dir), "CONTINUITY_PRIMARY_PORT": str(s.primary_port),
            "CONTINUITY_REPLICA_PORT": str(s.replica_port), "CONTINUITY_CONTROL_PORT": str(s.control_port),
            "CONTINUITY_SANDBOX_PORT": str(s.sandbox_port)}


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name ``text`` (a drill's folder): none may outlive a drop."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or proc.name == str(os.getpid()):
            continue
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in line and state not in ("Z", "X"):
            found.append(line)
    return found


def drill_input(run_id: str) -> dict[str, Any]:
    from continuity.failover.rules import plan_failover
    from continuity.kernel import settings

    plan = plan_failover(settings.configured_registry(), "platform", "northeurope", True)
    return {"run_id": run_id, "instance_id": "failover-platform", "plan": plan.to_json()}


def killed_at(point: str, inp: dict[str, Any], reached: Callable[[], bool]) -> None:
    """Run the copy step in a real process held at ``point``, wait until ``reached()``, SIGKILL it (the host)."""
    env = {**os.environ, "CONTINUITY_FAILOVER_STEP_PAUSE": f"{point}:120", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_DRILL, json.dumps(inp)], env=env, cwd=ROOT,
                            start_new_session=True)

    def held() -> bool:
        assert proc.poll() is None, f"the copy step ended before reaching {point}"
        return reached()

    try:
        wait_until(held, timeout=120, what=f"the copy step held at {point}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the host only: its children must go by themselves
        proc.wait(timeout=10)


@pytest.fixture()
def on_dedicated(fstack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    for key, value in stack_env(fstack).items():
        monkeypatch.setenv(key, value)
    return fstack


def test_drill_copy_killed_mid_copy_is_redone_by_the_next_attempt_and_timed_from_the_first(
        failover: LocalFailover, on_dedicated: LocalStack) -> None:
    """The known bug: a drill killed mid-copy failed for good ("exists but is not empty")."""
    from continuity.failover import service as failover_service

    wait_streaming(failover)
    run_id = f"drill-kill-{uuid.uuid4().hex[:8]}"
    root = failover.drill_root() / run_id
    inp = drill_input(run_id)
    before = datetime.now(UTC)
    killed_at("copy.copied", inp, lambda: (root / "data" / "PG_VERSION").exists())
    assert not (root / "ready").exists(), "the crash left a half-made copy"
    # pg_basebackup dies with its host (parent-death signal); its forked WAL streamer follows when its pipe closes.
    wait_until(lambda: processes_mentioning(str(root)) == [], timeout=15, what="pg_basebackup gone with its host")
    try:
        result = failover_service.drill_copy(inp)
        assert result["ok"], result["detail"]
        assert result["attempts"] == 2
        assert before <= datetime.fromisoformat(result["started_at"]) < datetime.fromisoformat(
            result["attempt_started_at"]), "the step's timing must count from its first attempt"
        copy = failover.get_drill(run_id)
        assert copy.port == result["data"]["port"]
        assert failover.promote_drill(run_id)["already_promoted"] is False
        assert failover.write_probe(copy.dsn(on_dedicated), run_id)["ok"]
    finally:
        assert failover.drop_drill(run_id) is True
    assert not root.exists() and processes_mentioning(str(root)) == []


def test_drill_copy_killed_after_starting_is_reused_by_the_next_attempt(failover: LocalFailover,
                                                                        on_dedicated: LocalStack) -> None:
    from continuity.failover import service as failover_service

    wait_streaming(failover)
    run_id = f"drill-kill-{uuid.uuid4().hex[:8]}"
    root = failover.drill_root() / run_id
    inp = drill_input(run_id)
    killed_at("copy", inp, lambda: (root / "ready").exists())  # done, its result never recorded
    first_port = int((root / "ready").read_text())
    try:
        result = failover_service.drill_copy(inp)
        assert result["ok"] and result["attempts"] == 2
        assert result["data"]["port"] == first_port, "the running copy was not reused"
        postmasters = [p for p in processes_mentioning(str(root / "data")) if "postgres" in p and "-D" in p]
        assert len(postmasters) == 1, postmasters
    finally:
        assert failover.drop_drill(run_id) is True
    assert not root.exists() and processes_mentioning(str(root)) == []


def test_drill_folder_not_made_by_this_run_is_refused_and_left_untouched(failover: LocalFailover) -> None:
    stranger = failover.drill_root() / "not-ours"
    (stranger / "data").mkdir(parents=True)
    (stranger / "data" / "keep.txt").write_text("someone's files")
    others = failover.drill_root() / "another-run"
    create_marked(others, "someone-else", "copy")
    try:
        with pytest.raises(LeftoverNotOurs, match="not-ours exists with no marker.*left untouched"):
            failover.drill_copy("not-ours")
        with pytest.raises(LeftoverNotOurs, match="not-ours exists with no marker"):
            failover.drop_drill("not-ours")
        with pytest.raises(LeftoverNotOurs, match="the marker of run 'someone-else'"):
            failover.drill_copy("another-run")
        assert (stranger / "data" / "keep.txt").read_text() == "someone's files" and others.exists()
    finally:
        shutil.rmtree(stranger)
        shutil.rmtree(others)


def test_sweeper_drops_only_stale_marked_drill_copies(failover: LocalFailover) -> None:
    now = datetime.now(UTC)
    stale = create_marked(failover.drill_root() / "stale-run", "stale-run", "copy", now - timedelta(hours=7))
    fresh = create_marked(failover.drill_root() / "fresh-run", "fresh-run", "copy", now)
    unmarked = failover.drill_root() / "unmarked-old"
    unmarked.mkdir()
    try:
        assert failover.sweep_drills(360, now=now) == ["stale-run"]
        assert not stale.exists() and fresh.exists() and unmarked.exists()
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(unmarked, ignore_errors=True)
