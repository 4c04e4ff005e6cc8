"""Four-eyes approval rules shared by failover and tenant recovery."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from continuity.approvals.rules import (
    Acknowledgement,
    ApprovalRequest,
    ApprovalState,
    Decision,
    Verdict,
    approval_refusal,
    binding_refusal,
    decide,
    expire,
    mac_refusal,
    open_request,
    refusal_error,
    sign_decision,
    state_at,
)
from continuity.kernel.errors import ApprovalRefused, Conflict, ContinuityError
from continuity.kernel.identity import Principal, Role

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def person(name: str, *roles: Role) -> Principal:
    return Principal(name=name, roles=frozenset(roles), source="key")


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


# ---- decisions bound to one run by the approve trigger's MAC ----------------------------------------

KEY = b"0123456789abcdef" * 4


def bound_request(run_id: str = "run-b", requested_at: datetime = T0) -> ApprovalRequest:
    return open_request(request_id="failover-platform", kind="failover", subject="platform", requested_by="olivia",
                        requested_at=requested_at, window_minutes=30, run_id=run_id, requester_ids=["key:olivia"],
                        shown={"preflight": [{"check": "replication_lag", "ok": True, "bytes": 0}]})


def bound_approval(request: ApprovalRequest, by: Principal | None = None) -> Decision:
    made = approve(by or person("amir", Role.APPROVER))
    return sign_decision(KEY, replace(made, instance_id=request.id, run_id=request.run_id, digest=request.digest))


def test_the_mac_covers_instance_run_digest_verdict_principal_id_time_and_acknowledgements() -> None:
    signed = bound_approval(bound_request())
    assert mac_refusal(KEY, signed) is None
    for altered in (replace(signed, instance_id="failover-globex"), replace(signed, run_id="run-a"),
                    replace(signed, digest="0" * 64), replace(signed, verdict=Verdict.REJECT),
                    replace(signed, by=Principal("amir", frozenset({Role.APPROVER}), "key", id="key:ada")),
                    replace(signed, at=T0 - timedelta(days=1)), replace(signed, acknowledgements=frozenset({"x"}))):
        assert (mac_refusal(KEY, altered) or "").startswith("attempted bypass: the decision's MAC does not verify")
    assert (mac_refusal(b"another key, just as long as the real one..", signed) or "").startswith(
        "attempted bypass: the decision's MAC does not verify")
    assert (mac_refusal(KEY, replace(signed, mac="")) or "").startswith("attempted bypass: a decision without a MAC")


def test_two_runs_of_one_instance_show_different_digests_and_refuse_each_others_decisions() -> None:
    run_a, run_b = bound_request("run-a"), bound_request("run-b", T0 + timedelta(minutes=5))
    assert run_a.digest != run_b.digest and run_a.id == run_b.id
    from_a = bound_approval(run_a)
    assert binding_refusal(run_a, from_a) is None
    assert "replayed from an earlier run" in (binding_refusal(run_b, from_a) or "")
    # Even a re-started instance given run A's run id is a new request: its time (and so its digest) differs.
    same_id = bound_request("run-a", T0 + timedelta(minutes=5))
    assert "preflight digest" in (binding_refusal(same_id, from_a) or "")


def test_self_approval_is_judged_by_principal_id_not_by_name() -> None:
    request = bound_request()
    namesake = Principal("olivia", frozenset({Role.APPROVER}), "aad", id="aad:t/another-olivia")
    assert approval_refusal(request, approve(namesake), T0 + timedelta(minutes=1)) is None
    twin = Principal("liv@example.com", frozenset({Role.APPROVER}), "aad", id="aad:t/o",
                     linked=frozenset({"key:olivia"}))
    assert "four-eyes" in (approval_refusal(request, approve(twin), T0 + timedelta(minutes=1)) or "")
    withdrawal = Decision(id="w", verdict=Verdict.REJECT, by=twin, at=T0 + timedelta(minutes=1))
    assert approval_refusal(request, withdrawal, T0 + timedelta(minutes=1)) is None


def test_local_decision_key_is_created_once_owner_only_and_read_back_the_same(tmp_path) -> None:
    import stat

    from continuity.adapters.azure.secret_store import DECISION_KEY_SECRET_NAME, LocalSecrets, decision_key

    vault = LocalSecrets(tmp_path / "vault")
    first = decision_key(vault)
    assert len(first) >= 64 and decision_key(LocalSecrets(tmp_path / "vault")) == first
    path = tmp_path / "vault" / DECISION_KEY_SECRET_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [DECISION_KEY_SECRET_NAME], "a temporary file was left"
