"""Checkpoints and storage-only verification: what storage alone proves about the chain's tail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from continuity.evidence.chain import (
    EMPTY_HEAD,
    GENESIS_HASH,
    BreakKind,
    ChainHead,
    Checkpoint,
    EvidenceInvalid,
    EvidenceRecord,
    build_checkpoint,
    build_record,
    checkpoint_blob_name,
    checkpoint_due,
    parse_head,
    seq_from_checkpoint_name,
    verify_checkpoints,
    verify_storage,
)

T0 = datetime(2025, 3, 1, 2, 0, 0, tzinfo=UTC)


def make_chain(n: int, start: ChainHead = EMPTY_HEAD, actor: str = "nightly-20250301") -> list[EvidenceRecord]:
    head, out = start, []
    for i in range(n):
        record = build_record(head, at=T0 + timedelta(seconds=head.seq + 1), actor=actor, action="test.appended",
                              subject=f"item {head.seq + 1}", data={"i": i})
        out.append(record)
        head = record.head
    return out


def checkpoints_of(records: list[EvidenceRecord], every: int) -> list[Checkpoint]:
    out: list[Checkpoint] = []
    for record in records:
        if checkpoint_due(record.seq, every):
            out.append(build_checkpoint(record.head, out[-1] if out else None, T0 + timedelta(hours=record.seq)))
    return out


def stored(items: list[EvidenceRecord] | list[Checkpoint]) -> list[tuple[int, bytes]]:
    return [(item.seq, item.to_bytes()) for item in items]


def test_intact_chain_reaching_every_checkpoint_verifies() -> None:
    records = make_chain(7)
    marks = checkpoints_of(records, 3)
    result = verify_storage(stored(records), stored(marks))
    assert result.ok
    assert [c.seq for c in result.checkpoints] == [3, 6]
    assert result.records.head == records[-1].head
    assert result.to_json()["newest_checkpoint"]["seq"] == 6


def test_checkpoints_chain_to_the_one_before() -> None:
    marks = checkpoints_of(make_chain(6), 3)
    assert marks[0].prev_checkpoint_hash == GENESIS_HASH
    assert marks[1].prev_checkpoint_hash == marks[0].checkpoint_hash
    assert Checkpoint.from_json(json.loads(marks[1].to_bytes())) == marks[1]


def test_tail_deleted_below_a_checkpoint_is_a_truncation() -> None:
    records = make_chain(7)
    marks = checkpoints_of(records, 3)
    result = verify_storage(stored(records[:4]), stored(marks))  # records 5..7 gone, checkpoint 6 stands
    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (5, BreakKind.TRUNCATED)
    assert "records 5..6 deleted (tail truncated)" in result.problem.reason
    assert result.records.head == records[3].head


def test_tail_rewritten_with_recomputed_hashes_disagrees_with_a_checkpoint() -> None:
    records = make_chain(7)
    marks = checkpoints_of(records, 3)
    # An attacker rewrites history from record 2 on, recomputing every hash: the records alone look intact.
    forged = records[:1] + make_chain(6, start=records[0].head, actor="mallory")
    assert verify_storage(stored(forged), []).ok
    result = verify_storage(stored(forged), stored(marks))
    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (3, BreakKind.REWRITTEN)


def test_a_rewrite_after_the_newest_checkpoint_needs_a_published_head_to_show() -> None:
    records = make_chain(7)
    marks = checkpoints_of(records, 3)
    forged = records[:6] + make_chain(1, start=records[5].head, actor="mallory")
    assert verify_storage(stored(forged), stored(marks)).ok  # the limit: nothing in storage vouches for 7
    result = verify_storage(stored(forged), stored(marks), expected=records[-1].head)
    assert result.problem is not None and (result.problem.seq, result.problem.kind) == (7, BreakKind.REWRITTEN)


def test_expected_head_must_be_reached_with_the_same_hash() -> None:
    records = make_chain(5)
    assert verify_storage(stored(records), [], expected=records[2].head).ok  # the chain grew past it: fine
    beyond = verify_storage(stored(records), [], expected=ChainHead(8, "a" * 64))
    assert beyond.problem is not None and (beyond.problem.seq, beyond.problem.kind) == (6, BreakKind.TRUNCATED)
    other = verify_storage(stored(records), [], expected=ChainHead(4, "a" * 64))
    assert other.problem is not None and (other.problem.seq, other.problem.kind) == (4, BreakKind.REWRITTEN)


def test_a_gap_before_the_checkpoint_is_reported_as_the_deletion_it_is() -> None:
    records = make_chain(7)
    marks = checkpoints_of(records, 3)
    result = verify_storage(stored(records[:1] + records[2:]), stored(marks))
    assert result.problem is not None and (result.problem.seq, result.problem.kind) == (2, BreakKind.DELETED)


def test_edited_checkpoint_is_refused() -> None:
    marks = checkpoints_of(make_chain(6), 3)
    raw = json.loads(marks[1].to_bytes())
    raw["seq"] = 5
    walk = verify_checkpoints([(3, marks[0].to_bytes()), (6, json.dumps(raw).encode())])
    assert walk.problem is not None and walk.problem.kind is BreakKind.CHECKPOINT_INVALID
    assert "does not match its checkpoint_hash" in walk.problem.reason
    assert [c.seq for c in walk.checkpoints] == [3]


def test_deleted_middle_checkpoint_breaks_the_checkpoint_chain() -> None:
    marks = checkpoints_of(make_chain(9), 3)
    walk = verify_checkpoints(stored([marks[0], marks[2]]))
    assert walk.problem is not None and (walk.problem.seq, walk.problem.kind) == (9, BreakKind.CHECKPOINT_INVALID)
    assert "does not link to the checkpoint at seq 3" in walk.problem.reason


def test_unreadable_checkpoint_is_refused() -> None:
    walk = verify_checkpoints([(3, b"not json")])
    assert walk.problem is not None and walk.problem.kind is BreakKind.CHECKPOINT_INVALID


def test_checkpoint_cadence_and_names() -> None:
    assert [s for s in range(0, 8) if checkpoint_due(s, 3)] == [3, 6]
    assert not any(checkpoint_due(s, 0) for s in range(10))
    assert checkpoint_blob_name(42) == "checkpoints/000000000042.json"
    assert seq_from_checkpoint_name("checkpoints/000000000042.json") == 42
    assert seq_from_checkpoint_name("records/000000000042.json") is None


def test_checkpoint_must_follow_the_previous_one() -> None:
    records = make_chain(6)
    first = build_checkpoint(records[5].head, None, T0)
    with pytest.raises(EvidenceInvalid, match="cannot follow"):
        build_checkpoint(records[2].head, first, T0)
    with pytest.raises(EvidenceInvalid, match="empty chain"):
        build_checkpoint(EMPTY_HEAD, None, T0)


def test_parse_head_reads_seq_colon_hash_and_names_the_form_otherwise() -> None:
    assert parse_head(f"42:{'ab' * 32}") == ChainHead(42, "ab" * 32)
    for bad in ("42", f"0:{'a' * 64}", f"x:{'a' * 64}", "42:ABC", f"４２:{'a' * 64}", f"42:{'A' * 64}"):
        with pytest.raises(EvidenceInvalid, match="SEQ:HASH"):
            parse_head(bad)
