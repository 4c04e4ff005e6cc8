"""Failover rules: what moves, preflight findings, refusals, step order, never two writable primaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from continuity.failover.rules import (
    MILESTONES,
    BackupObservation,
    FailoverPlan,
    FenceResult,
    FenceState,
    FindingStatus,
    Preflight,
    PrimaryObservation,
    ReplicaObservation,
    StepName,
    assess_preflight,
    drill_refusal,
    failover_refusal,
    instance_id,
    plan_failover,
    plan_steps,
    promotion_refusal,
    validate_scope,
)
from continuity.kernel.errors import Conflict, InvalidRequest, UnknownTenant
from continuity.kernel.steps import StepTiming, timings
from continuity.kernel.tenants import Registry, load_registry

REGISTRY_FILE = Path(__file__).resolve().parents[2] / "config" / "tenants.yaml"
T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REGISTRY_FILE)


def healthy_preflight(plan: FailoverPlan, **overrides: object) -> Preflight:
    args: dict = {
        "replicas": [ReplicaObservation("neu-replica", True, True, 0, 0.2)],
        "primaries": [PrimaryObservation("weu-primary", True, False)],
        "backups": [BackupObservation(t, f"b-{t}", T0) for t in plan.tenants],
        "credentials": {"pg-recovery-northeurope": True},
        "max_lag_seconds": 900.0,
    }
    args.update(overrides)
    return assess_preflight(plan, **args)


def test_one_failover_per_scope_instance_id() -> None:
    assert instance_id("platform") == "failover-platform"
    assert instance_id("acme-finance") == "failover-acme-finance"


def test_malformed_scope_refused() -> None:
    with pytest.raises(InvalidRequest, match="must be 'platform' or a tenant id"):
        validate_scope("../etc")


def test_platform_failover_moves_every_tenant_to_the_replica(registry: Registry) -> None:
    plan = plan_failover(registry, "platform", "northeurope")
    assert [p.replica for p in plan.pairs] == ["neu-replica"]
    assert plan.tenants == ("acme-finance", "globex", "initech")


def test_tenant_failover_says_which_other_tenants_share_its_server(registry: Registry) -> None:
    plan = plan_failover(registry, "globex", "northeurope")
    assert plan.notes == ("globex shares server weu-primary with acme-finance, initech: they move too",)


def test_unknown_scope_refused(registry: Registry) -> None:
    with pytest.raises(UnknownTenant, match="unknown tenant nosuch"):
        plan_failover(registry, "nosuch", "northeurope")


def test_unknown_region_refused_naming_where_replicas_are(registry: Registry) -> None:
    with pytest.raises(InvalidRequest, match="unknown target region 'eastus' for server weu-primary: it has replicas "
                                             "in northeurope"):
        plan_failover(registry, "platform", "eastus")


def test_malformed_region_refused(registry: Registry) -> None:
    with pytest.raises(InvalidRequest, match="target_region"):
        plan_failover(registry, "platform", "North Europe!")


def test_failover_to_the_region_already_primary_refused(registry: Registry) -> None:
    with pytest.raises(Conflict, match="already is primary in westeurope"):
        plan_failover(registry, "platform", "westeurope")


def test_plan_round_trips_through_json(registry: Registry) -> None:
    plan = plan_failover(registry, "acme-finance", "northeurope", drill=True)
    assert FailoverPlan.from_json(plan.to_json()) == plan


def test_healthy_preflight_has_no_blocking_findings(registry: Registry) -> None:
    plan = plan_failover(registry, "platform", "northeurope")
    preflight = healthy_preflight(plan)
    assert failover_refusal(plan, preflight) is None
    assert preflight.required_acknowledgements == frozenset()
    assert Preflight.from_json(preflight.to_json()) == preflight


def test_failover_refused_when_replica_unreachable(registry: Registry) -> None:
    plan = plan_failover(registry, "platform", "northeurope")
    down = ReplicaObservation("neu-replica", False, detail="connection refused")
    preflight = healthy_preflight(plan, replicas=[down])
    assert failover_refusal(plan, preflight) == ("preflight failed: replica neu-replica is unreachable: "
                                                 "connection refused")


def test_failover_refused_when_replica_already_promoted(registry: Registry) -> None:
    plan = plan_failover(registry, "platform", "northeurope")
    preflight = healthy_preflight(plan, replicas=[ReplicaObservation("neu-replica", True, False)])
    assert "is not in recovery: it is already a primary" in (failover_refusal(plan, preflight) or "")


def test_failover_refused_when_recovery_credentials_missing(registry: Registry) -> None:
    plan = plan_failover(registry, "platform", "northeurope")
    preflight = healthy_preflight(plan, credentials={"pg-recovery-northeurope": False})
    assert "recovery credential pg-recovery-northeurope is missing" in (failover_refusal(plan, preflight) or "")


def test_unreachable_primary_requires_named_acknowledgement(registry: Registry) -> None:
    plan = plan_failover(registry, "platform", "northeurope")
    preflight = healthy_preflight(plan, primaries=[PrimaryObservation("weu-primary", False, detail="timeout")])
    assert failover_refusal(plan, preflight) is None
    assert preflight.required_acknowledgements == frozenset({"primary_unreachable"})


def test_lag_beyond_tightest_rpo_requires_acknowledgement(registry: Registry) -> None:
    plan = plan_failover(registry, "platform", "northeurope")
    preflight = healthy_preflight(plan, replicas=[ReplicaObservation("neu-replica", True, True, 10**9, 1200.0)],
                                  max_lag_seconds=900.0)
    lag = next(f for f in preflight.findings if f.check == "replication_lag")
    assert lag.status is FindingStatus.WARN
    assert preflight.required_acknowledgements == frozenset({"replication_lag"})


def test_tenant_without_validated_backup_is_reported(registry: Registry) -> None:
    plan = plan_failover(registry, "globex", "northeurope")
    preflight = healthy_preflight(plan, backups=[BackupObservation("globex", None)])
    finding = next(f for f in preflight.findings if f.check == "validated_backup")
    assert finding.detail.startswith("globex: no validated backup")
    assert "no_validated_backup" in preflight.required_acknowledgements


def test_live_failover_fences_before_it_promotes() -> None:
    steps = plan_steps(drill=False)
    assert steps == (StepName.FENCE, StepName.PROMOTE, StepName.REPOINT, StepName.VERIFY)


def test_drill_never_fences_nor_repoints() -> None:
    steps = plan_steps(drill=True)
    assert StepName.FENCE not in steps and StepName.REPOINT not in steps
    assert steps[0] is StepName.COPY


def test_promotion_refused_before_fence() -> None:
    reason = promotion_refusal(None, frozenset(), drill=False)
    assert reason == "the old primary has not been fenced: fence before promote"


def test_promotion_refused_while_old_primary_accepts_writes() -> None:
    fence = FenceResult("weu-primary", FenceState.NOT_FENCED, "default_transaction_read_only is off")
    assert promotion_refusal(fence, frozenset(), drill=False) == (
        "old primary weu-primary still accepts writes (default_transaction_read_only is off): refusing to promote")


def test_promotion_refused_when_primary_unreachable_without_acknowledgement() -> None:
    fence = FenceResult("weu-primary", FenceState.UNREACHABLE, "connection refused")
    reason = promotion_refusal(fence, frozenset(), drill=False)
    assert reason is not None and "refusing to risk two writable primaries" in reason
    assert promotion_refusal(fence, frozenset({"primary_unreachable"}), drill=False) is None


def test_promotion_allowed_once_primary_is_read_only_or_stopped() -> None:
    for state in (FenceState.READ_ONLY, FenceState.STOPPED):
        assert promotion_refusal(FenceResult("weu-primary", state, "ok"), frozenset(), drill=False) is None


def test_drill_target_that_accepts_tcp_refused() -> None:
    assert drill_refusal("127.0.0.1", True, ["127.0.0.1:55432"]) == (
        "drill target 127.0.0.1 accepts TCP; a drill copy must listen on a unix socket only")


def test_drill_target_that_is_a_live_server_refused() -> None:
    reason = drill_refusal("/run/live", False, ["/run/live"])
    assert reason is not None and "must never touch the live primary" in reason


def test_timings_report_approval_wait_steps_and_approval_to_writable() -> None:
    approved = T0 + timedelta(seconds=60)
    steps = [StepTiming(StepName.FENCE, approved, approved + timedelta(seconds=1), True, ""),
             StepTiming(StepName.PROMOTE, approved + timedelta(seconds=1), approved + timedelta(seconds=3), True, "")]
    out = timings(T0, approved, steps, approved + timedelta(seconds=5), MILESTONES)
    assert out == {"approval_wait": 60.0, "fence": 1.0, "promote": 2.0, "approval_to_writable": 3.0, "total": 65.0}
