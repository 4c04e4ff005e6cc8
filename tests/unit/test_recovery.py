"""Tenant recovery rules: choosing the backup, refusals, names, data-loss summary, and the cutover state
machine driven against a model of pg_database (every action, every crash point, every target)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from continuity.kernel.errors import Conflict, ContinuityError, InvalidRequest
from continuity.kernel.steps import StepTiming, timings
from continuity.recovery.rules import (
    MILESTONES,
    STAGED_NAME_RE,
    BackupCandidate,
    CutoverAction,
    CutoverObservation,
    CutoverPosition,
    DatabaseNames,
    DatabaseState,
    RecoveryRefused,
    StepName,
    TableFacts,
    choose_backup,
    cutover_position,
    instance_id,
    live_count,
    marker,
    next_cutover_action,
    plan_steps,
    recovery_refusal,
    resting_refusal,
    summarize_data_loss,
)

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def make_backup(backup_id: str = "20260301T020000Z-aaaaaa", tenant: str = "acme", status: str = "validated",
                hours: float = 0, reason: str = "") -> BackupCandidate:
    return BackupCandidate(tenant=tenant, backup_id=backup_id, status=status, created_at=T0 + timedelta(hours=hours),
                           status_reason=reason)


BACKUPS = [
    make_backup("20260301T020000Z-aaaaaa", hours=0),
    make_backup("20260302T020000Z-bbbbbb", hours=24, status="failed_validation", reason="ledger: unbalanced"),
    make_backup("20260303T020000Z-cccccc", hours=48),
    make_backup("20260304T020000Z-dddddd", hours=72, status="available"),
]


# ---- choosing the backup ------------------------------------------------------------------------


def test_explicit_validated_backup_is_chosen() -> None:
    assert choose_backup("acme", BACKUPS, backup_id="20260301T020000Z-aaaaaa").backup_id == "20260301T020000Z-aaaaaa"


def test_without_backup_or_time_the_newest_validated_backup_is_chosen_not_the_newest() -> None:
    assert choose_backup("acme", BACKUPS).backup_id == "20260303T020000Z-cccccc"


def test_before_picks_newest_validated_backup_strictly_before_the_time() -> None:
    assert choose_backup("acme", BACKUPS, before=T0 + timedelta(hours=47)).backup_id == "20260301T020000Z-aaaaaa"
    assert choose_backup("acme", BACKUPS, before=T0 + timedelta(hours=49)).backup_id == "20260303T020000Z-cccccc"


def test_backup_of_another_tenant_is_refused_naming_the_owner() -> None:
    reason = recovery_refusal("acme", BACKUPS, backup_id="20260305T020000Z-eeeeee", owner_of_backup="globex")
    assert reason == ("backup 20260305T020000Z-eeeeee belongs to tenant globex, not acme: a tenant is only ever "
                      "recovered from its own backups")
    with pytest.raises(RecoveryRefused):
        choose_backup("acme", BACKUPS, backup_id="20260305T020000Z-eeeeee", owner_of_backup="globex")


def test_unknown_backup_is_refused() -> None:
    assert "has no backup '20260305T020000Z-eeeeee'" in str(
        recovery_refusal("acme", BACKUPS, backup_id="20260305T020000Z-eeeeee"))


def test_backup_that_failed_validation_is_refused_with_its_reason() -> None:
    reason = recovery_refusal("acme", BACKUPS, backup_id="20260302T020000Z-bbbbbb")
    assert reason is not None and reason.startswith(
        "backup 20260302T020000Z-bbbbbb failed validation (ledger: unbalanced)")


def test_backup_not_yet_validated_is_refused() -> None:
    reason = recovery_refusal("acme", BACKUPS, backup_id="20260304T020000Z-dddddd")
    assert reason is not None and "is available, not validated: validate it first" in reason


def test_time_before_the_oldest_backup_is_refused() -> None:
    reason = recovery_refusal("acme", BACKUPS, before=T0 - timedelta(days=3))
    assert reason is not None and "is before the oldest backup of acme" in reason


def test_time_with_only_unvalidated_backups_before_it_is_refused() -> None:
    only = [make_backup(status="available"), make_backup("20260302T020000Z-bbbbbb", hours=24)]
    reason = recovery_refusal("acme", only, before=T0 + timedelta(hours=1))
    assert reason == (f"tenant acme has no validated backup before {(T0 + timedelta(hours=1)).isoformat()}; "
                      "validate one first (`continuity validate acme`)")


def test_tenant_without_backups_is_refused() -> None:
    assert recovery_refusal("acme", []) == "tenant acme has no backup in the catalog; nothing to recover to"


def test_recovery_already_running_is_a_conflict() -> None:
    reason = recovery_refusal("acme", BACKUPS, running="recovery-acme, AWAITING_APPROVAL")
    assert reason is not None and reason.startswith("a recovery of acme is already running")
    with pytest.raises(Conflict):
        choose_backup("acme", BACKUPS, running="recovery-acme, AWAITING_APPROVAL")


def test_backup_id_and_time_together_and_naive_time_are_malformed() -> None:
    with pytest.raises(InvalidRequest, match="not both"):
        choose_backup("acme", BACKUPS, backup_id="20260301T020000Z-aaaaaa", before=T0)
    with pytest.raises(InvalidRequest, match="needs a time zone"):
        choose_backup("acme", BACKUPS, before=datetime(2026, 3, 2))


@given(st.lists(st.tuples(st.integers(0, 500), st.sampled_from(["validated", "failed_validation", "available"])),
                min_size=1, max_size=12, unique_by=lambda t: t[0]), st.integers(-10, 510))
def test_chosen_backup_is_always_validated_and_the_newest_before_the_time(rows: list[tuple[int, str]],
                                                                         hour: int) -> None:
    backups = [make_backup(f"2026{h:04d}T000000Z-{h:06x}", hours=h, status=s) for h, s in rows]
    before = T0 + timedelta(hours=hour)
    if recovery_refusal("acme", backups, before=before) is not None:
        return
    chosen = choose_backup("acme", backups, before=before)
    assert chosen.status == "validated" and chosen.created_at < before
    assert not any(b.status == "validated" and chosen.created_at < b.created_at < before for b in backups)


# ---- names ----------------------------------------------------------------------------------------


def test_names_are_derived_from_live_name_and_stamp() -> None:
    names = DatabaseNames.of("odoo_acme_finance", T0)
    assert names == DatabaseNames("odoo_acme_finance", "odoo_acme_finance_staging_20260301020000",
                                  "odoo_acme_finance_pre_recovery_20260301020000")
    assert STAGED_NAME_RE.match(names.staged) and instance_id("acme") == "recovery-acme"


def test_long_database_names_fit_postgres_identifier_limit_and_stay_distinct() -> None:
    a = DatabaseNames.of("a" * 63, T0)
    b = DatabaseNames.of("a" * 62 + "b", T0)
    for n in (a, b):
        assert len(n.staged) <= 63 and len(n.pre_recovery) <= 63 and STAGED_NAME_RE.match(n.staged)
    assert a.staged != b.staged


def test_plan_steps_drill_never_fences_or_swaps() -> None:
    assert plan_steps(drill=False) == (StepName.FENCE, StepName.SWAP, StepName.REOPEN, StepName.VERIFY,
                                       StepName.BACKUP)
    assert StepName.FENCE not in plan_steps(drill=True) and StepName.SWAP not in plan_steps(drill=True)


# ---- data loss ------------------------------------------------------------------------------------


def test_data_loss_summary_counts_what_is_discarded_and_brought_back() -> None:
    summary = summarize_data_loss("20260301T020000Z-aaaaaa", T0, T0 + timedelta(minutes=90), [
        TableFacts("moves", live_rows=35, backup_rows=40, created_after=3, modified_after=1, missing_from_live=8),
        TableFacts("invoices", live_rows=20, backup_rows=20, created_after=1, modified_after=0, missing_from_live=1),
        TableFacts("attachments", live_rows=6, backup_rows=6, created_after=0, modified_after=0, missing_from_live=0),
    ])
    assert summary.discards == 5
    assert summary.sentence == (
        "going back to backup 20260301T020000Z-aaaaaa (90 min before this measurement) discards what the live "
        "database received since: 3 moves created and 1 changed, 1 invoices created and 0 changed, 0 attachments "
        "created and 0 changed; it brings back 8 moves, 1 invoices missing from the live database")
    assert TableFacts.from_json(summary.to_json()["tables"][0]) == summary.tables[0]


# ---- the cutover state machine -------------------------------------------------------------------

NAMES = DatabaseNames.of("odoo_acme", T0)
MARK = marker("run-1", "20260301T020000Z-aaaaaa")
World = dict[str, DatabaseState]


def staged_world(live_sessions: int = 3) -> World:
    return {NAMES.live: DatabaseState(NAMES.live, True, "", live_sessions),
            NAMES.staged: DatabaseState(NAMES.staged, True, MARK, 0)}


def observe(world: World) -> CutoverObservation:
    return CutoverObservation(NAMES, MARK, world.get(NAMES.live), world.get(NAMES.staged),
                              world.get(NAMES.pre_recovery))


def rename(world: World, old: str, new: str) -> World:
    assert new not in world, f"rename onto existing {new}"
    out = {k: v for k, v in world.items() if k != old}
    out[new] = replace(world[old], name=new)
    return out


def apply(world: World, action: CutoverAction, half: bool = False) -> World:
    """What the adapter does to pg_database; ``half`` stops a non-atomic action midway (a crash)."""
    n = NAMES
    if action is CutoverAction.FENCE_LIVE:
        return {k: (replace(v, allow_connections=False, sessions=0) if k in (n.live, n.staged) else v)
                for k, v in world.items()}
    if action in (CutoverAction.UNFENCE_LIVE, CutoverAction.REOPEN_LIVE):
        return {k: (replace(v, allow_connections=True) if k == n.live else v) for k, v in world.items()}
    if action is CutoverAction.SWAP:
        return world if half else rename(rename(world, n.live, n.pre_recovery), n.staged, n.live)  # atomic
    if action is CutoverAction.SWAP_BACK:
        return world if half else rename(rename(world, n.live, n.staged), n.pre_recovery, n.live)
    if action is CutoverAction.FINISH_SWAP:
        return rename(world, n.staged, n.live)
    if action is CutoverAction.UNDO_SET_ASIDE:
        return rename(world, n.pre_recovery, n.live)
    raise AssertionError(action)


def drive(world: World, target: CutoverPosition, crash_at: int | None = None) -> World:
    for i in range(10):
        position, _ = cutover_position(observe(world))
        action = next_cutover_action(position, target)
        if action is None:
            return world
        world = apply(world, action, half=(i == crash_at))
        if i == crash_at:
            return world
    raise AssertionError("did not converge")


def half_swapped() -> World:
    """live set aside, staged not yet in place: what a non-atomic swap killed between its renames leaves."""
    fenced = apply(staged_world(), CutoverAction.FENCE_LIVE)
    return rename(fenced, NAMES.live, NAMES.pre_recovery)


def test_forward_drive_fences_swaps_and_reopens_in_order() -> None:
    world = staged_world()
    seen = []
    for target in (CutoverPosition.FENCED, CutoverPosition.SWAPPED, CutoverPosition.REOPENED):
        world = drive(world, target)
        seen.append(cutover_position(observe(world))[0])
    assert seen == [CutoverPosition.FENCED, CutoverPosition.SWAPPED, CutoverPosition.REOPENED]
    assert world[NAMES.live].marker == MARK and world[NAMES.pre_recovery].marker == ""
    assert NAMES.staged not in world and live_count(observe(world)) == 1


def test_closed_live_with_sessions_left_is_not_yet_fenced() -> None:
    world = {**staged_world(), NAMES.live: DatabaseState(NAMES.live, False, "", 2)}
    assert cutover_position(observe(world))[0] is CutoverPosition.STAGED
    assert next_cutover_action(CutoverPosition.STAGED, CutoverPosition.FENCED) is CutoverAction.FENCE_LIVE


def test_half_swapped_resumes_forward_to_exactly_one_live_database() -> None:
    world = drive(half_swapped(), CutoverPosition.REOPENED)
    assert cutover_position(observe(world))[0] is CutoverPosition.REOPENED
    assert world[NAMES.live].marker == MARK and NAMES.pre_recovery in world


def test_half_swapped_rolls_back_to_the_original_live_database() -> None:
    world = drive(half_swapped(), CutoverPosition.STAGED)
    assert cutover_position(observe(world))[0] is CutoverPosition.STAGED
    assert world[NAMES.live].marker == "" and world[NAMES.live].allow_connections


def test_rollback_from_reopened_puts_the_original_back_under_the_live_name() -> None:
    world = drive(staged_world(), CutoverPosition.REOPENED)
    world = drive(world, CutoverPosition.STAGED)
    assert world[NAMES.live].marker == "" and world[NAMES.staged].marker == MARK
    assert NAMES.pre_recovery not in world and resting_refusal(observe(world)) is None


POSITIONS = [CutoverPosition.STAGED, CutoverPosition.FENCED, CutoverPosition.SWAPPED, CutoverPosition.REOPENED]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(POSITIONS), st.one_of(st.none(), st.integers(0, 4))), min_size=1,
                max_size=8), st.booleans())
def test_any_sequence_of_targets_and_crashes_ends_with_exactly_one_live_database(
        moves: list[tuple[CutoverPosition, int | None]], start_half: bool) -> None:
    world = half_swapped() if start_half else staged_world()
    for target, crash_at in moves:
        world = drive(world, target, crash_at)
        position, why = cutover_position(observe(world))
        assert position is not CutoverPosition.UNKNOWN, why
        assert sum(1 for name in world if name == NAMES.live) <= 1
    final = moves[-1][0]
    world = drive(world, final)  # the resumed step (a restarted activity) always gets there
    assert cutover_position(observe(world))[0] is final
    assert NAMES.live in world and resting_refusal(observe(world)) is None
    marked = [d for d in world.values() if d.marker == MARK]
    assert len(marked) == 1, "the recovered copy was lost or duplicated"


def test_forward_step_rerun_after_the_cutover_went_further_does_not_walk_back() -> None:
    assert next_cutover_action(CutoverPosition.REOPENED, CutoverPosition.SWAPPED, forward_only=True) is None
    assert next_cutover_action(CutoverPosition.SWAPPED, CutoverPosition.FENCED, forward_only=True) is None
    assert next_cutover_action(CutoverPosition.REOPENED, CutoverPosition.SWAPPED) is CutoverAction.FENCE_LIVE


def test_states_this_recovery_did_not_make_stop_the_cutover() -> None:
    nothing = CutoverObservation(NAMES, MARK, None, None, None)
    position, why = cutover_position(nothing)
    assert position is CutoverPosition.UNKNOWN and "a person must look" in why
    with pytest.raises(ContinuityError, match="a person must look"):
        next_cutover_action(position, CutoverPosition.REOPENED)
    other = {NAMES.live: DatabaseState(NAMES.live, True), NAMES.staged: DatabaseState(NAMES.staged, True, "other")}
    assert cutover_position(observe(other))[0] is CutoverPosition.UNKNOWN
    assert resting_refusal(CutoverObservation(NAMES, MARK, None, None, None)) is not None


def test_half_swapped_is_never_a_place_to_rest() -> None:
    with pytest.raises(ContinuityError):
        next_cutover_action(CutoverPosition.FENCED, CutoverPosition.HALF_SWAPPED)
    assert "no database is named" in str(resting_refusal(observe(half_swapped())))


def test_sessions_still_on_the_original_after_reopen_are_two_writers() -> None:
    world = drive(staged_world(), CutoverPosition.REOPENED)
    world[NAMES.pre_recovery] = replace(world[NAMES.pre_recovery], sessions=2)
    assert "two databases would take the tenant's writes" in str(resting_refusal(observe(world)))


# ---- timings --------------------------------------------------------------------------------------


def test_timings_split_request_approval_and_steps() -> None:
    def step(name: StepName, start: float, end: float) -> StepTiming:
        return StepTiming(name, T0 + timedelta(seconds=start), T0 + timedelta(seconds=end), True, "")

    steps = [step(StepName.STAGE, 0, 5), step(StepName.CHECKS, 5, 7), step(StepName.FENCE, 20, 20.5),
             step(StepName.SWAP, 20.5, 21), step(StepName.REOPEN, 21, 21.25), step(StepName.VERIFY, 21.25, 22)]
    out = timings(T0, T0 + timedelta(seconds=19), steps, T0 + timedelta(seconds=23), MILESTONES)
    assert out["approval_wait"] == 19 and out["stage"] == 5 and out["swap"] == 0.5
    assert out["approval_to_live"] == 2.25 and out["tenant_unavailable"] == 1.25 and out["total"] == 23
