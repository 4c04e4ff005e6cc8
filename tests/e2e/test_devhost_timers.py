"""Timer triggers on the devhost: on schedule, on demand (admin API and CLI), past due after downtime."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.cli import main as cli
from continuity.kernel.errors import ConfigError
from devhost.timers import Schedule
from tests.e2e.devhost_support import PORT_BASE, YEARLY_TIMER_SCHEDULE, SampleDevhost
from tests.waiting import wait_until

pytestmark = pytest.mark.devhost


@pytest.fixture(scope="module")
def ticking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleDevhost]:
    host = SampleDevhost(PORT_BASE + 73, tmp_path_factory.mktemp("devhost-timers"),
                         SAMPLE_TICK_SCHEDULE="*/1 * * * * *")
    host.start()
    yield host
    host.stop()


def test_timer_fires_on_its_schedule_resolved_from_an_app_setting(ticking: SampleDevhost) -> None:
    def gaps(ticks: list[dict[str, object]]) -> list[float]:
        nexts = [dt.datetime.fromisoformat(str(t["status"]["Next"]).replace("Z", "+00:00")) for t in ticks]  # type: ignore[index]
        return [(b - a).total_seconds() for a, b in zip(nexts, nexts[1:], strict=False)]

    def three_on_schedule() -> list[dict[str, object]] | None:
        # An every-second schedule: each invocation's Next is one second after the previous one's. A tick the
        # machine delayed past the next second (a loaded 2-core runner) skips one and says it was past due, so
        # the proof is three ticks in a row on time, not the first three.
        ticks = ticking.calls("tick")
        return next((ticks[i:i + 3] for i in range(len(ticks) - 2)
                     if gaps(ticks[i:i + 3]) == [1.0, 1.0] and not any(t["past_due"] for t in ticks[i:i + 3])),
                    None)

    ticks = wait_until(three_on_schedule, timeout=60, what="three ticks in a row, a second apart")
    assert all(t["type"] == "TimerRequest" for t in ticks)
    assert not ticking.calls("yearly")


def test_admin_api_fires_a_timer_now_only_with_the_master_key(ticking: SampleDevhost) -> None:
    assert ticking.json("POST", "/admin/functions/yearly", {"input": None})[0] == 401
    wrong = ticking.json("POST", "/admin/functions/yearly", {"input": None},
                         headers={"x-functions-key": ticking.keys["functionKey"]})
    assert wrong[0] == 401
    status, _ = ticking.json("POST", "/admin/functions/yearly", {"input": None},
                             headers={"x-functions-key": ticking.keys["masterKey"]})
    assert status == 202
    fired = wait_until(lambda: ticking.calls("yearly"), timeout=5, what="the yearly timer fired by the admin API")
    assert fired[0]["type"] == "TimerRequest" and fired[0]["past_due"] is False


def test_trigger_timer_command_fires_a_timer_through_the_admin_api(ticking: SampleDevhost,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CONTINUITY_LOCAL_DIR", str(ticking.local_dir))  # where the CLI finds the master key
    before = len(ticking.calls("yearly"))
    code = cli.main(["trigger", "timer", "yearly", "--endpoint", f"http://127.0.0.1:{ticking.port}", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"function": "yearly", "accepted": True,
                                                  "schedule": YEARLY_TIMER_SCHEDULE}
    wait_until(lambda: len(ticking.calls("yearly")) > before, timeout=5, what="the yearly timer fired by the CLI")


def test_trigger_timer_command_refuses_a_function_that_is_not_a_timer(ticking: SampleDevhost,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CONTINUITY_LOCAL_DIR", str(ticking.local_dir))
    endpoint = f"http://127.0.0.1:{ticking.port}"
    assert cli.main(["trigger", "timer", "hello", "--endpoint", endpoint]) == 2
    assert "'hello' is a httpTrigger function, not a timer" in capsys.readouterr().err
    assert cli.main(["trigger", "timer", "no_such_timer", "--endpoint", endpoint]) == 2
    assert "has no function named 'no_such_timer'" in capsys.readouterr().err


def test_trigger_timer_command_says_when_no_devhost_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CONTINUITY_LOCAL_DIR", str(tmp_path))
    assert cli.main(["trigger", "timer", "yearly", "--endpoint", f"http://127.0.0.1:{PORT_BASE + 78}"]) == 2
    assert "does not answer" in capsys.readouterr().err


def test_missed_occurrence_fires_past_due_at_startup_and_bad_schedule_disables_only_its_timer(
        tmp_path: Path) -> None:
    host = SampleDevhost(PORT_BASE + 74, tmp_path, SAMPLE_TICK_SCHEDULE="")
    host.dir.mkdir(parents=True)
    missed = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    (host.dir / "timers.json").write_text(json.dumps(
        {"yearly": {"Last": "", "Next": missed, "LastUpdated": missed, "Schedule": YEARLY_TIMER_SCHEDULE}}))
    host.start()
    try:
        fired = wait_until(lambda: host.calls("yearly"), timeout=5, what="the past-due yearly timer fired at start")
        assert fired[0]["past_due"] is True
        status, body = host.json("GET", "/admin/host/status", headers={"x-functions-key": host.keys["masterKey"]})
        tick = next(f for f in body["functions"] if f["name"] == "tick")
        assert "app setting SAMPLE_TICK_SCHEDULE is not set" in tick["error"]
        assert host.request("GET", "/api/hello/still-serving")[0] == 200
        stored = json.loads((host.dir / "timers.json").read_text())["yearly"]
        assert dt.datetime.fromisoformat(stored["Next"].replace("Z", "+00:00")) > dt.datetime.now(dt.UTC)
    finally:
        host.stop()


def test_schedule_resolution_refuses_bad_expressions_and_accepts_timespans(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Schedule.resolve("%S%", {"S": "0 */5 * * * *"}).expression == "0 */5 * * * *"
    span = Schedule.resolve("00:00:30", {})
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert span.next_after(start) == start + dt.timedelta(seconds=30)
    assert Schedule.resolve("0 0 2 * * *", {}).next_after(start) == dt.datetime(2026, 1, 1, 2, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="six-field NCRONTAB"):
        Schedule.resolve("0 2 * * *", {})  # five fields: the Unix form, not NCRONTAB
    with pytest.raises(ConfigError, match="app setting MISSING is not set"):
        Schedule.resolve("%MISSING%", {})
    # Without an explicit environment, a documented setting falls back to its local default.
    monkeypatch.delenv("CONTINUITY_NIGHTLY_SCHEDULE", raising=False)
    assert Schedule.resolve("%CONTINUITY_NIGHTLY_SCHEDULE%").expression == "0 0 2 * * *"
