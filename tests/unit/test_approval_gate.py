"""The shared approval gate, driven as the Durable SDK drives it: yielded tasks in, winners sent back.

The ``verify_decision`` activity is answered with the same pure checks the activity runs (MAC, then binding),
keyed with a test key; decisions are signed with it as the approve trigger signs them.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from continuity.approvals.rules import (
    ApprovalRequest,
    ApprovalState,
    Decision,
    Verdict,
    binding_refusal,
    mac_refusal,
    open_request,
    sign_decision,
)
from continuity.kernel.identity import Principal, Role
from orchestrations.approval_gate import await_decision, verify_decision

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
KEY = b"k" * 64


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

    def call_activity_with_retry(self, activity: Any, retry: Any, payload: dict[str, Any]) -> Task:
        assert activity is verify_decision
        return Task("verify", payload)


def request(run_id: str = "run-b") -> ApprovalRequest:
    return open_request(request_id="failover-platform", kind="failover", subject="platform", requested_by="olivia",
                        requested_at=T0, window_minutes=30, run_id=run_id, requester_ids=["key:olivia"],
                        shown={"preflight": [{"check": "replica_in_recovery", "ok": True}]})


def decision(name: str, *roles: Role, decision_id: str = "d", signed: bool = True, run_id: str = "run-b",
             at: datetime = T0 + timedelta(minutes=1)) -> dict[str, Any]:
    bound = request(run_id)
    made = Decision(decision_id, Verdict.APPROVE, Principal(name, frozenset(roles), "key"), at,
                    instance_id=bound.id, run_id=bound.run_id, digest=bound.digest)
    return (sign_decision(KEY, made) if signed else made).to_event()


def verified(payload: dict[str, Any]) -> dict[str, Any]:
    """What the verify_decision activity answers (approvals.service.verify_decision, with the test key)."""
    made = Decision.from_json(payload["decision"])
    return {"refusal": mac_refusal(KEY, made) or binding_refusal(ApprovalRequest.from_json(payload["request"]),
                                                                 made)}


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
            if isinstance(yielded, Task) and yielded.name == "verify":
                yielded = gen.send(verified(yielded.result))
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
    assert refused[0].startswith("attempted bypass: malformed decision event (KeyError")
    assert closed.state is ApprovalState.EXPIRED


def test_gate_refuses_a_raw_event_without_mac_as_an_attempted_bypass_and_keeps_waiting() -> None:
    ctx = Context()
    closed, refused, _ = drive(ctx, [decision("mallory", Role.ADMIN, decision_id="raw", signed=False),
                                     decision("amir", Role.APPROVER, decision_id="ok")])
    assert refused == ["attempted bypass: a decision without a MAC (a raw event, not the approve/reject route); "
                       "nothing was decided"]
    assert closed.state is ApprovalState.APPROVED and closed.decision is not None and closed.decision.id == "ok"
    assert closed.refusals[0]["decision_id"] == "raw"


def test_gate_refuses_an_altered_decision_whose_mac_no_longer_verifies() -> None:
    ctx = Context()
    altered = {**decision("amir", Role.APPROVER, decision_id="x"), "at": (T0 - timedelta(hours=1)).isoformat()}
    closed, refused, _ = drive(ctx, [altered, "timeout"])
    assert refused[0].startswith("attempted bypass: the decision's MAC does not verify")
    assert closed.state is ApprovalState.EXPIRED


def test_gate_refuses_a_signed_decision_replayed_from_another_run() -> None:
    ctx = Context()
    closed, refused, _ = drive(ctx, [decision("amir", Role.APPROVER, decision_id="a", run_id="run-a"), "timeout"])
    assert refused[0].startswith("attempted bypass: the decision was made for run 'run-a' of failover-platform, "
                                 "not this run 'run-b'")
    assert closed.state is ApprovalState.EXPIRED


def test_gate_refuses_signed_decisions_dated_before_the_request_or_after_its_expiry() -> None:
    ctx = Context()
    early = decision("amir", Role.APPROVER, decision_id="early", at=T0 - timedelta(seconds=1))
    late = decision("amir", Role.APPROVER, decision_id="late", at=T0 + timedelta(minutes=30))
    closed, refused, _ = drive(ctx, [early, late, "timeout"])
    assert "before failover-platform was requested" in refused[0] and refused[0].startswith("attempted bypass")
    assert "after failover-platform expired" in refused[1] and refused[1].startswith("attempted bypass")
    assert closed.state is ApprovalState.EXPIRED


def test_gate_refuses_a_signed_decision_on_another_preflight_digest() -> None:
    ctx = Context()
    other = Decision("d", Verdict.APPROVE, Principal("amir", frozenset({Role.APPROVER}), "key"),
                     T0 + timedelta(minutes=1), instance_id="failover-platform", run_id="run-b", digest="0" * 64)
    closed, refused, _ = drive(ctx, [sign_decision(KEY, other).to_event(), "timeout"])
    assert refused[0].startswith("attempted bypass: the decision is on preflight digest '0000000000000000'")
    assert closed.state is ApprovalState.EXPIRED


def test_gate_refuses_approval_by_a_linked_identity_of_the_requester() -> None:
    ctx = Context()
    bound = request()
    twin = Principal("olivia@example.com", frozenset({Role.APPROVER}), "aad",
                     id="aad:72f988bf-86f1-41af-91ab-2d7cd011db47/0b6e6c1e-2a77-4d2c-9a57-3f4c1b2a9d01",
                     linked=frozenset({"key:olivia"}))
    made = replace(Decision("twin", Verdict.APPROVE, twin, T0 + timedelta(minutes=1)), instance_id=bound.id,
                   run_id=bound.run_id, digest=bound.digest)
    closed, refused, _ = drive(ctx, [sign_decision(KEY, made).to_event(), "timeout"])
    assert "an identity linked to the requester olivia" in refused[0] and "four-eyes" in refused[0]
    assert closed.state is ApprovalState.EXPIRED
