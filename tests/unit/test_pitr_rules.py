"""The pure rules of point-in-time recovery from our WAL archive (continuity.pitr.rules), with hypothesis
properties for the segment arithmetic and the recovery window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from continuity.pitr.rules import (
    ArchivedSegment,
    BaseBackup,
    choose_base_backup,
    first_gap,
    missing_segment_from_log,
    point_in_time_refusal,
    recovery_settings,
    restore_point_name,
    segment_after,
    segment_name,
    segment_number,
    segments_between,
    stop_time_from_log,
    window_of,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def backup(backup_id: str, begin: str, end_minutes: int, status: str = "DONE") -> BaseBackup:
    return BaseBackup(backup_id=backup_id, status=status, begin_time=T0 + timedelta(minutes=end_minutes - 1),
                      end_time=T0 + timedelta(minutes=end_minutes), begin_wal=begin, end_wal=begin, timeline=1,
                      size=1, system_identifier="1")


def seg(n: int, minutes: int) -> ArchivedSegment:
    return ArchivedSegment(segment_name(1, n // 256, n % 256), T0 + timedelta(minutes=minutes), 16)


def test_segment_after_crosses_the_log_boundary() -> None:
    assert segment_after("0000000100000000000000FE") == "0000000100000000000000FF"
    assert segment_after("0000000100000000000000FF") == "000000010000000100000000"
    with pytest.raises(ValueError, match="not a WAL segment"):
        segment_after("../../etc/passwd")


@given(st.integers(0, 5000), st.integers(0, 600))
def test_segments_between_is_contiguous_and_inclusive(start: int, length: int) -> None:
    first = segment_name(1, start // 256, start % 256)
    last_n = start + length
    last = segment_name(1, last_n // 256, last_n % 256)
    names = segments_between(first, last)
    assert len(names) == length + 1 and names[0] == first and names[-1] == last
    assert [segment_number(n) for n in names] == list(range(start, last_n + 1))


@given(st.integers(0, 3000), st.integers(1, 300), st.data())
def test_first_gap_finds_the_first_missing_segment_or_none(start: int, length: int, data: st.DataObject) -> None:
    names = segments_between(segment_name(1, start // 256, start % 256),
                             segment_name(1, (start + length) // 256, (start + length) % 256))
    removed = data.draw(st.sets(st.sampled_from(names), max_size=3))
    kept = [n for n in names if n not in removed]
    gap = first_gap(kept, names[0], names[-1])
    assert gap == (min(removed, key=segment_number) if removed else None)


def test_window_runs_from_the_oldest_usable_base_backup_to_the_newest_segment() -> None:
    backups = [backup("b1", segment_name(1, 0, 2), 1), backup("b2", segment_name(1, 0, 5), 10),
               backup("failed", segment_name(1, 0, 1), 0, status="FAILED")]
    segments = [seg(n, n) for n in range(2, 9)]
    window = window_of("s", backups, segments)
    assert window.restorable and window.gap is None
    assert window.earliest == T0 + timedelta(minutes=1)
    assert window.latest == T0 + timedelta(minutes=10)  # b2's end: newer than the newest segment's arrival
    assert window.oldest_base_backup == "b1" and window.newest_base_backup == "b2"


def test_right_after_a_base_backup_the_window_is_its_end_not_empty() -> None:
    # barman-cloud-backup waits for its last segment to be archived, then ends; storage times are whole seconds.
    just_taken = [backup("b1", segment_name(1, 0, 2), 10)]
    window = window_of("s", just_taken, [seg(2, 9), seg(3, 9)])
    assert window.restorable and window.earliest == window.latest == T0 + timedelta(minutes=10)


def test_a_gap_cuts_off_the_base_backups_before_it() -> None:
    backups = [backup("b1", segment_name(1, 0, 2), 1), backup("b2", segment_name(1, 0, 6), 10)]
    segments = [seg(n, n) for n in range(2, 10) if n != 4]
    window = window_of("s", backups, segments)
    assert window.gap == segment_name(1, 0, 4)
    assert window.oldest_base_backup == "b2" and window.earliest == T0 + timedelta(minutes=10)
    only_before = window_of("s", backups[:1], segments)
    assert not only_before.restorable and only_before.gap == segment_name(1, 0, 4)


def test_choose_base_backup_needs_one_that_ended_before_the_target() -> None:
    backups = [backup("b1", segment_name(1, 0, 2), 1), backup("b2", segment_name(1, 0, 6), 10)]
    assert choose_base_backup(backups, T0 + timedelta(minutes=5)).backup_id == "b1"  # type: ignore[union-attr]
    assert choose_base_backup(backups, T0 + timedelta(minutes=11)).backup_id == "b2"  # type: ignore[union-attr]
    assert choose_base_backup(backups, T0 + timedelta(minutes=10)).backup_id == "b1"  # type: ignore[union-attr]
    assert choose_base_backup(backups, T0) is None


def test_refusals_say_why_a_target_cannot_be_served() -> None:
    backups = [backup("b1", segment_name(1, 0, 2), 1)]
    window = window_of("weu-primary", backups, [seg(n, n) for n in range(2, 9)])
    now = T0 + timedelta(minutes=30)
    assert point_in_time_refusal(window, T0 + timedelta(minutes=5), now) is None
    assert "in the future" in str(point_in_time_refusal(window, now + timedelta(minutes=1), now))
    assert "before the earliest restorable point" in str(point_in_time_refusal(window, T0, now))
    assert "after the newest archived WAL" in str(point_in_time_refusal(window, T0 + timedelta(minutes=20), now))
    assert point_in_time_refusal(window, T0 + timedelta(minutes=20), now, live_can_ship=True) is None
    assert "time zone" in str(point_in_time_refusal(window, datetime(2026, 11, 30, 12, 5), now))
    empty = window_of("weu-primary", [], [seg(2, 2)])
    assert "no complete base backup" in str(point_in_time_refusal(empty, T0, now))


def test_recovery_settings_never_listen_on_tcp_nor_archive() -> None:
    conf = recovery_settings(port=5999, socket_dir="/tmp/s", restore_command="/x/restore-wal %f %p", target=T0)
    assert conf["listen_addresses"] == "''" and conf["archive_mode"] == "off"
    assert conf["recovery_target_time"] == "'2026-11-30T12:00:00+00:00'"
    assert conf["recovery_target_action"] == "'promote'"
    named = recovery_settings(port=5999, socket_dir="/tmp/s", restore_command="r", target=None, target_name="p-1")
    assert named["recovery_target_name"] == "'p-1'" and "recovery_target_time" not in named
    with pytest.raises(ValueError, match="span lines"):
        recovery_settings(port=1, socket_dir="/tmp/s\nrestore_command='sh'", restore_command="r", target=T0)
    assert recovery_settings(port=1, socket_dir="/tmp/o'k", restore_command="r", target=T0)[
        "unix_socket_directories"] == "'/tmp/o''k'"


def test_restore_point_names_are_tame() -> None:
    assert restore_point_name("proof-weu-primary-20261130T0200") == "continuity-proof-weu-primary-20261130t0200"
    assert restore_point_name("'; drop table x; --") == "continuity-drop-table-x"


def test_log_parsing() -> None:
    log = ("LOG:  recovery stopping before commit of transaction 737, time 2026-11-30 11:27:21.780312+00\n"
           "ERROR: WAL file 00000002.history for server p does not exist\n"
           "ERROR: WAL file 00000001000000000000000C for server p does not exist\n")
    assert stop_time_from_log(log) == datetime(2026, 11, 30, 11, 27, 21, 780312, tzinfo=UTC)
    assert missing_segment_from_log(log) == "00000001000000000000000C"
    assert stop_time_from_log("nothing") is None


# ---- retention of the archive: properties -----------------------------------------------------------------

backups_strategy = st.lists(st.tuples(st.integers(0, 60 * 24 * 60), st.booleans()), min_size=0, max_size=12,
                            unique_by=lambda t: t[0])


def _backups(raw: list[tuple[int, bool]]) -> list[BaseBackup]:
    out = []
    for i, (minutes, done) in enumerate(sorted(raw)):
        n = 2 + i * 3
        out.append(BaseBackup(backup_id=f"b{i:02d}", status="DONE" if done else "FAILED",
                              begin_time=T0 + timedelta(minutes=minutes) - timedelta(seconds=30),
                              end_time=T0 + timedelta(minutes=minutes), begin_wal=segment_name(1, 0, n),
                              end_wal=segment_name(1, 0, n), timeline=1, size=1, system_identifier="1"))
    return out


@given(backups_strategy, st.integers(0, 60), st.integers(1, 5), st.integers(0, 40), st.integers(0, 90 * 24 * 60))
def test_archive_retention_never_breaks_a_promise(raw: list[tuple[int, bool]], window: int, minimum: int,
                                                  immutable: int, now_minutes: int) -> None:
    from continuity.pitr.rules import plan_archive_retention

    backups = _backups(raw)
    now = T0 + timedelta(minutes=max(now_minutes, max((m for m, _ in raw), default=0)))
    plan = plan_archive_retention(backups, window_days=window, min_base_backups=minimum, immutable_days=immutable,
                                  now=now)
    done = [b for b in backups if b.done]
    kept = [b for b in done if b.backup_id in plan.keep]
    deleted = {b for b, _ in plan.delete}
    assert deleted <= {b.backup_id for b in done} and not deleted & set(plan.keep)
    # 1. Every second of the promised window that was restorable still is.
    targets = [plan.promised_from, now] + [b.end_time + timedelta(seconds=1) for b in done]
    for target in (t for t in targets if plan.promised_from <= t <= now):
        if any(b.end_time < target for b in done):
            assert any(b.end_time < target for b in kept), target
    # 2. The newest `minimum` complete base backups stay.
    assert {b.backup_id for b in sorted(done, key=lambda b: b.end_time)[-minimum:]} <= set(plan.keep)
    # 3. Nothing inside its immutability period is deleted.
    assert all(b.end_time + timedelta(days=immutable) <= now for b in done if b.backup_id in deleted)
    # 4. WAL is kept from the oldest kept base backup's first segment: every kept backup can replay.
    if kept:
        assert plan.wal_kept_from is not None
        assert all(segment_number(plan.wal_kept_from) <= segment_number(b.begin_wal) for b in kept)
    # 5. Backups not complete are never deleted by the plan (Barman judges them).
    assert not deleted & {b.backup_id for b in backups if not b.done}


def test_a_base_backup_that_never_finished_is_listed_as_not_done_not_a_crash() -> None:
    """barman-cloud-backup killed mid-way (make run interrupted, a host lost) leaves a backup.info with no end:
    every reader of the archive (window, proof, retention, RPO) must go on, counting only finished ones."""
    from continuity.adapters.tools.barman_cloud import parse_backup

    started = parse_backup({"backup_id": "20261130T165501", "status": "STARTED",
                            "begin_time": "Mon Nov 30 16:55:01 2026", "end_time": None, "begin_wal": None})
    assert not started.done and started.end_time == started.begin_time == datetime(2026, 11, 30, 16, 55, 1,
                                                                                   tzinfo=UTC)
    bare = parse_backup({"backup_id": "20261130T165502", "status": "EMPTY"})
    assert not bare.done and bare.begin_wal == ""
    done = parse_backup({"backup_id": "20261130T120930", "status": "DONE", "begin_time": "Mon Nov 30 12:09:30 2026",
                         "end_time": "Mon Nov 30 12:10:01 2026", "begin_wal": "000000010000000000000003",
                         "end_wal": "000000010000000000000003"})
    assert done.done and done.end_time == datetime(2026, 11, 30, 12, 10, 1, tzinfo=UTC)
