"""Crash safety: SIGKILL the devhost at random moments; every orchestration still ends exactly once."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PORT_BASE
from tests.e2e.test_durable_conformance import Devhost
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

FAN_OUT = 60


def test_fan_out_timer_and_wait_survive_repeated_sigkill_and_each_completes_exactly_once(
        stack: object, tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    runs = tmp_path / "runs.jsonl"
    host = Devhost(PORT_BASE + 83, "durable_crash", tmp_path / "devhost.log")
    host.start()
    try:
        fan = host.started("recorded_fan_out", {"count": FAN_OUT, "seconds": 0.2, "log": str(runs)})
        waiting = host.started("staged")
        timer = host.started("approval", 8)
        timer_started = time.monotonic()
        kills = []
        # The first kill comes after the fan-out's first execution is logged: on a slow runner a host could
        # otherwise die before running anything, and the work would never span several processes.
        wait_until(lambda: runs.exists() and runs.read_text().strip(), timeout=60,
                   what="the fan-out's first execution logged")
        for _ in range(3):
            pause = rng.uniform(0.2, 1.5)
            time.sleep(pause)
            host.kill()
            kills.append(round(pause, 2))
            host.start()
        context = f"seed {seed}, killed after {kills}s"

        assert host.raise_event(waiting["id"], "Go", "after the crashes")[0] == 202, context
        fan_done = host.wait_done(fan, timeout=90)
        wait_done = host.wait_done(waiting, timeout=30)
        timer_done = host.wait_done(timer, timeout=30)
    finally:
        host.stop()

    assert fan_done["runtimeStatus"] == "Completed", (context, fan_done)
    assert fan_done["output"] == sum(range(FAN_OUT)), context
    assert wait_done["output"] == "after the crashes", context
    # The durable timer fired after the restarts, not early and not never.
    assert timer_done["output"] == {"approved": False}, context
    assert time.monotonic() - timer_started >= 8, context

    executions = [json.loads(line) for line in runs.read_text().splitlines()]
    assert {e["item"] for e in executions} == set(range(FAN_OUT)), context  # at least once each
    assert len({e["pid"] for e in executions}) >= 2, context  # the work really spanned several processes

    with psycopg.connect(host.dsn) as conn:
        rows = conn.execute(
            "select instance_id, count(*), min(status) from taskhub.outcomes where instance_id = any(%s) "
            "group by instance_id", ([fan["id"], waiting["id"], timer["id"]],)).fetchall()
    assert sorted(rows) == sorted([(fan["id"], 1, "Completed"), (waiting["id"], 1, "Completed"),
                                   (timer["id"], 1, "Completed")]), context
