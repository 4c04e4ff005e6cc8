"""Point-in-time restore plan and poll decisions (continuity/validation/pitr.py): pure, no Azure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from continuity.kernel.errors import InvalidRequest, SandboxNotIsolated
from continuity.kernel.tenants import TENANT_ID_PATTERN
from continuity.validation import pitr
from continuity.validation.checks import CheckId, CheckResult, CheckStatus, VerdictStatus

NOW = datetime(2026, 3, 1, 3, 0, 30, tzinfo=UTC)
EARLIEST = datetime(2026, 2, 22, 3, 0, tzinfo=UTC)
SUB = "00000000-1111-2222-3333-444444444444"
SUBNET = (f"/subscriptions/{SUB}/resourceGroups/rg-isolated/providers/Microsoft.Network/virtualNetworks/"
          "vnet-restore/subnets/pitr")
DNS_ZONE = (f"/subscriptions/{SUB}/resourceGroups/rg-isolated/providers/Microsoft.Network/privateDnsZones/"
            "restore.postgres.database.azure.com")


def test_newest_restore_point_is_now_minus_the_lag_when_none_is_requested() -> None:
    assert pitr.choose_restore_point(NOW, None, EARLIEST) == datetime(2026, 3, 1, 2, 55, 30, tzinfo=UTC)


def test_explicit_restore_point_inside_the_window_is_kept_in_utc() -> None:
    requested = datetime(2026, 2, 28, 23, 0, tzinfo=UTC).astimezone(tz=None)
    assert pitr.choose_restore_point(NOW, requested, EARLIEST) == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)


def test_restore_point_before_the_earliest_restore_date_is_refused_naming_the_window() -> None:
    with pytest.raises(InvalidRequest, match=r"before the earliest restore point 2026-02-22T03:00:00\+00:00; "
                                             r"choose a time in \[2026-02-22T03:00:00\+00:00, 2026-03-01T02:55:30"):
        pitr.choose_restore_point(NOW, EARLIEST - timedelta(seconds=1), EARLIEST)


def test_restore_point_later_than_azure_can_restore_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="later than Azure can restore .*now - 5 min"):
        pitr.choose_restore_point(NOW, NOW - timedelta(minutes=1), EARLIEST)


def test_naive_restore_point_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="point_in_time must carry a timezone"):
        pitr.choose_restore_point(NOW, datetime(2026, 2, 28, 23, 0), EARLIEST)


def test_window_falls_back_to_the_retention_days_when_azure_gives_no_earliest_date() -> None:
    assert pitr.restore_window(NOW, None, 7)[0] == NOW - timedelta(days=7)
    with pytest.raises(InvalidRequest, match="before the earliest restore point"):
        pitr.choose_restore_point(NOW, NOW - timedelta(days=8), None)


def test_a_server_with_nothing_restorable_yet_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="has nothing restorable yet"):
        pitr.choose_restore_point(NOW, None, NOW - timedelta(minutes=2))


def test_target_server_name_is_pitr_tenant_and_utc_minute() -> None:
    at = datetime(2026, 3, 1, 4, 7, 59, tzinfo=UTC).astimezone(tz=None)
    assert pitr.target_server_name("acme-finance", at) == "pitr-acme-finance-202603010407"


@given(st.from_regex(TENANT_ID_PATTERN, fullmatch=True))
def test_every_valid_tenant_id_makes_a_valid_azure_server_name(tenant: str) -> None:
    name = pitr.target_server_name(tenant, NOW)
    assert 3 <= len(name) <= 63 and pitr.SERVER_NAME_RE.match(name)


def test_isolation_refused_without_a_delegated_subnet() -> None:
    with pytest.raises(SandboxNotIsolated, match="no isolated subnet .*set CONTINUITY_PITR_SUBNET_ID"):
        pitr.isolation_from("", DNS_ZONE)


def test_isolation_refused_without_a_private_dns_zone() -> None:
    with pytest.raises(SandboxNotIsolated, match="no private DNS zone .*set CONTINUITY_PITR_DNS_ZONE_ID"):
        pitr.isolation_from(SUBNET, "")


def test_isolation_refuses_a_subnet_setting_that_is_not_a_subnet_id() -> None:
    with pytest.raises(SandboxNotIsolated, match="CONTINUITY_PITR_SUBNET_ID .* is not a subnet resource id"):
        pitr.isolation_from(SUBNET.rsplit("/subnets/", 1)[0], DNS_ZONE)


def test_isolation_refuses_a_dns_zone_that_is_not_a_postgres_private_zone() -> None:
    with pytest.raises(SandboxNotIsolated, match="is not a private DNS zone resource id ending in "
                                                 ".postgres.database.azure.com"):
        pitr.isolation_from(SUBNET, DNS_ZONE.replace(".postgres.database.azure.com", ".example.com"))


def test_plan_carries_point_name_location_and_network() -> None:
    plan = pitr.plan_restore(tenant_id="acme", source_resource_id="/subscriptions/x", location="westeurope",
                             started_at=NOW, now=NOW, requested=None, earliest_restore=EARLIEST,
                             isolation=pitr.isolation_from(SUBNET, DNS_ZONE))
    assert plan.to_json() == {"tenant": "acme", "source_resource_id": "/subscriptions/x",
                              "target_name": "pitr-acme-202603010300", "location": "westeurope",
                              "point_in_time": "2026-03-01T02:55:30+00:00",
                              "isolation": {"subnet_id": SUBNET, "dns_zone_id": DNS_ZONE,
                                            "mode": "delegated-subnet"}}


# ---- polling ----------------------------------------------------------------------------------------


def test_succeeded_operation_is_done() -> None:
    assert pitr.next_poll("Succeeded", 600, 3600) == ("done",)


@pytest.mark.parametrize("state", ["Failed", "Canceled"])
def test_failed_or_canceled_operation_fails_with_arms_error(state: str) -> None:
    assert pitr.next_poll(state, 60, 3600, error="ServerRestoreFailed: restore failed") == (
        "failed", f"Azure reported the operation {state}: ServerRestoreFailed: restore failed")


def test_in_progress_waits_the_poll_interval() -> None:
    assert pitr.next_poll("InProgress", 60, 3600, 30) == ("wait", 30.0)


def test_in_progress_waits_longer_when_arm_asks_with_retry_after() -> None:
    assert pitr.next_poll("InProgress", 60, 3600, 30, retry_after_s=120) == ("wait", 120.0)


def test_wait_never_runs_past_the_deadline_nor_below_the_minimum() -> None:
    assert pitr.next_poll("InProgress", 3590, 3600, 30) == ("wait", 10.0)
    assert pitr.next_poll("InProgress", 3599, 3600, 30) == ("wait", float(pitr.MIN_POLL_SECONDS))
    assert pitr.next_poll("InProgress", 0, 3600, 0) == ("wait", float(pitr.MIN_POLL_SECONDS))


def test_still_in_progress_at_the_deadline_times_out_with_the_reason() -> None:
    assert pitr.next_poll("InProgress", 3600, 3600) == (
        "timeout", "still InProgress after 60 min (limit 60 min, CONTINUITY_PITR_TIMEOUT_MINUTES)")


def test_an_unknown_status_is_treated_as_still_running_until_the_deadline() -> None:
    assert pitr.next_poll("Provisioning", 10, 3600, 30) == ("wait", 30.0)
    assert pitr.next_poll("Provisioning", 3600, 3600)[0] == "timeout"


@given(st.sampled_from(["InProgress", "Accepted", ""]), st.floats(0, 10_000), st.floats(60, 10_000),
       st.floats(0, 600), st.one_of(st.none(), st.floats(0, 600)))
def test_polling_always_ends_by_the_deadline(state: str, elapsed: float, timeout: float, poll: float,
                                            retry_after: float | None) -> None:
    decision = pitr.next_poll(state, elapsed, timeout, poll, retry_after)
    if elapsed >= timeout:
        assert decision[0] == "timeout"
    else:
        assert decision[0] == "wait"
        assert pitr.MIN_POLL_SECONDS <= decision[1] <= max(pitr.MIN_POLL_SECONDS, timeout - elapsed)


# ---- verdict ----------------------------------------------------------------------------------------


def passed(check_id: str, seconds: float = 1.0) -> CheckResult:
    return CheckResult(check_id, CheckStatus.PASS, "ok", seconds)


def test_row_counts_are_unavailable_for_a_pitr_never_passed() -> None:
    [rows] = pitr.manifest_bound_unavailable()
    assert rows.id == CheckId.ROW_COUNTS and rows.status is CheckStatus.UNAVAILABLE
    assert "no manifest" in rows.detail


def test_restored_server_not_ready_fails_the_restore_check() -> None:
    assert pitr.restore_completed("pitr-acme-1", "Ready", 900).status is CheckStatus.PASS
    failed = pitr.restore_completed("pitr-acme-1", "Provisioning", 900)
    assert failed.status is CheckStatus.FAIL
    assert failed.detail == "restored server pitr-acme-1 is Provisioning, not Ready"


def conclude(checks: list[CheckResult], measured_s: float = 1200, error: str = "") -> pitr.PitrReport:
    return pitr.conclude_pitr(tenant="acme", run_id="pitr-acme-202603010300", server_name="pitr-acme-202603010300",
                              point_in_time=NOW - timedelta(minutes=5), started_at=NOW,
                              finished_at=NOW + timedelta(minutes=25), checks=checks, rto_minutes=60,
                              rpo_minutes=15, measured_s=measured_s, restored_bytes=10**9, error=error)


def test_all_checks_passing_but_row_counts_unavailable_is_recoverable_outside_objectives() -> None:
    report = conclude([passed(CheckId.RESTORE_COMPLETED), passed(CheckId.SCHEMA_PRESENT),
                       *pitr.manifest_bound_unavailable(), passed(CheckId.LEDGER)])
    assert report.outcome == "passed"
    assert report.verdict.status is VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES
    assert "row_counts" in report.verdict.reason
    assert report.objectives is not None and report.objectives.backup_age_s == 300
    assert report.objectives.projected_s == 1200  # a PITR restores the whole server: nothing scaled


def test_a_failed_check_makes_the_restore_not_recoverable() -> None:
    report = conclude([passed(CheckId.RESTORE_COMPLETED), CheckResult(CheckId.LEDGER, CheckStatus.FAIL, "unbalanced")])
    assert (report.outcome, report.verdict.status) == ("failed", VerdictStatus.NOT_RECOVERABLE)
    assert report.to_json()["failed_checks"] == ["ledger"]


def test_a_run_that_could_not_complete_is_an_error_with_its_reason_and_no_objectives() -> None:
    report = conclude([], error="point-in-time restore of pitr-acme-202603010300 timed out: still InProgress")
    assert report.outcome == "error" and report.objectives is None
    assert report.verdict.reason == "not validated: point-in-time restore of pitr-acme-202603010300 timed out: " \
                                    "still InProgress"


PRIVATELINK = DNS_ZONE.replace("restore.postgres.database.azure.com", "privatelink.postgres.database.azure.com")
SOURCE_SUBNET = SUBNET.replace("vnet-restore", "vnet-prod")


def test_public_access_source_is_reached_through_a_private_endpoint_in_the_privatelink_zone() -> None:
    decided = pitr.restore_network(pitr.isolation_from(SUBNET, PRIVATELINK), None)
    assert decided.mode is pitr.NetworkMode.PRIVATE_ENDPOINT
    assert pitr.endpoint_name("pitr-acme-202603010300") == "pitr-acme-202603010300-pe"


def test_public_access_source_refuses_a_zone_other_than_privatelink() -> None:
    with pytest.raises(SandboxNotIsolated, match="public-access server: Azure restores it only to public access"):
        pitr.restore_network(pitr.isolation_from(SUBNET, DNS_ZONE), None)


def test_vnet_integrated_source_restores_into_the_delegated_subnet() -> None:
    decided = pitr.restore_network(pitr.isolation_from(SUBNET, DNS_ZONE), SOURCE_SUBNET)
    assert decided.mode is pitr.NetworkMode.DELEGATED_SUBNET


def test_vnet_integrated_source_refuses_the_privatelink_zone_and_its_own_subnet() -> None:
    with pytest.raises(SandboxNotIsolated, match="integrated into a virtual network"):
        pitr.restore_network(pitr.isolation_from(SUBNET, PRIVATELINK), SOURCE_SUBNET)
    with pytest.raises(SandboxNotIsolated, match="the source server's own subnet"):
        pitr.restore_network(pitr.isolation_from(SUBNET, DNS_ZONE), SUBNET.lower())
