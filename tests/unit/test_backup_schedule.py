"""Backups on each tier's schedule (pure rules), the tiers' schedule refused at load when it cannot meet the
RPO, the RPO exposure measured from the WAL archive, and what makes a recovery chain broken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from continuity.backups.schedule import (
    BackupKind,
    base_backups_due,
    decide,
    dumps_due,
    phase_of,
    server_intervals,
    slot_start,
)
from continuity.incidents.chain import ArchiverState, ChainCause, archiver_failing, chain_break, restorable_until
from continuity.kernel.errors import ConfigError
from continuity.kernel.tenants import load_registry
from continuity.pitr.rules import ArchivedSegment, BaseBackup, window_of
from continuity.validation.service import recoverability

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 30, 14, 32, 7, tzinfo=UTC)

moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))
intervals = st.integers(min_value=5, max_value=10080).map(lambda m: timedelta(minutes=m))
tenant_ids = st.from_regex(r"^[a-z][a-z0-9-]{1,20}$", fullmatch=True)


# ---- the schedule ---------------------------------------------------------------------------------------


@given(tenant_ids, intervals, moments, st.integers(min_value=0, max_value=10**7))
def test_a_tenant_whose_last_dump_is_older_than_its_interval_is_always_due(
        tenant: str, interval: timedelta, now: datetime, extra_s: int) -> None:
    newest = now - interval - timedelta(seconds=extra_s)
    decision = decide(BackupKind.DUMP, tenant, interval, newest, now)
    assert decision.due, decision.reason


@given(tenant_ids, intervals, moments, st.floats(min_value=0, max_value=1, exclude_max=True))
def test_nothing_is_due_twice_in_one_slot(tenant: str, interval: timedelta, now: datetime, later: float) -> None:
    first = decide(BackupKind.DUMP, tenant, interval, None, now)
    assert first.due
    # Taken at `now`; asked again at any moment left in the same slot: not due.
    # (timedelta * float rounds to the microsecond: a `later` just below 1 would land on the next slot itself)
    again_at = min(now + (first.next_slot - now) * later, first.next_slot - timedelta(microseconds=1))
    again = decide(BackupKind.DUMP, tenant, interval, now, again_at)
    assert again.slot_start == first.slot_start
    assert not again.due, again.reason
    # ... and due again in the next slot.
    assert decide(BackupKind.DUMP, tenant, interval, now, first.next_slot).due


@given(tenant_ids, intervals, moments)
def test_a_slot_holds_now_and_is_one_interval_long(tenant: str, interval: timedelta, now: datetime) -> None:
    start = slot_start(now, interval, phase_of(tenant, interval))
    assert start <= now < start + interval
    assert timedelta(0) <= phase_of(tenant, interval) < interval


def test_a_dump_taken_late_in_its_slot_does_not_push_the_next_one_later() -> None:
    hour = timedelta(hours=1)
    start = slot_start(NOW, hour, phase_of("acme-finance", hour))
    taken = start + timedelta(minutes=50)
    assert not decide(BackupKind.DUMP, "acme-finance", hour, taken, start + timedelta(minutes=55)).due
    assert decide(BackupKind.DUMP, "acme-finance", hour, taken, start + hour).due  # 10 min later, a new slot


def test_decisions_say_why() -> None:
    [never, fresh] = dumps_due({"acme-finance": 60, "globex": 240}, {"globex": NOW - timedelta(minutes=1)}, NOW)
    assert never.due and never.reason == "acme-finance: dump due: none taken yet (every 60 min)"
    assert not fresh.due and fresh.reason.startswith("globex: dump not due: newest is 1 min old, taken in this slot")
    [base] = base_backups_due({"weu-primary": 24}, {"weu-primary": NOW - timedelta(hours=30)}, NOW)
    assert base.due and base.kind is BackupKind.BASE_BACKUP
    assert base.reason.startswith("weu-primary: base backup due: newest is 30.0 h old, taken before this slot")


def test_a_server_takes_base_backups_as_often_as_its_most_demanding_tier() -> None:
    assert server_intervals([("weu", 168), ("weu", 24), ("neu", 168)]) == {"weu": 24, "neu": 168}


# ---- the tiers' schedules in the registry ------------------------------------------------------------------


def _registry(tmp_path: Path, mutate: object) -> Path:
    data = yaml.safe_load((ROOT / "config" / "tenants.yaml").read_text())
    mutate(data)  # type: ignore[operator]
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_tiers_declare_their_schedules_and_defaults_are_daily() -> None:
    registry = load_registry(ROOT / "config" / "tenants.yaml")
    assert registry.tiers["gold"].schedule.dump_minutes == 60
    assert registry.tiers["gold"].schedule.base_backup_hours == 24
    assert registry.tiers["silver"].schedule.dump_minutes == 240
    assert registry.tiers["bronze"].schedule.dump_minutes == 1440
    from continuity.kernel.tenants import BackupSchedule

    assert (BackupSchedule().dump_minutes, BackupSchedule().base_backup_hours) == (1440, 24)


def test_dumps_rarer_than_the_rpo_on_a_server_without_wal_archiving_are_refused_naming_tier_and_field(
        tmp_path: Path) -> None:
    def on_the_replica(data: dict) -> None:
        data["tenants"][1]["server"] = "neu-replica"  # globex, silver: RPO 60 min, a dump every 240 min

    with pytest.raises(ConfigError) as err:
        load_registry(_registry(tmp_path, on_the_replica))
    message = str(err.value)
    assert "tier silver: field schedule.dump_minutes: a dump every 240 min cannot meet the RPO of 60 min of " \
           "tenant globex, whose server 'neu-replica' archives no WAL" in message


def test_the_same_schedule_is_accepted_on_a_server_that_archives_wal(tmp_path: Path) -> None:
    registry = load_registry(_registry(tmp_path, lambda data: None))
    assert registry.servers["weu-primary"].archives_wal and not registry.servers["neu-replica"].archives_wal


@pytest.mark.parametrize("field,value", [("dump_minutes", 0), ("dump_minutes", 4), ("base_backup_hours", 0),
                                         ("unknown", 1)])
def test_a_bad_schedule_field_is_refused_naming_it(tmp_path: Path, field: str, value: int) -> None:
    def bad(data: dict) -> None:
        data["tiers"]["gold"]["schedule"] = {field: value}

    with pytest.raises(ConfigError) as err:
        load_registry(_registry(tmp_path, bad))
    assert f"tier gold: field schedule.{field}" in str(err.value)


# ---- RPO measured from the archive -------------------------------------------------------------------------


def _backup(backup_id: str, begin: str, end: str, ended: datetime) -> BaseBackup:
    return BaseBackup(backup_id, "DONE", ended - timedelta(minutes=1), ended, begin, end, 1, 10, "7")


def _segments(names: list[str], first_at: datetime) -> list[ArchivedSegment]:
    return [ArchivedSegment(n, first_at + timedelta(minutes=i), 16) for i, n in enumerate(names)]


SEGS = [f"0000000100000000000000{i:02X}" for i in range(1, 9)]
VALIDATED = {"backup_id": "b1", "within_objectives": True, "reason": "ok"}


def test_exposure_on_an_archived_server_is_now_minus_the_newest_archived_wal_not_the_dump_age() -> None:
    window = window_of("weu-primary", [_backup("base1", SEGS[0], SEGS[1], NOW - timedelta(hours=5))],
                       _segments(SEGS, NOW - timedelta(minutes=10)))
    assert window.latest == NOW - timedelta(minutes=3)
    standing = recoverability("acme", 60, 15, ("b1", NOW - timedelta(hours=6)), VALIDATED, NOW, window)
    assert standing["rpo_exposure"] == {"source": "archive", "seconds": 180.0,
                                        "newest_archived_wal": window.latest.isoformat()}
    assert standing["newest_backup"]["rpo_met"] and standing["recoverable_within_objectives"]
    assert "newest archived WAL is 3.0 min old (RPO 15 min)" in standing["reason"]


def test_a_stale_archive_misses_the_rpo_even_with_a_fresh_dump() -> None:
    window = window_of("weu-primary", [_backup("base1", SEGS[0], SEGS[1], NOW - timedelta(hours=5))],
                       _segments(SEGS, NOW - timedelta(hours=1)))
    standing = recoverability("acme", 60, 15, ("b1", NOW - timedelta(minutes=1)), VALIDATED, NOW, window)
    assert not standing["recoverable_within_objectives"]
    assert standing["reason"] == "newest archived WAL is 53.0 min old, RPO is 15 min"


def test_an_archive_that_cannot_be_rewound_leaves_the_dump_age_and_says_why() -> None:
    segments = [s for s in _segments(SEGS, NOW - timedelta(minutes=10)) if s.name != SEGS[1]]
    window = window_of("weu-primary", [_backup("base1", SEGS[0], SEGS[2], NOW - timedelta(hours=5))], segments)
    standing = recoverability("acme", 60, 15, ("b1", NOW - timedelta(minutes=30)), VALIDATED, NOW, window)
    assert standing["rpo_exposure"]["source"] == "dump"
    assert standing["reason"] == (f"newest backup is 30.0 min old (the WAL archive of weu-primary cannot be "
                                  f"rewound: segment {SEGS[1]} is missing), RPO is 15 min")
    unread = recoverability("acme", 60, 15, ("b1", NOW - timedelta(minutes=5)), VALIDATED, NOW, "store down")
    assert unread["rpo_exposure"]["source"] == "dump" and unread["recoverable_within_objectives"]


def test_without_an_archive_the_exposure_is_the_dump_age() -> None:
    standing = recoverability("acme", 60, 15, ("b1", NOW - timedelta(minutes=20)), VALIDATED, NOW)
    assert standing["rpo_exposure"] == {"source": "dump", "seconds": 1200.0, "newest_archived_wal": None}
    assert standing["reason"] == "newest backup is 20.0 min old, RPO is 15 min"


# ---- a broken recovery chain ---------------------------------------------------------------------------------


def _archiver(ok_at: datetime | None, failed_at: datetime | None, failed: int = 0) -> ArchiverState:
    return ArchiverState(10, SEGS[3] if ok_at else None, ok_at, failed, SEGS[4] if failed_at else None, failed_at)


def test_a_missing_segment_breaks_the_chain_naming_it() -> None:
    segments = [s for s in _segments(SEGS, NOW - timedelta(minutes=10)) if s.name != SEGS[4]]
    window = window_of("weu-primary", [_backup("base1", SEGS[0], SEGS[1], NOW - timedelta(hours=5))], segments)
    brk = chain_break(window, _archiver(NOW, None))
    assert brk is not None and brk.cause is ChainCause.MISSING_SEGMENT and brk.segment == SEGS[4]
    assert brk.key == f"weu-primary-missing-segment-{SEGS[4]}"
    assert brk.reason.startswith(f"WAL segment {SEGS[4]} of weu-primary is missing from the archive")
    # Replay from the base backup reaches at least its own end, not the newest segment past the gap.
    assert restorable_until(window, [_backup("base1", SEGS[0], SEGS[1], NOW - timedelta(hours=5))],
                            [s.name for s in segments]) == NOW - timedelta(hours=5)


def test_a_base_backup_after_the_gap_restores_recent_targets() -> None:
    backups = [_backup("base1", SEGS[0], SEGS[1], NOW - timedelta(hours=5)),
               _backup("base2", SEGS[5], SEGS[6], NOW - timedelta(minutes=5))]
    segments = [s for s in _segments(SEGS, NOW - timedelta(minutes=10)) if s.name != SEGS[4]]
    window = window_of("weu-primary", backups, segments)
    assert window.gap == SEGS[4]  # older targets across the gap stay lost
    assert restorable_until(window, backups, [s.name for s in segments]) == window.latest


def test_a_failing_archiver_breaks_the_chain_before_any_gap() -> None:
    window = window_of("weu-primary", [_backup("base1", SEGS[0], SEGS[1], NOW - timedelta(hours=5))],
                       _segments(SEGS, NOW - timedelta(minutes=10)))
    assert chain_break(window, _archiver(NOW - timedelta(minutes=5), NOW - timedelta(minutes=10))) is None
    brk = chain_break(window, _archiver(NOW - timedelta(minutes=10), NOW - timedelta(minutes=1), failed=4))
    assert brk is not None and brk.cause is ChainCause.ARCHIVER_FAILING and brk.segment == SEGS[4]
    assert "the WAL archiver of weu-primary is failing" in brk.reason and "4 failures" in brk.reason
    assert archiver_failing(_archiver(None, NOW))  # never archived, failed once
    assert archiver_failing(_archiver(NOW, NOW - timedelta(minutes=1), failed=3), previous_failed_count=2)
    assert not archiver_failing(_archiver(NOW, None))
