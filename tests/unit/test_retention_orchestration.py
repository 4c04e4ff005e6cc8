"""The retention orchestrator, driven as the Durable SDK drives it: yielded activity calls in, results back."""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrations import retention as workflow

CLOCK = datetime(2026, 11, 24, 3, 30, tzinfo=UTC)
orchestrator: Callable[[Any], Generator[Any, Any, Any]] = \
    workflow.retention.build().get_user_function().orchestrator_function


class Context:
    """Just what the orchestrator touches: input, instance id, replay-safe clock, activities, custom status."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.instance_id = "retention-20261124"
        self.current_utc_datetime = CLOCK
        self.statuses: list[dict[str, Any]] = []

    def get_input(self) -> dict[str, Any]:
        return self.request

    def call_activity(self, activity: Any, payload: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
        return (_name(activity), None, payload)

    def call_activity_with_retry(self, activity: Any, retry: Any, payload: dict[str, Any]) \
            -> tuple[str, Any, dict[str, Any]]:
        return (_name(activity), retry, payload)

    def set_custom_status(self, status: dict[str, Any]) -> None:
        self.statuses.append(status)


def _name(activity: Any) -> str:
    return str(activity.build().get_user_function().__name__)


Call = tuple[str, Any, dict[str, Any]]


def drive(ctx: Context, answer: Callable[[str, dict[str, Any]], Any]) -> tuple[list[Call], Any]:
    """Run to the end; ``answer(activity, payload)`` returns a result or an Exception to throw in."""
    gen = orchestrator(ctx)
    calls: list[Call] = []
    sent: Any = None
    throw: Exception | None = None
    while True:
        try:
            call = gen.throw(throw) if throw else gen.send(sent)
        except StopIteration as stop:
            return calls, stop.value
        calls.append(call)
        result = answer(call[0], call[2])
        throw, sent = (result, None) if isinstance(result, Exception) else (None, result)


def happy(name: str, payload: dict[str, Any]) -> Any:
    return {"begin_retention_run": {"state": "started"},
            "plan_retention_run": {"batches": 3, "summary": {"DELETE": 4}},
            "apply_retention_batch": {"batch": payload.get("batch")},
            "apply_archive_retention": [{"server": "weu-primary", "deleted": ["20261101T020000"], "kept": 2,
                                         "wal_kept_from": "000000010000000000000042"}],
            "finish_retention_run": {"state": "completed", "outcomes": {}, "not_done_count": 0}}[name]


def test_run_plans_then_applies_each_batch_with_retries_then_records_the_end() -> None:
    calls, result = drive(Context({"requested_by": "olivia"}), happy)
    assert [(c[0], c[2].get("batch")) for c in calls] == [
        ("begin_retention_run", None), ("plan_retention_run", None), ("apply_retention_batch", 0),
        ("apply_retention_batch", 1), ("apply_retention_batch", 2), ("apply_archive_retention", None),
        ("finish_retention_run", None)]
    assert calls[0][1] is None  # a refusal is an answer: begin is not retried
    assert all(c[1] is workflow.RETRY for c in calls[1:])
    assert calls[0][2] == {"run_id": "retention-20261124", "as_of": CLOCK.isoformat(), "requested_by": "olivia"}
    assert calls[-1][2]["error"] is None and result["state"] == "completed"
    assert result["archive"][0]["deleted"] == ["20261101T020000"]


def test_as_of_from_the_input_wins_over_the_context_clock() -> None:
    calls, _ = drive(Context({"requested_by": "admin-key", "as_of": "2026-03-31T03:30:00+00:00"}), happy)
    assert {c[2]["as_of"] for c in calls} == {"2026-03-31T03:30:00+00:00"}


@pytest.mark.parametrize("state", ["refused", "completed"])
def test_a_refused_or_already_completed_run_plans_and_applies_nothing(state: str) -> None:
    ctx = Context({})
    calls, result = drive(ctx, lambda name, _: {"state": state, "reason": "retention run x is applying"})
    assert [c[0] for c in calls] == ["begin_retention_run"]
    assert result["state"] == state and ctx.statuses[-1]["stage"] == state


def test_a_batch_failing_after_its_retries_is_recorded_then_fails_the_run_for_a_restart() -> None:
    def answer(name: str, payload: dict[str, Any]) -> Any:
        if name == "apply_retention_batch" and payload["batch"] == 1:
            return RuntimeError("Activity function 'apply_retention_batch' failed: 2 of 5 action(s) did not complete")
        return happy(name, payload)

    with pytest.raises(workflow.RetentionRunFailed, match="failed: Activity function 'apply_retention_batch' failed: "
                                                          "2 of 5 .*; restart it to resume"):
        drive(Context({}), answer)


def test_the_failure_is_recorded_before_the_run_fails() -> None:
    seen: list[tuple[str, Any]] = []

    def answer(name: str, payload: dict[str, Any]) -> Any:
        seen.append((name, payload.get("error")))
        if name == "plan_retention_run":
            return RuntimeError("control database unreachable")
        return happy(name, payload)

    with pytest.raises(workflow.RetentionRunFailed):
        drive(Context({}), answer)
    assert seen == [("begin_retention_run", None), ("plan_retention_run", None),
                    ("finish_retention_run", "control database unreachable")]
