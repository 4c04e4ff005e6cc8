"""The pages' pure parts: estate states, who sees which pending approval, and HTML that escapes every value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from continuity.approvals.pending import pending_approvals
from continuity.approvals.rules import ApprovalState, open_request
from continuity.kernel.identity import Principal, Role
from continuity.pages.html import approvals_page, dashboard_page, error_page
from continuity.validation.estate import EstateState, SortKey, count_by_state, estate_row, sort_rows, state_of
from continuity.validation.service import recoverability

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'


def principal(name: str = "amir", roles: tuple[Role, ...] = (Role.APPROVER,),
              tenants: frozenset[str] | None = None) -> Principal:
    return Principal(name=name, roles=frozenset(roles), source="key", tenants=tenants)


def standing(tenant: str, age_min: float | None, verdict: str | None, within: bool = True,
             reason: str = "ok") -> dict[str, Any]:
    newest = None if age_min is None else ("20261124T020000Z-a1b2c3", NOW - timedelta(minutes=age_min))
    last = None if verdict is None else {"backup_id": "20261124T020000Z-a1b2c3", "verdict": verdict,
                                        "within_objectives": within, "reason": reason,
                                        "failed_checks": ["ledger"] if verdict == "not_recoverable" else [],
                                        "finished_at": NOW.isoformat()}
    return recoverability(tenant, 60, 15, newest, last, NOW)


def test_each_standing_is_named_by_the_worst_it_proves() -> None:
    assert state_of(standing("a", 5, "recoverable")) is EstateState.WITHIN_OBJECTIVES
    assert state_of(standing("b", 50, "recoverable")) is EstateState.OUTSIDE_OBJECTIVES  # RPO 15 min missed
    assert state_of(standing("c", 5, "recoverable_outside_objectives", within=False)) is \
        EstateState.OUTSIDE_OBJECTIVES
    assert state_of(standing("d", 5, "not_recoverable", within=False)) is EstateState.NOT_RECOVERABLE
    assert state_of(standing("e", 5, None)) is EstateState.NEVER_VALIDATED
    assert state_of(standing("f", None, None)) is EstateState.NEVER_VALIDATED


def test_rows_sort_worst_first_and_by_least_rpo_margin() -> None:
    rows = [estate_row(standing(t, age, v, within=v == "recoverable"), name=t, tier="gold") for t, age, v in (
        ("ok", 5, "recoverable"), ("old", 50, "recoverable"), ("bad", 1, "not_recoverable"), ("new", None, None))]
    assert [r.tenant for r in sort_rows(rows)] == ["bad", "new", "old", "ok"]
    assert [r.tenant for r in sort_rows(rows, SortKey.RPO_MARGIN)] == ["new", "old", "ok", "bad"]
    assert count_by_state(rows)[EstateState.NEVER_VALIDATED] == 1


def test_dashboard_escapes_a_hostile_tenant_name_and_reason() -> None:
    row = estate_row(standing("evil", 5, "not_recoverable", within=False, reason=HOSTILE), name=HOSTILE, tier="gold")
    page = dashboard_page([row], counts=count_by_state([row]), state=None, sort=SortKey.STATE,
                          principal=principal(name=HOSTILE), at=NOW)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "not recoverable" in page  # the state in words, not only a colour


def test_error_page_escapes_its_message() -> None:
    page = error_page(403, "Not allowed", HOSTILE)
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def _instance(scope: str, requested_by: str = "olivia", minutes: float = 5, reason: str = "outage",
              ) -> tuple[str, str, dict[str, Any]]:
    iid = f"failover-{scope}"
    request = open_request(request_id=iid, kind="failover", subject=scope, requested_by=requested_by,
                           requested_at=NOW - timedelta(minutes=1), window_minutes=minutes,
                           acknowledgements=["no_validated_backup"], run_id="run-1",
                           requester_ids=[f"key:{requested_by}"])
    custom = {"state": "AWAITING_APPROVAL", "request": {"reason": reason, "drill": True},
              "preflight": [{"check": "validated_backup", "status": "WARN", "detail": reason}],
              "approval": request.to_json()}
    return iid, "failover", custom


def test_pending_approvals_follow_the_decision_routes_scope_rule() -> None:
    instances = [_instance("platform"), _instance("acme"), _instance("globex"), _instance("gone", minutes=0.5)]
    everyone = pending_approvals(instances, principal(), NOW)
    assert [p.subject for p in everyone] == ["acme", "globex", "platform"]  # the expired one is not pending
    scoped = pending_approvals(instances, principal(tenants=frozenset({"acme"})), NOW)
    assert [p.subject for p in scoped] == ["acme"]  # platform needs an unscoped caller
    own = pending_approvals(instances, principal("olivia", (Role.OPERATOR, Role.APPROVER)), NOW)[0]
    assert (own.can_approve, own.can_reject) == (False, True)  # four eyes: the requester may only withdraw
    reader = pending_approvals(instances, principal("rita", (Role.READER,)), NOW)[0]
    assert (reader.can_approve, reader.can_reject) == (False, False)
    decided = _instance("acme")
    decided[2]["approval"]["state"] = str(ApprovalState.APPROVED)
    assert pending_approvals([decided], principal(), NOW) == []
    assert pending_approvals([("failover-acme", "tenant_recovery", _instance("acme")[2])], principal(), NOW) == []


def test_approvals_page_escapes_requester_reason_and_findings() -> None:
    items = pending_approvals([_instance("acme", requested_by=HOSTILE, reason=HOSTILE)], principal(), NOW)
    page = approvals_page(items, principal=principal(), now=NOW, nonce="n0nce")
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script") == 1 and '<script nonce="n0nce">' in page  # only the page's own script
    assert items[0].request.digest in page and 'value="no_validated_backup"' in page
    assert 'data-approve="/api/failovers/failover-acme/approve"' in page
    reader_page = approvals_page(pending_approvals([_instance("acme")], principal("rita", (Role.READER,)), NOW),
                                 principal=principal("rita", (Role.READER,)), now=NOW, nonce="n")
    assert "<form" not in reader_page and "<script" not in reader_page
