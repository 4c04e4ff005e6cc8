"""Durable Functions conformance of the devhost engine, driven over HTTP through the real durable client.

A devhost subprocess serves ``tests/e2e/conformance_app.py``; its HTTP starters call the SDK's
``DurableOrchestrationClient``, which talks to the engine's management API; orchestrators replay through
``azure.durable_functions.Orchestrator`` against a task hub in the real ``control`` cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PORT_BASE, PROJECT_ROOT
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

APP = "tests.e2e.conformance_app:app"


def http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - local devhost
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class Devhost:
    """``python -m devhost --app tests.e2e.conformance_app:app`` as a subprocess we can kill."""

    def __init__(self, port: int, dbname: str, log: Path) -> None:
        from psycopg.conninfo import make_conninfo

        from continuity.adapters.local.local_stack import LocalStack

        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.env = dict(os.environ)
        # A database of its own: the stack's devhost (function_app.py) owns the default task hub.
        self.dsn = make_conninfo(LocalStack().dsn("control"), dbname=dbname)
        self.env["CONTINUITY_CONTROL_DSN"] = self.dsn
        # The default Event Grid subscriptions and blob watch name function_app.py's functions, not ours.
        self.env["CONTINUITY_DEVHOST_SUBSCRIPTIONS"] = ""
        self.env["CONTINUITY_DEVHOST_WATCHED_CONTAINERS"] = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "devhost", "--app", APP, "--port", str(self.port)],
                cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"devhost exited with {process.returncode}: "
                                     f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                return http("GET", f"{self.base}/admin/host/ping", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(answers, timeout=timeout, what="the devhost answering /admin/host/ping")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    # ---- the conformance app's starters --------------------------------------------------
    def start_orchestration(self, name: str, body: Any = None, instance_id: str | None = None) -> tuple[int, Any]:
        path = f"{self.base}/api/start/{name}" + (f"/{instance_id}" if instance_id else "")
        return http("POST", path, body)

    def started(self, name: str, body: Any = None, instance_id: str | None = None) -> dict[str, Any]:
        status, payload = self.start_orchestration(name, body, instance_id or f"{name}-{uuid.uuid4().hex[:8]}")
        assert status == 202, payload
        return dict(payload)

    def wait_done(self, links: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """Poll the ``statusQueryGetUri`` the client handed out until the instance ends."""
        def finished() -> dict[str, Any] | None:
            status, payload = http("GET", links["statusQueryGetUri"])
            assert status in (200, 202), (status, payload)
            return dict(payload) if status == 200 else None

        return wait_until(finished, timeout=timeout, what=f"{links['id']} finishing", interval=0.05)

    def status(self, instance_id: str, history: bool = False) -> dict[str, Any]:
        status, payload = http("GET", f"{self.base}/api/status/{instance_id}" + ("?history=1" if history else ""))
        assert status == 200, payload
        return dict(payload)

    def raise_event(self, instance_id: str, event: str, data: Any) -> tuple[int, Any]:
        return http("POST", f"{self.base}/api/raise/{instance_id}/{event}", data)

    def wait_for(self, instance_id: str, predicate: Any, timeout: float = 20) -> dict[str, Any]:
        """The instance's status once ``predicate(status)`` holds."""
        def reached() -> dict[str, Any] | None:
            current = self.status(instance_id)
            return current if predicate(current) else None

        return wait_until(reached, timeout=timeout, what=f"{instance_id} reaching the expected state",
                          interval=0.05)


@pytest.fixture(scope="module")
def devhost(stack: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    host = Devhost(PORT_BASE + 82, "durable_conformance", tmp_path_factory.mktemp("devhost") / "devhost.log")
    host.start()
    yield host
    host.stop()


def test_chaining_returns_each_activity_result_in_order(devhost: Devhost) -> None:
    done = devhost.wait_done(devhost.started("chaining"))
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == ["Hello Tokyo", "Hello Seattle", "Hello London"]


def test_fan_out_of_100_activities_collects_every_result(devhost: Devhost) -> None:
    done = devhost.wait_done(devhost.started("fan_out", 100))
    assert done["output"] == {"count": 100, "sum": sum(2 * i for i in range(100))}


def test_retry_succeeds_on_the_third_attempt_after_two_failures(devhost: Devhost) -> None:
    key = uuid.uuid4().hex
    links = devhost.started("retrying", {"key": key, "failures": 2, "max_attempts": 3})
    done = devhost.wait_done(links)
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == "succeeded on attempt 3"
    events = devhost.status(links["id"], history=True)["history"]
    # Two failures, each followed by the durable retry timer the SDK expects, then the success.
    assert [e["EventType"] for e in events].count(6) == 2  # TaskFailed
    assert [e["EventType"] for e in events].count(11) == 2  # TimerFired


def test_retry_gives_up_after_max_attempts_and_fails_the_orchestration(devhost: Devhost) -> None:
    done = devhost.wait_done(devhost.started("retrying", {"key": uuid.uuid4().hex, "failures": 5,
                                                          "max_attempts": 2}))
    assert done["runtimeStatus"] == "Failed"
    assert "attempt 2 of" in done["output"] and "failed on purpose" in done["output"]


def test_approval_raised_before_the_timeout_wins_and_cancels_the_timer(devhost: Devhost) -> None:
    links = devhost.started("approval", 30)
    devhost.wait_for(links["id"], lambda s: s["customStatus"] == {"stage": "waiting for approval"})
    assert devhost.raise_event(links["id"], "Approval", {"user": "alice"})[0] == 202
    done = devhost.wait_done(links, timeout=60)
    assert done["output"] == {"approved": True, "by": {"user": "alice"}}
    # It ended before its 30 s timer could fire (by the instance's own timestamps): the approval won.
    created, ended = (datetime.fromisoformat(done[key].replace("Z", "+00:00"))
                      for key in ("createdTime", "lastUpdatedTime"))
    assert (ended - created).total_seconds() < 30
    assert done["customStatus"] == {"stage": "approved"}


def test_approval_times_out_when_nobody_approves(devhost: Devhost) -> None:
    done = devhost.wait_done(devhost.started("approval", 1.5), timeout=15)
    assert done["output"] == {"approved": False}
    assert done["customStatus"] == {"stage": "timed out"}


def test_event_raised_before_the_wait_exists_is_still_delivered(devhost: Devhost) -> None:
    links = devhost.started("early_event")
    assert devhost.raise_event(links["id"], "Early", {"n": 42})[0] == 202  # the orchestrator is still warming up
    done = devhost.wait_done(links)
    assert done["output"] == {"n": 42}


def test_sub_orchestrations_return_results_and_report_failures_to_the_parent(devhost: Devhost) -> None:
    links = devhost.started("parent")
    done = devhost.wait_done(links)
    assert done["runtimeStatus"] == "Completed"
    output = done["output"]
    assert output["first"] == {"child": f"{links['id']}:0", "parent": links["id"], "doubled": 10}
    assert output["named"] == {"child": f"{links['id']}-named", "parent": links["id"], "doubled": 14}
    assert "child broke" in output["failure"]


def test_continue_as_new_restarts_with_the_new_input_until_done(devhost: Devhost) -> None:
    links = devhost.started("counter", {"round": 0, "value": 1})
    done = devhost.wait_done(links)
    assert done["output"] == {"round": 3, "value": 16}
    events = devhost.status(links["id"], history=True)["history"]
    # The last execution's history only: it started from the round-3 input.
    started = [e for e in events if e["EventType"] == 0]
    assert len(started) == 1 and json.loads(started[0]["Input"]) == {"round": 3, "value": 8}


def test_activity_exception_is_caught_by_the_orchestrator(devhost: Devhost) -> None:
    done = devhost.wait_done(devhost.started("catches"))
    assert done["runtimeStatus"] == "Completed"
    assert "ValueError: boom from the activity" in done["output"]["caught"]


def test_uncaught_activity_exception_fails_the_orchestration(devhost: Devhost) -> None:
    done = devhost.wait_done(devhost.started("uncaught"))
    assert done["runtimeStatus"] == "Failed"
    assert done["output"].startswith("Orchestrator function 'uncaught' failed:")
    assert "nobody catches this" in done["output"]


def test_custom_status_is_visible_while_the_orchestration_waits(devhost: Devhost) -> None:
    links = devhost.started("staged")
    waiting = devhost.wait_for(links["id"], lambda s: s["customStatus"] == {"stage": "two", "progress": 50})
    assert waiting["runtimeStatus"] == "Running"
    devhost.raise_event(links["id"], "Go", "go!")
    done = devhost.wait_done(links)
    assert (done["output"], done["customStatus"]) == ("go!", {"stage": "done"})


def test_replay_safe_clock_and_uuids_are_stable_across_replays(devhost: Devhost) -> None:
    done = devhost.wait_done(devhost.started("deterministic"))
    output = done["output"]
    # The activity received the values of the first episode; the final replay recomputed the same ones.
    assert output["echoed"] == {"uuid": output["uuid"], "started": output["started"]}
    assert output["replaying_at_end"] is False


def test_start_on_a_running_instance_id_is_refused(devhost: Devhost) -> None:
    instance_id = f"singleton-{uuid.uuid4().hex[:8]}"
    first = devhost.started("staged", instance_id=instance_id)
    status, refusal = devhost.start_orchestration("staged", instance_id=instance_id)
    assert status == 409
    assert "already exists" in refusal["error"]["message"]
    devhost.raise_event(instance_id, "Go", 1)
    devhost.wait_done(first)
    # A completed id may be started again, as in Azure.
    again = devhost.started("chaining", instance_id=instance_id)
    assert devhost.wait_done(again)["output"][0] == "Hello Tokyo"


def test_terminate_ends_a_waiting_orchestration_and_purge_removes_it(devhost: Devhost) -> None:
    links = devhost.started("staged")
    devhost.wait_for(links["id"], lambda s: s["runtimeStatus"] == "Running")
    # A running instance cannot be purged (the extension answers 412).
    assert http("DELETE", links["purgeHistoryDeleteUri"])[0] == 412
    status, _ = http("POST", links["terminatePostUri"].replace("{text}", "operator%20said%20stop"))
    assert status == 202
    done = devhost.wait_done(links)
    assert (done["runtimeStatus"], done["output"]) == ("Terminated", "operator said stop")
    assert devhost.raise_event(links["id"], "Go", 1)[0] == 409  # the client reports the 410 Gone
    assert http("POST", links["terminatePostUri"].replace("{text}", "again"))[0] == 410
    assert http("DELETE", f"{devhost.base}/api/purge/{links['id']}") == (200, {"instancesDeleted": 1})
    assert http("GET", links["statusQueryGetUri"])[0] == 404


def test_send_event_uri_from_the_check_status_response_delivers_the_event(devhost: Devhost) -> None:
    links = devhost.started("staged")
    devhost.wait_for(links["id"], lambda s: s["customStatus"] == {"stage": "two", "progress": 50})
    status, _ = http("POST", links["sendEventPostUri"].replace("{eventName}", "Go"), {"via": "webhook"})
    assert status == 202
    assert devhost.wait_done(links)["output"] == {"via": "webhook"}


def test_start_of_an_unknown_orchestrator_is_refused(devhost: Devhost) -> None:
    status, payload = devhost.start_orchestration("no_such_orchestrator")
    assert status == 409
    assert "doesn't exist" in payload["error"]["message"]


def test_raise_event_on_an_unknown_instance_is_refused(devhost: Devhost) -> None:
    status, payload = devhost.raise_event(f"missing-{uuid.uuid4().hex}", "Go", 1)
    assert status == 409 and "No instance" in payload["error"]["message"]


def test_wait_for_completion_returns_the_output_and_status_queries_filter(devhost: Devhost) -> None:
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    status, output = http("POST", f"{devhost.base}/api/run/fan_out/{prefix}-a", 10)
    assert (status, output) == (200, {"count": 10, "sum": 90})
    status, listed = http("GET", f"{devhost.base}/api/instances?prefix={prefix}&status=Completed")
    assert status == 200
    assert [(i["instanceId"], i["runtimeStatus"]) for i in listed] == [(f"{prefix}-a", "Completed")]
