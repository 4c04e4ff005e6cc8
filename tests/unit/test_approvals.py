"""Four-eyes approval rules shared by failover and tenant recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from continuity.approvals.rules import (
    Acknowledgement,
    ApprovalRequest,
    ApprovalState,
    Decision,
    Verdict,
    approval_refusal,
    decide,
    expire,
    open_request,
    refusal_error,
    state_at,
)
from continuity.kernel.errors import ApprovalRefused, Conflict, ContinuityError
from continuity.kernel.identity import Principal, Role

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def person(name: str, *roles: Role) -> Principal:
    return Principal(name=name, roles=frozenset(roles), source="api-key")


def make_request(requested_by: str = "olivia", window: int = 30, acks: tuple[str, ...] = ()) -> ApprovalRequest:
    return open_request(request_id="failover-platform", kind="failover", subject="platform", requested_by=requested_by,
                        requested_at=T0, window_minutes=window, acknowledgements=acks)


def approve(by: Principal, at: datetime = T0 + timedelta(minutes=1), acks: frozenset[str] = frozenset(),
            decision_id: str = "d1") -> Decision:
    return Decision(id=decision_id, verdict=Verdict.APPROVE, by=by, at=at, acknowledgements=acks)


def reject(by: Principal, at: datetime = T0 + timedelta(minutes=1)) -> Decision:
    return Decision(id="r1", verdict=Verdict.REJECT, by=by, at=at, comment="not now")


def test_approval_by_second_person_with_approver_role_stands() -> None:
    request = make_request()
    decision = approve(person("amir", Role.APPROVER))
    assert approval_refusal(request, decision, decision.at) is None
    closed = decide(request, decision, decision.at)
    assert closed.state is ApprovalState.APPROVED
    assert closed.decision == decision


def test_admin_may_approve_because_admin_implies_approver() -> None:
    assert approval_refusal(make_request(), approve(person("ada", Role.ADMIN)), T0) is None


def test_failover_refused_when_requester_approves_own_request() -> None:
    reason = approval_refusal(make_request("olivia"), approve(person("olivia", Role.ADMIN)), T0)
    assert reason == ("olivia requested failover-platform and cannot approve it: a second person with the approver "
                      "role must (four-eyes rule)")


def test_approval_refused_when_approver_holds_only_operator_role() -> None:
    reason = approval_refusal(make_request(), approve(person("oscar", Role.OPERATOR)), T0)
    assert reason == "oscar may not approve failover-platform: it needs the approver role (holds: operator)"
    assert isinstance(refusal_error(make_request(), approve(person("oscar", Role.OPERATOR)), T0), ApprovalRefused)


def test_approval_refused_after_the_window_closed() -> None:
    request = make_request(window=30)
    late = T0 + timedelta(minutes=30)
    reason = approval_refusal(request, approve(person("amir", Role.APPROVER), at=late), late)
    assert reason is not None
    assert reason.startswith("the approval window of failover-platform closed at 2026-03-01T03:30")
    assert isinstance(refusal_error(request, approve(person("amir", Role.APPROVER), at=late), late), Conflict)


def test_approval_one_second_before_expiry_stands() -> None:
    at = T0 + timedelta(minutes=30) - timedelta(seconds=1)
    assert approval_refusal(make_request(), approve(person("amir", Role.APPROVER), at=at), at) is None


def test_second_approval_refused_one_decision_only() -> None:
    first = approve(person("amir", Role.APPROVER))
    closed = decide(make_request(), first, first.at)
    second = approve(person("bea", Role.APPROVER), decision_id="d2")
    reason = approval_refusal(closed, second, second.at)
    assert reason == f"failover-platform was already approved by amir at {first.at.isoformat()}: one decision only"
    assert isinstance(refusal_error(closed, second, second.at), Conflict)


def test_approval_refused_after_request_expired() -> None:
    expired = expire(make_request())
    assert expired.state is ApprovalState.EXPIRED
    reason = approval_refusal(expired, approve(person("amir", Role.APPROVER)), T0)
    assert reason is not None and "expired at" in reason and "submit a new failover request" in reason


def test_rejection_after_approval_refused() -> None:
    closed = decide(make_request(), approve(person("amir", Role.APPROVER)), T0)
    assert "one decision only" in (approval_refusal(closed, reject(person("bea", Role.APPROVER)), T0) or "")


def test_requester_may_withdraw_own_request_by_rejecting() -> None:
    request = make_request("olivia")
    decision = reject(person("olivia", Role.OPERATOR))
    assert approval_refusal(request, decision, decision.at) is None
    assert decide(request, decision, decision.at).state is ApprovalState.REJECTED


def test_rejection_refused_for_operator_who_is_not_the_requester() -> None:
    reason = approval_refusal(make_request("olivia"), reject(person("oscar", Role.OPERATOR)), T0)
    assert reason == "oscar may not reject failover-platform: it needs the approver role or to be the requester"


def test_approval_refused_without_required_acknowledgement() -> None:
    request = make_request(acks=(str(Acknowledgement.PRIMARY_UNREACHABLE),))
    reason = approval_refusal(request, approve(person("amir", Role.APPROVER)), T0)
    assert reason is not None and "requires acknowledging primary_unreachable" in reason
    ok = approve(person("amir", Role.APPROVER), acks=frozenset({"primary_unreachable"}))
    assert approval_refusal(request, ok, T0) is None


def test_refused_decision_leaves_request_open_and_remembers_reason() -> None:
    request = make_request("olivia")
    after = decide(request, approve(person("olivia", Role.APPROVER), decision_id="self"), T0)
    assert after.state is ApprovalState.PENDING
    assert after.refusals[-1]["decision_id"] == "self"
    assert "four-eyes" in after.refusals[-1]["reason"]


def test_state_at_reports_pending_request_past_window_as_expired() -> None:
    request = make_request(window=5)
    assert state_at(request, T0 + timedelta(minutes=4)) is ApprovalState.PENDING
    assert state_at(request, T0 + timedelta(minutes=5)) is ApprovalState.EXPIRED


def test_non_positive_window_refused() -> None:
    with pytest.raises(ContinuityError, match="approval window must be positive"):
        make_request(window=0)


def test_request_round_trips_through_json() -> None:
    closed = decide(make_request(acks=("replication_lag",)),
                    approve(person("amir", Role.APPROVER), acks=frozenset({"replication_lag"})), T0)
    assert ApprovalRequest.from_json(closed.to_json()) == closed
