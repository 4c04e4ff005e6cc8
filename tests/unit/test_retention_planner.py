"""The retention planner: invariants proven with hypothesis, and the rules shown by example."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continuity.kernel.tenants import RetentionPolicy, StorageTier, load_registry
from continuity.retention.planner import (
    CandidateStatus,
    Delete,
    Holds,
    InvalidRetentionInput,
    Keep,
    RetentionCandidate,
    RetentionPlan,
    SetImmutability,
    SetTier,
    action_from_dict,
    apply_plan_to_catalog,
    plan_retention,
    policies_from_registry,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # a Friday; ISO week 2026-W47
TENANTS = ("acme-finance", "globex")
TIER_ORDER = {StorageTier.HOT: 0, StorageTier.COOL: 1, StorageTier.COLD: 2, StorageTier.ARCHIVE: 3}
ROOT = Path(__file__).resolve().parents[2]


def make_backup(tenant: str = "acme-finance", backup_id: str = "b1", *, days_ago: float = 0.0,
                status: str = "VALIDATED", tier: str = "hot", immutable_until: datetime | None = None,
                legal_hold: bool = False, now: datetime = NOW) -> RetentionCandidate:
    return RetentionCandidate(tenant=tenant, backup_id=backup_id, created_at=now - timedelta(days=days_ago),
                              status=status, tier=tier, immutable_until=immutable_until, legal_hold=legal_hold)


def policy(**overrides: object) -> RetentionPolicy:
    base: dict[str, object] = {"daily": 7, "weekly": 4, "monthly": 12, "yearly": 0, "cool_after_days": 7,
                               "cold_after_days": 30, "archive_after_days": 180, "immutable_days": 7,
                               "min_copies": 2, "validate_before_archive": True}
    base.update(overrides)
    if "immutable_days" not in overrides:  # stay within the registry's rule: no lock past retention
        longest = max(int(base["daily"]), int(base["weekly"]) * 7, int(base["monthly"]) * 31,  # type: ignore[call-overload]
                      int(base["yearly"]) * 366)  # type: ignore[call-overload]
        base["immutable_days"] = min(7, longest)
    return RetentionPolicy.model_validate(base)


def decision(plan: RetentionPlan, backup_id: str, tenant: str = "acme-finance") -> Keep | Delete:
    found = [a for a in plan.for_backup(tenant, backup_id) if isinstance(a, Keep | Delete)]
    assert len(found) == 1, found
    return found[0]


def tier_change(plan: RetentionPlan, backup_id: str, tenant: str = "acme-finance") -> SetTier | None:
    found = [a for a in plan.for_backup(tenant, backup_id) if isinstance(a, SetTier)]
    return found[0] if found else None


def lock_change(plan: RetentionPlan, backup_id: str, tenant: str = "acme-finance") -> SetImmutability | None:
    found = [a for a in plan.for_backup(tenant, backup_id) if isinstance(a, SetImmutability)]
    return found[0] if found else None


# ---- strategies (small: the whole file runs in well under a minute on 2 cores) ----------------

@st.composite
def policies(draw: st.DrawFn) -> RetentionPolicy:
    daily = draw(st.integers(0, 4))
    weekly = draw(st.integers(0, 3))
    monthly = draw(st.integers(0, 3))
    yearly = draw(st.integers(0, 1))
    cool = draw(st.integers(0, 20))
    cold = cool + draw(st.integers(0, 40))
    archive = cold + draw(st.integers(0, 120))
    longest = max(daily, weekly * 7, monthly * 31, yearly * 366)
    return RetentionPolicy(daily=daily, weekly=weekly, monthly=monthly, yearly=yearly, cool_after_days=cool,
                           cold_after_days=cold, archive_after_days=archive,
                           immutable_days=draw(st.integers(0, min(longest, 45))),
                           min_copies=draw(st.integers(1, 4)), validate_before_archive=draw(st.booleans()))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[RetentionCandidate], dict[str, RetentionPolicy], Holds, datetime]:
    now = BASE + timedelta(hours=draw(st.integers(0, 24 * 420)))
    backups: list[RetentionCandidate] = []
    for tenant in TENANTS:
        for index in range(draw(st.integers(0, 10))):
            created = now - timedelta(hours=draw(st.integers(-24, 24 * 400)))
            lock = draw(st.one_of(st.none(), st.integers(-24 * 40, 24 * 40)))
            backups.append(RetentionCandidate(
                tenant=tenant, backup_id=f"b{index:02d}", created_at=created,
                status=draw(st.sampled_from(list(CandidateStatus))),
                tier=draw(st.sampled_from(list(StorageTier))),
                immutable_until=None if lock is None else now + timedelta(hours=lock),
                legal_hold=draw(st.integers(0, 9)) == 0,
            ))
    held_tenants = draw(st.sets(st.sampled_from(TENANTS), max_size=1))
    held_backups = draw(st.sets(st.sampled_from([b.key for b in backups]), max_size=2)) if backups else set()
    return backups, {t: draw(policies()) for t in TENANTS}, Holds.of(held_tenants, held_backups), now


PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def deleted_keys(plan: RetentionPlan) -> set[tuple[str, str]]:
    return {a.key for a in plan.actions if isinstance(a, Delete)}


# ---- invariants -----------------------------------------------------------------------------

@PROPERTY
@given(scenarios())
def test_property_never_deletes_newest_validated_backup_of_a_tenant(scenario) -> None:
    backups, policies_, holds, now = scenario
    plan = plan_retention(backups, policies_, holds, now)
    for tenant in TENANTS:
        validated = [b for b in backups if b.tenant == tenant and b.status == CandidateStatus.VALIDATED]
        if validated:
            newest = max(validated, key=lambda b: (b.created_at, b.backup_id))
            assert newest.key not in deleted_keys(plan)


@PROPERTY
@given(scenarios())
def test_property_never_deletes_under_legal_hold(scenario) -> None:
    backups, policies_, holds, now = scenario
    plan = plan_retention(backups, policies_, holds, now)
    for backup in backups:
        if backup.legal_hold or holds.tenant_held(backup.tenant) or holds.backup_held(*backup.key):
            assert backup.key not in deleted_keys(plan)


@PROPERTY
@given(scenarios())
def test_property_never_deletes_before_immutable_until(scenario) -> None:
    backups, policies_, holds, now = scenario
    plan = plan_retention(backups, policies_, holds, now)
    for backup in backups:
        if backup.key in deleted_keys(plan):
            assert backup.immutable_until is None or backup.immutable_until < now


@PROPERTY
@given(scenarios())
def test_property_never_falls_below_min_copies_usable_backups(scenario) -> None:
    backups, policies_, holds, now = scenario
    plan = plan_retention(backups, policies_, holds, now)
    after = apply_plan_to_catalog(backups, plan)
    for tenant in TENANTS:
        before_usable = sum(1 for b in backups if b.tenant == tenant and b.usable)
        after_usable = sum(1 for b in after if b.tenant == tenant and b.usable)
        assert after_usable >= min(policies_[tenant].min_copies, before_usable)


@PROPERTY
@given(scenarios())
def test_property_never_archives_unvalidated_backup_when_policy_requires_validation(scenario) -> None:
    backups, policies_, holds, now = scenario
    plan = plan_retention(backups, policies_, holds, now)
    status = {b.key: b.status for b in backups}
    for action in plan.changes:
        if isinstance(action, SetTier) and action.to is StorageTier.ARCHIVE \
                and policies_[action.tenant].validate_before_archive:
            assert status[action.key] == CandidateStatus.VALIDATED


@PROPERTY
@given(scenarios())
def test_property_tiers_only_move_colder(scenario) -> None:
    backups, policies_, holds, now = scenario
    plan = plan_retention(backups, policies_, holds, now)
    tier = {b.key: StorageTier(b.tier) for b in backups}
    for action in plan.changes:
        if isinstance(action, SetTier):
            assert TIER_ORDER[action.to] > TIER_ORDER[tier[action.key]]


@PROPERTY
@given(scenarios())
def test_property_immutability_is_only_set_or_extended(scenario) -> None:
    backups, policies_, holds, now = scenario
    plan = plan_retention(backups, policies_, holds, now)
    until = {b.key: b.immutable_until for b in backups}
    for action in plan.changes:
        if isinstance(action, SetImmutability):
            current = until[action.key]
            assert action.until > now
            assert current is None or action.until > current


@PROPERTY
@given(scenarios())
def test_property_planning_again_after_applying_changes_nothing(scenario) -> None:
    backups, policies_, holds, now = scenario
    first = plan_retention(backups, policies_, holds, now)
    again = plan_retention(apply_plan_to_catalog(backups, first), policies_, holds, now)
    assert again.changes == ()


@PROPERTY
@given(scenarios())
def test_property_every_live_backup_gets_exactly_one_keep_or_delete_and_deleted_ones_nothing_else(scenario) -> None:
    backups, policies_, holds, now = scenario
    plan = plan_retention(backups, policies_, holds, now)
    for backup in backups:
        actions = plan.for_backup(*backup.key)
        if backup.status == CandidateStatus.DELETED:
            assert actions == ()
            continue
        decisions = [a for a in actions if isinstance(a, Keep | Delete)]
        assert len(decisions) == 1
        if isinstance(decisions[0], Delete):
            assert actions == (decisions[0],)
        assert decisions[0].reason.startswith(("kept: ", "deleted: "))


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_property_plan_is_deterministic_and_independent_of_input_order(scenario, rnd: random.Random) -> None:
    backups, policies_, holds, now = scenario
    shuffled = list(backups)
    rnd.shuffle(shuffled)
    plan = plan_retention(backups, policies_, holds, now)
    assert plan_retention(shuffled, policies_, holds, now).to_json() == plan.to_json()
    assert RetentionPlan.from_json(plan.to_json()) == plan


# ---- rules by example -----------------------------------------------------------------------

def test_planner_keeps_last_validated_backup_under_legal_hold() -> None:
    backups = [make_backup(backup_id="old-validated", days_ago=400),
               make_backup(backup_id="old-available", days_ago=390, status="AVAILABLE")]
    plan = plan_retention(backups, {"acme-finance": policy(daily=0, weekly=0, monthly=0, immutable_days=0,
                                                           min_copies=1)},
                          Holds.of(tenants=["acme-finance"]), NOW)
    kept = decision(plan, "old-validated")
    assert isinstance(kept, Keep)
    assert "newest validated backup of acme-finance" in kept.reason
    assert "legal hold on tenant acme-finance" in kept.reason
    assert isinstance(decision(plan, "old-available"), Keep)


def test_planner_keeps_backup_with_its_own_legal_hold_outside_every_rule() -> None:
    backups = [make_backup(backup_id=f"b{i}", days_ago=i) for i in range(4)]
    backups.append(make_backup(backup_id="held", days_ago=300, status="AVAILABLE", legal_hold=True))
    plan = plan_retention(backups, {"acme-finance": policy(daily=2, weekly=0, monthly=0, immutable_days=0)},
                          Holds(), NOW)
    assert decision(plan, "held").reason == "kept: legal hold on backup held"


def test_planner_keeps_backup_held_by_backup_key_from_holds() -> None:
    backups = [make_backup(backup_id="new", days_ago=0), make_backup(backup_id="old", days_ago=100)]
    plan = plan_retention(backups, {"acme-finance": policy(daily=1, weekly=0, monthly=0, immutable_days=0,
                                                           min_copies=1)},
                          Holds.of(backups=[("acme-finance", "old")]), NOW)
    assert decision(plan, "old").reason == "kept: legal hold on backup old"


def test_planner_keeps_newest_backup_per_iso_week_as_weekly_slot() -> None:
    # 2026-11-20 is in 2026-W47; 2026-11-12 (Thu) and 2026-11-13 (Fri) are both in 2026-W46.
    backups = [make_backup(backup_id="w47", days_ago=0), make_backup(backup_id="w46-fri", days_ago=7),
               make_backup(backup_id="w46-thu", days_ago=8)]
    plan = plan_retention(backups, {"acme-finance": policy(daily=0, weekly=2, monthly=0, immutable_days=0,
                                                           min_copies=1)}, Holds(), NOW)
    assert "weekly slot 2026-W46" in decision(plan, "w46-fri").reason
    assert decision(plan, "w46-thu").reason.startswith("deleted: outside every keep rule")


def test_planner_keeps_newest_backup_per_day_month_and_year() -> None:
    backups = [make_backup(backup_id="today", days_ago=0), make_backup(backup_id="today-earlier", days_ago=0.05),
               make_backup(backup_id="last-month", days_ago=35), make_backup(backup_id="last-year", days_ago=400)]
    plan = plan_retention(backups, {"acme-finance": policy(daily=1, weekly=0, monthly=2, yearly=2,
                                                           immutable_days=0, min_copies=1)}, Holds(), NOW)
    assert "daily slot 2026-11-20" in decision(plan, "today").reason
    assert "monthly slot 2026-10" in decision(plan, "last-month").reason
    assert "yearly slot 2025" in decision(plan, "last-year").reason
    assert isinstance(decision(plan, "today-earlier"), Delete)


def test_planner_deletes_backup_outside_every_keep_rule() -> None:
    backups = [make_backup(backup_id=f"b{i}", days_ago=i) for i in range(5)]
    plan = plan_retention(backups, {"acme-finance": policy(daily=3, weekly=0, monthly=0, immutable_days=0,
                                                           min_copies=1)}, Holds(), NOW)
    assert [a.backup_id for a in plan.actions if isinstance(a, Delete)] == ["b4", "b3"]
    assert decision(plan, "b4").reason.startswith("deleted: outside every keep rule (daily 3, weekly 0")


def test_planner_keeps_backup_before_its_immutable_until() -> None:
    backups = [make_backup(backup_id="new", days_ago=0),
               make_backup(backup_id="locked", days_ago=90, immutable_until=NOW + timedelta(hours=1))]
    plan = plan_retention(backups, {"acme-finance": policy(daily=1, weekly=0, monthly=0, immutable_days=0,
                                                           min_copies=1)}, Holds(), NOW)
    assert decision(plan, "locked").reason == "kept: immutable until 2026-11-20T04:00:00Z"


def test_planner_deletes_backup_once_its_immutability_expired() -> None:
    backups = [make_backup(backup_id="new", days_ago=0),
               make_backup(backup_id="expired", days_ago=90, immutable_until=NOW - timedelta(seconds=1))]
    plan = plan_retention(backups, {"acme-finance": policy(daily=1, weekly=0, monthly=0, immutable_days=0,
                                                           min_copies=1)}, Holds(), NOW)
    assert isinstance(decision(plan, "expired"), Delete)


def test_planner_keeps_min_copies_when_slots_would_keep_fewer() -> None:
    backups = [make_backup(backup_id=f"b{i}", days_ago=i * 0.1, status="AVAILABLE") for i in range(5)]
    plan = plan_retention(backups, {"acme-finance": policy(daily=1, weekly=0, monthly=0, immutable_days=0,
                                                           min_copies=3)}, Holds(), NOW)
    assert "daily slot 2026-11-20" in decision(plan, "b0").reason
    assert decision(plan, "b1").reason == "kept: min_copies 3 for acme-finance"
    assert decision(plan, "b2").reason == "kept: min_copies 3 for acme-finance"
    assert isinstance(decision(plan, "b3"), Delete)


def test_planner_does_not_count_failed_backups_for_slots() -> None:
    backups = [make_backup(backup_id="failed-today", days_ago=0, status="FAILED_VALIDATION"),
               make_backup(backup_id="good-yesterday", days_ago=1)]
    plan = plan_retention(backups, {"acme-finance": policy(daily=1, weekly=0, monthly=0, immutable_days=0,
                                                           min_copies=1)}, Holds(), NOW)
    assert "daily slot 2026-11-19" in decision(plan, "good-yesterday").reason
    assert decision(plan, "failed-today").reason == "kept: failed validation, within the 1-day inspection window"


def test_planner_deletes_failed_backup_after_inspection_window() -> None:
    backups = [make_backup(backup_id="failed", days_ago=10, status="REJECTED"), make_backup(backup_id="good")]
    plan = plan_retention(backups, {"acme-finance": policy(daily=7, weekly=0, monthly=0)}, Holds(), NOW)
    assert decision(plan, "failed").reason == "deleted: rejected and older than the 7-day inspection window"


def test_planner_keeps_pending_and_missing_backups_and_leaves_their_tier() -> None:
    backups = [make_backup(backup_id="good"),
               make_backup(backup_id="pending", days_ago=200, status="PENDING"),
               make_backup(backup_id="missing", days_ago=200, status="MISSING")]
    plan = plan_retention(backups, {"acme-finance": policy(daily=1, weekly=0, monthly=0, min_copies=1)},
                          Holds(), NOW)
    assert decision(plan, "pending").reason == "kept: pending: not yet cataloged or validated"
    assert decision(plan, "missing").reason.startswith("kept: missing from storage")
    assert tier_change(plan, "pending") is None and tier_change(plan, "missing") is None


def test_planner_keeps_everything_of_a_tenant_without_policy() -> None:
    backups = [make_backup(tenant="stranger", backup_id=f"b{i}", days_ago=i * 100) for i in range(3)]
    plan = plan_retention(backups, {}, Holds(), NOW)
    assert plan.changes == ()
    assert {a.reason for a in plan.actions} == {"kept: no retention policy for tenant stranger"}


def test_planner_ignores_deleted_backups() -> None:
    backups = [make_backup(backup_id="gone", days_ago=500, status="DELETED"), make_backup(backup_id="here")]
    plan = plan_retention(backups, {"acme-finance": policy()}, Holds(), NOW)
    assert plan.for_backup("acme-finance", "gone") == ()


def test_planner_tiers_cool_after_cool_after_days() -> None:
    backups = [make_backup(backup_id="new", days_ago=1), make_backup(backup_id="week-old", days_ago=8)]
    plan = plan_retention(backups, {"acme-finance": policy()}, Holds(), NOW)
    change = tier_change(plan, "week-old")
    assert change is not None and change.to is StorageTier.COOL
    assert change.reason == "tier cool: older than 7 days"
    assert tier_change(plan, "new") is None


def test_planner_tiers_cold_after_cold_after_days() -> None:
    backups = [make_backup(backup_id="new"), make_backup(backup_id="old", days_ago=45, tier="cool")]
    plan = plan_retention(backups, {"acme-finance": policy()}, Holds(), NOW)
    change = tier_change(plan, "old")
    assert change is not None and (change.to, change.reason) == (StorageTier.COLD, "tier cold: older than 30 days")


def test_planner_never_moves_tier_warmer() -> None:
    backups = [make_backup(backup_id="new"), make_backup(backup_id="archived-young", days_ago=3, tier="archive")]
    plan = plan_retention(backups, {"acme-finance": policy()}, Holds(), NOW)
    assert tier_change(plan, "archived-young") is None


def test_planner_archives_old_validated_backup() -> None:
    backups = [make_backup(backup_id="new"), make_backup(backup_id="old", days_ago=200, tier="cold")]
    plan = plan_retention(backups, {"acme-finance": policy(monthly=12)}, Holds(), NOW)
    change = tier_change(plan, "old")
    assert change is not None and change.to is StorageTier.ARCHIVE
    assert change.reason == "tier archive: older than 180 days"


def test_planner_caps_unvalidated_backup_at_cold_when_policy_requires_validation_before_archive() -> None:
    backups = [make_backup(backup_id="new"), make_backup(backup_id="old", days_ago=200, status="AVAILABLE")]
    plan = plan_retention(backups, {"acme-finance": policy(monthly=12)}, Holds(), NOW)
    change = tier_change(plan, "old")
    assert change is not None and change.to is StorageTier.COLD
    assert "requires validation before archive" in change.reason


def test_planner_archives_unvalidated_backup_when_policy_does_not_require_validation() -> None:
    backups = [make_backup(backup_id="new"), make_backup(backup_id="old", days_ago=200, status="AVAILABLE")]
    plan = plan_retention(backups, {"acme-finance": policy(monthly=12, validate_before_archive=False)},
                          Holds(), NOW)
    change = tier_change(plan, "old")
    assert change is not None and change.to is StorageTier.ARCHIVE


def test_planner_keeps_newest_backup_out_of_archive_so_it_restores_without_rehydration() -> None:
    backups = [make_backup(backup_id="only", days_ago=200)]
    plan = plan_retention(backups, {"acme-finance": policy()}, Holds(), NOW)
    change = tier_change(plan, "only")
    assert change is not None and change.to is StorageTier.COLD
    assert "stays out of archive" in change.reason


def test_planner_locks_new_backup_for_immutable_days_rounded_up_to_the_second() -> None:
    created = NOW - timedelta(days=1, microseconds=250)
    backups = [RetentionCandidate("acme-finance", "new", created, "AVAILABLE")]
    plan = plan_retention(backups, {"acme-finance": policy(immutable_days=7)}, Holds(), NOW)
    lock = lock_change(plan, "new")
    assert lock is not None
    assert lock.until == (created + timedelta(days=7)).replace(microsecond=0) + timedelta(seconds=1)
    assert lock.reason.startswith("immutable until 2026-11-26T03:00:00Z: 7-day immutability")
    assert "inside the 7-day immutability window" in decision(plan, "new").reason


def test_planner_extends_a_shorter_lock() -> None:
    backups = [make_backup(backup_id="new", days_ago=1, immutable_until=NOW + timedelta(days=1))]
    plan = plan_retention(backups, {"acme-finance": policy(immutable_days=7)}, Holds(), NOW)
    lock = lock_change(plan, "new")
    assert lock is not None and lock.until == NOW + timedelta(days=6)
    assert lock.reason.startswith("extended until")


def test_planner_never_shortens_a_longer_lock() -> None:
    backups = [make_backup(backup_id="new", days_ago=1, immutable_until=NOW + timedelta(days=30))]
    plan = plan_retention(backups, {"acme-finance": policy(immutable_days=7)}, Holds(), NOW)
    assert lock_change(plan, "new") is None


def test_planner_does_not_lock_backups_past_their_immutability_window() -> None:
    backups = [make_backup(backup_id="new"), make_backup(backup_id="old", days_ago=8)]
    plan = plan_retention(backups, {"acme-finance": policy(immutable_days=7)}, Holds(), NOW)
    assert lock_change(plan, "old") is None


def test_planner_plans_the_registry_tiers_for_the_demo_tenants() -> None:
    registry = load_registry(ROOT / "config" / "tenants.yaml")
    backups = [make_backup(tenant=t.id, backup_id=f"d{d:03d}", days_ago=d) for t in registry.tenants
               for d in range(0, 120, 3)]
    plan = plan_retention(backups, policies_from_registry(registry), Holds.from_registry(registry), NOW)
    # gold (acme-finance) keeps 14 daily; bronze (initech) keeps 7 daily: bronze deletes more.
    deletes = {t.id: sum(1 for a in plan.actions if isinstance(a, Delete) and a.tenant == t.id)
               for t in registry.tenants}
    assert deletes["initech"] > deletes["acme-finance"] > 0
    again = plan_retention(apply_plan_to_catalog(backups, plan), policies_from_registry(registry),
                           Holds.from_registry(registry), NOW)
    assert again.changes == ()


def test_plan_json_is_canonical_and_round_trips() -> None:
    backups = [make_backup(backup_id="new"), make_backup(backup_id="old", days_ago=40)]
    plan = plan_retention(backups, {"acme-finance": policy()}, Holds(), NOW)
    document = json.loads(plan.to_json())
    assert document["format"] == "continuity.retention-plan/1"
    assert document["now"] == "2026-11-20T03:00:00Z"
    assert document["summary"] == plan.summary()
    assert {"kind", "tenant", "backup_id", "created_at", "reason"} <= set(document["actions"][0])
    assert RetentionPlan.from_json(plan.to_json()) == plan
    assert plan.to_json() == plan_retention(list(reversed(backups)), {"acme-finance": policy()}, Holds(),
                                            NOW).to_json()


# ---- refusals -------------------------------------------------------------------------------

def test_candidate_refused_when_created_at_has_no_time_zone() -> None:
    with pytest.raises(InvalidRetentionInput, match="created_at .* has no time zone"):
        RetentionCandidate("acme-finance", "b1", datetime(2026, 1, 1), "VALIDATED")


def test_candidate_refused_when_immutable_until_has_no_time_zone() -> None:
    with pytest.raises(InvalidRetentionInput, match="immutable_until .* has no time zone"):
        RetentionCandidate("acme-finance", "b1", NOW, "VALIDATED", immutable_until=datetime(2026, 1, 1))


def test_candidate_refused_when_status_is_unknown() -> None:
    with pytest.raises(InvalidRetentionInput, match="status 'GOOD' is unknown; use one of AVAILABLE"):
        RetentionCandidate("acme-finance", "b1", NOW, "GOOD")


def test_candidate_refused_when_tier_is_unknown() -> None:
    with pytest.raises(InvalidRetentionInput, match="tier 'premium' is unknown"):
        RetentionCandidate("acme-finance", "b1", NOW, "VALIDATED", tier="premium")


def test_candidate_refused_when_tenant_id_is_malformed() -> None:
    with pytest.raises(InvalidRetentionInput, match="is not a tenant id"):
        RetentionCandidate("Acme Finance", "b1", NOW, "VALIDATED")


def test_candidate_refused_when_backup_id_is_empty_or_has_a_slash() -> None:
    with pytest.raises(InvalidRetentionInput, match="backup_id '' must be a non-empty id"):
        RetentionCandidate("acme-finance", "", NOW, "VALIDATED")
    with pytest.raises(InvalidRetentionInput, match="without '/'"):
        RetentionCandidate("acme-finance", "a/b", NOW, "VALIDATED")


def test_planner_refused_when_now_is_naive() -> None:
    with pytest.raises(InvalidRetentionInput, match="now .* has no time zone"):
        plan_retention([], {}, Holds(), datetime(2026, 1, 1))


def test_planner_refused_when_same_backup_appears_twice_with_different_data() -> None:
    backups = [make_backup(backup_id="b1", status="VALIDATED"), make_backup(backup_id="b1", status="AVAILABLE")]
    with pytest.raises(InvalidRetentionInput, match="appears twice with different catalog data"):
        plan_retention(backups, {"acme-finance": policy()}, Holds(), NOW)


def test_planner_accepts_an_identical_duplicate_once() -> None:
    backups = [make_backup(backup_id="b1"), make_backup(backup_id="b1")]
    plan = plan_retention(backups, {"acme-finance": policy()}, Holds(), NOW)
    assert len([a for a in plan.actions if isinstance(a, Keep)]) == 1


def test_plan_from_json_refused_for_another_format() -> None:
    with pytest.raises(InvalidRetentionInput, match="not a retention plan"):
        RetentionPlan.from_json('{"format": "something-else/1", "now": "2026-01-01T00:00:00Z", "actions": []}')


def test_plan_from_json_refused_for_invalid_json() -> None:
    with pytest.raises(InvalidRetentionInput, match="not valid JSON"):
        RetentionPlan.from_json("{nope")


def test_action_from_dict_refused_when_a_field_is_missing() -> None:
    with pytest.raises(InvalidRetentionInput, match="missing field 'to'"):
        action_from_dict({"kind": "SET_TIER", "tenant": "acme-finance", "backup_id": "b1",
                          "created_at": "2026-01-01T00:00:00Z", "reason": "tier cool: older than 7 days"})


def test_action_from_dict_refused_when_kind_is_unknown() -> None:
    with pytest.raises(InvalidRetentionInput, match="malformed"):
        action_from_dict({"kind": "SHRED", "tenant": "acme-finance", "backup_id": "b1",
                          "created_at": "2026-01-01T00:00:00Z", "reason": "x"})
