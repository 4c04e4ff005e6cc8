"""The shared approval gate, driven as the Durable SDK drives it: yielded tasks in, winners sent back."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import Any

from continuity.approvals.rules import ApprovalRequest, ApprovalState, Decision, Verdict, open_request
from continuity.kernel.identity import Principal, Role
from orchestrations.approval_gate import await_decision

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


class Task:
    def __init__(self, name: str, result: Any = None) -> None:
        self.name = name
        self.result = result
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Context:
    """Just what the gate touches: a timer, external events, task_any, the replay-safe clock."""

    def __init__(self) -> None:
        self.current_utc_datetime = T0
        self.timer: Task | None = None
        self.events: list[Task] = []

    def create_timer(self, at: datetime) -> Task:
        self.timer = Task(f"timer@{at.isoformat()}")
        return self.timer

    def wait_for_external_event(self, name: str) -> Task:
        self.events.append(Task(name))
        return self.events[-1]

    def task_any(self, tasks: list[Task]) -> tuple[str, list[Task]]:
        return ("any", tasks)


def request() -> ApprovalRequest:
    return open_request(request_id="failover-platform", kind="failover", subject="platform", requested_by="olivia",
                        requested_at=T0, window_minutes=30)


def decision(name: str, *roles: Role, decision_id: str = "d") -> dict[str, Any]:
    return Decision(decision_id, Verdict.APPROVE, Principal(name, frozenset(roles), "api-key"),
                    T0 + timedelta(minutes=1)).to_json()


def drive(ctx: Context, arrivals: list[Any]) -> tuple[ApprovalRequest, list[str], list[ApprovalState]]:
    """Run the gate; each arrival is a decision dict (event wins) or "timeout" (timer wins)."""
    refused: list[str] = []
    states: list[ApprovalState] = []

    def on_refused(req: ApprovalRequest, raw: dict[str, Any], reason: str) -> Generator[Any, Any, None]:
        refused.append(reason)
        yield "record-refusal"

    gen = await_decision(ctx, request(), on_refused=on_refused, on_status=lambda r: states.append(r.state))  # type: ignore[arg-type]
    yielded = next(gen)
    pending = list(arrivals)
    try:
        while True:
            if yielded == "record-refusal":
                yielded = gen.send(None)
                continue
            arrival = pending.pop(0)
            ctx.current_utc_datetime += timedelta(minutes=1)
            if arrival == "timeout":
                assert ctx.timer is not None
                yielded = gen.send(ctx.timer)
            else:
                ctx.events[-1].result = arrival
                yielded = gen.send(ctx.events[-1])
    except StopIteration as stop:
        return stop.value, refused, states


def test_gate_refuses_self_approval_keeps_waiting_then_takes_second_person_and_cancels_timer() -> None:
    ctx = Context()
    closed, refused, states = drive(ctx, [decision("olivia", Role.ADMIN, decision_id="self"),
                                          decision("amir", Role.APPROVER, decision_id="ok")])
    assert closed.state is ApprovalState.APPROVED and closed.decision is not None and closed.decision.id == "ok"
    assert len(refused) == 1 and "four-eyes" in refused[0]
    assert ctx.timer is not None and ctx.timer.cancelled
    assert states[-1] is ApprovalState.APPROVED


def test_gate_expires_when_the_timer_wins() -> None:
    ctx = Context()
    closed, refused, _ = drive(ctx, ["timeout"])
    assert closed.state is ApprovalState.EXPIRED and refused == []
    assert ctx.timer is not None and not ctx.timer.cancelled


def test_gate_refuses_a_malformed_decision_event_and_keeps_waiting() -> None:
    ctx = Context()
    closed, refused, _ = drive(ctx, [{"verdict": "approve"}, "timeout"])
    assert refused[0].startswith("malformed decision event (KeyError")
    assert closed.state is ApprovalState.EXPIRED
