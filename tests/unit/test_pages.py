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


# ---- the tenant page, the evidence page, open work on the estate ---------------------------------


def _run_row(run: int, backup_age_min: float, *, failed: bool = False, detail: str = "ok",
             summary: bool = True) -> dict[str, Any]:
    started = NOW - timedelta(days=3 - run)
    backup_id = f"{started - timedelta(minutes=backup_age_min):%Y%m%dT%H%M%SZ}-a1b2c{run}"
    run_id = f"validate-acme-{backup_id}-1"
    objectives = {"measured_s": 120.0 * run, "projected_s": 240.0 * run, "backup_age_s": backup_age_min * 60,
                  "restored_bytes": 5_000_000 * run}
    return {"run_id": run_id, "backup_id": backup_id, "started_at": started,
            "outcome": "failed" if failed else "passed",
            "checks": [{"id": "ledger", "status": "fail" if failed else "pass", "detail": detail},
                       {"id": "indexes", "status": "pass", "detail": "12 indexes checked"}],
            "backup_created_at": started - timedelta(minutes=backup_age_min),
            "summary": {"run_id": run_id if summary else "another-run", "verdict": "recoverable", "reason": "fine",
                        "objectives": objectives}}


def _view(runs: list[dict[str, Any]], **extra: Any) -> Any:
    from continuity.catalog.model import BackupStatus, CatalogEntry
    from continuity.pages.tenant import TenantView, run_line

    row = estate_row(standing("acme", 5, "recoverable"), name="ACME BV", tier="gold")
    backups = (CatalogEntry(tenant="acme", backup_id="20261124T020000Z-a1b2c3", status=BackupStatus.VALIDATED,
                            created_at=NOW - timedelta(hours=1), container="backups", prefix="acme/x/",
                            dump_size=4_200_000, storage_tier="cool", immutable_until=NOW + timedelta(days=30),
                            legal_hold=True),
               CatalogEntry(tenant="acme", backup_id="20261101T020000Z-d4e5f6", status=BackupStatus.AVAILABLE,
                            created_at=NOW - timedelta(days=23), container="backups", prefix="acme/y/",
                            immutable_until=NOW - timedelta(days=1)))
    return TenantView(row=row, runs=tuple(run_line(r) for r in runs), backups=backups, **extra)


def test_tenant_page_shows_every_check_with_its_reason_and_escapes_it() -> None:
    from continuity.pages.tenant import tenant_page

    page = tenant_page(_view([_run_row(2, 5, failed=True, detail=HOSTILE), _run_row(1, 4)]), principal=principal(),
                       now=NOW)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert 'data-check="ledger"' in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert page.count("<svg") == 3 and 'id="chart-rto"' in page and 'id="chart-size"' in page
    assert "immutable until 2026-12-24; legal hold" in page and "immutability ended 2026-11-23" in page
    assert "No open incident and no pending approval." in page


def test_a_run_over_its_rto_is_marked_over_in_words_not_only_red() -> None:
    from continuity.pages.tenant import tenant_page

    page = tenant_page(_view([_run_row(2, 5), _run_row(1, 5)]), principal=principal(), now=NOW)
    chart = page.split('id="chart-rto"', 1)[1].split("</svg>", 1)[0]
    assert "over RTO" not in chart  # 240 s and 120 s measured against 60 min
    slow = _run_row(2, 5)
    slow["summary"]["objectives"]["measured_s"] = 2 * 3600.0
    chart = tenant_page(_view([slow]), principal=principal(), now=NOW).split('id="chart-rto"', 1)[1]
    assert "2.0 h (over RTO 60 min)" in chart.split("</svg>", 1)[0]


def test_an_earlier_attempt_of_a_backup_keeps_its_checks_and_age_but_has_no_restore_time() -> None:
    from continuity.pages.tenant import run_line

    line = run_line(_run_row(1, 30, failed=True, detail="unbalanced", summary=False))
    assert (line.measured_s, line.restored_bytes, line.backup_age_s) == (None, None, 1800.0)
    assert line.reason == "ledger: unbalanced" and [c.id for c in line.checks] == ["ledger", "indexes"]


def test_open_incidents_are_grouped_by_tenant_and_finished_ones_dropped() -> None:
    from continuity.incidents.open import open_incidents

    found = open_incidents([
        ("incident-e1", "backup_incident", {"stage": "retrying", "exposure": {"tenant": "acme", "level": "AT_RISK"}},
         None),
        ("incident-e2", None, None, {"tenant": "globex"}),
        ("incident-e3", "backup_incident", {"stage": "done", "outcome": "resolved"}, {"tenant": "acme"}),
        ("failover-acme", "failover", {"stage": "retrying"}, None),
    ])
    assert {t: [(i.instance_id, i.stage, i.level) for i in v] for t, v in found.items()} == {
        "acme": [("incident-e1", "retrying", "AT_RISK")], "globex": [("incident-e2", "started", "")]}


def test_estate_rows_link_to_the_tenant_page_and_show_open_work() -> None:
    from continuity.pages.html import OpenWork

    rows = [estate_row(standing(t, 5, "recoverable"), name=t, tier="gold") for t in ("acme", "globex")]
    page = dashboard_page(rows, counts=count_by_state(rows), state=None, sort=SortKey.STATE, principal=principal(),
                          at=NOW, open_work={"acme": OpenWork(incidents=2, approvals=1)}, platform_approvals=1)
    acme = page.split('data-tenant="acme"', 1)[1].split("</tr>", 1)[0]
    assert 'href="/api/tenants/acme/page"' in acme and "2 incidents" in acme and "1 awaiting approval" in acme
    assert "none" in page.split('data-tenant="globex"', 1)[1].split("</tr>", 1)[0]
    assert "1 platform failover awaiting approval" in page


def test_evidence_page_lists_only_bundles_in_the_callers_scope_and_escapes() -> None:
    from continuity.pages.service import visible_bundles
    from continuity.pages.tenant import EvidenceView, evidence_page

    names = ["bundles/failover/failover-acme/run-1.json", "bundles/failover/failover-platform/run-2.json",
             "bundles/failover/failover-globex/run-3.json", "bundles/failover/failover-acme/../../x.json",
             'bundles/failover/failover-acme/"><script>.json']
    scoped = visible_bundles(names, principal(tenants=frozenset({"acme"})))
    assert [(b.instance_id, b.run_id) for b in scoped] == [("failover-acme", "run-1")]
    every = visible_bundles(names, principal())
    assert [b.instance_id for b in every] == ["failover-acme", "failover-globex", "failover-platform"]
    view = EvidenceView(head_seq=42, head_hash=HOSTILE, checkpoint_seq=None, checkpoint_hash=None,
                        checkpoint_at=None, immutability="not enforced", bundles=every)
    page = evidence_page(view, principal=principal())
    assert "<script>alert" not in page and 'href="/api/evidence/bundles/failover-acme/run-1"' in page
    assert "no checkpoint yet" in page


def test_the_synthetic_estate_has_tenants_in_every_state() -> None:
    from continuity.demo.estate import synthetic_estate

    estate = synthetic_estate(20, NOW)
    last: dict[str, dict[str, Any]] = {v["tenant"]: v["summary"] for v in estate.validations}
    newest: dict[str, Any] = {}
    for e in estate.entries:
        newest[e.tenant] = max(newest.get(e.tenant, e.created_at), e.created_at)
    states = set()
    for t in estate.tenants:
        tier = t["tier"]
        rto, rpo = {"gold": (60, 15), "silver": (240, 60), "bronze": (1440, 1440)}[tier]
        backup = (("b", newest[t["id"]]) if t["id"] in newest else None)
        states.add(state_of(recoverability(t["id"], rto, rpo, backup, last.get(t["id"]), NOW)))
    assert states == set(EstateState)


def test_the_html_report_starts_with_the_estate_overview_of_the_live_page() -> None:
    from continuity.pages.html import CSS, estate_overview
    from continuity.validation.report import TenantSection, render_html

    rows = [estate_row(standing(t, 5, v, within=v == "recoverable", reason=HOSTILE), name=t, tier="gold")
            for t, v in (("acme", "recoverable"), ("globex", "not_recoverable"))]
    overview = estate_overview(sort_rows(rows), counts=count_by_state(rows), state=None, sort=SortKey.STATE, at=NOW,
                               static=True)
    sections = [TenantSection(t, t, "gold", 60, 15) for t in ("acme", "globex")]
    report = render_html(sections, NOW, None, overview=overview, overview_css=CSS)
    assert report.index('<table id="estate">') < report.index('<section id="tenant-acme">')
    assert report.index('data-tenant="globex"') < report.index('data-tenant="acme"')  # worst first
    assert 'href="#tenant-globex"' in report and "/api/" not in report and "<form" not in report
    assert "<script" not in report and "&lt;script&gt;" in report


def test_tenant_page_shows_the_point_in_time_window_and_its_exposure() -> None:
    from datetime import UTC, datetime, timedelta

    from continuity.pages.tenant import _archive

    now = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
    none = _archive(None, 900, now)
    assert 'id="archive-none"' in none and "goes back to a backup" in none
    broken = _archive({"earliest": None, "latest": None, "gap": "00000001000000000000000C"}, 900, now)
    assert 'id="archive-broken"' in broken and "00000001000000000000000C is missing" in broken
    window = {"earliest": now - timedelta(days=2), "latest": now - timedelta(minutes=20),
              "newest_segment": "000000010000000000000042", "gap": None, "base_backups": [{}, {}],
              "refreshed_at": now - timedelta(minutes=1)}
    shown = _archive(window, 900, now)
    assert "2026-11-28T14:00:00+00:00" in shown and "000000010000000000000042" in shown
    assert "over the RPO" in shown and 'class="f-fail"' in shown  # 20 min of writes > a 15 min RPO
    assert "over the RPO" not in _archive(window, 3600, now)
    hostile = _archive({**window, "newest_segment": "<script>alert(1)</script>"}, 900, now)
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile
