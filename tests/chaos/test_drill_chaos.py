"""Failover drill under SIGKILL: the devhost killed inside the copy and at a step boundary (points picked by
the seed) ends COMPLETED with the same steps as an uninterrupted drill, the killed steps ran again, live
clusters untouched, no drill directory, copy process or run folder left, and the evidence chain verifies."""

from __future__ import annotations

from typing import Any

import pytest

from continuity.adapters.postgres.failover_local import LocalFailover
from continuity.cli.main import main
from tests.chaos.conftest import TENANT, Chaos
from tests.chaos.support import PLAN, POINTS, context, leftovers

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

STEP_OF = {"copy.copied": "copy", "copy": "copy", "promote": "promote", "verify": "verify"}


def drill(chaos: Chaos, kills: tuple[str, ...]) -> dict[str, Any]:
    host, why = chaos.host, context("drill")
    if kills:
        host.restart(kills[0])
    code, body = host.request("olivia", scope=TENANT, drill=True)
    assert code == 202, (why, body)
    host.drive(body["id"], kills, frozenset(p for p, _ in POINTS["drill"]), why)
    return host.wait_state(body["id"], "COMPLETED", "FAILED", "REFUSED", timeout=240)


def outcome(done: dict[str, Any]) -> tuple[Any, ...]:
    return done["state"], done["reason"], [(s["step"], s["ok"]) for s in done["steps"]]


def test_drill_killed_inside_the_copy_and_at_a_step_boundary_ends_as_an_uninterrupted_drill(
        chaos: Chaos, capsys: pytest.CaptureFixture[str]) -> None:
    why = context("drill")
    uninterrupted = drill(chaos, ())
    killed = drill(chaos, PLAN["drill"])

    assert outcome(uninterrupted) == ("COMPLETED", None, [("copy", True), ("promote", True), ("verify", True)]), \
        (why, uninterrupted["reason"])
    assert outcome(killed) == outcome(uninterrupted), (why, killed["reason"])
    attempts = {s["step"]: s["attempts"] for s in killed["steps"]}
    for point in PLAN["drill"]:
        assert attempts[STEP_OF[point]] >= 2, (why, f"step {STEP_OF[point]} did not run again", attempts)
    local = LocalFailover(chaos.stack)
    assert local.observe_replica("neu-replica").in_recovery is True, why
    assert local.observe_primary("weu-primary").read_only is False, why
    assert leftovers(chaos.stack, chaos.tmpdir) == [], why
    capsys.readouterr()
    assert main(["evidence", "verify", "--json"]) == 0, (why, capsys.readouterr().out)
