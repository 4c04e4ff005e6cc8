"""The evidence chain's pure rules: canonical JSON, hashing, and naming the first broken link."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum

import pytest

from continuity.catalog.model import BackupStatus
from continuity.evidence.chain import (
    EMPTY_HEAD,
    GENESIS_HASH,
    BreakKind,
    ChainHead,
    EvidenceInvalid,
    EvidenceRecord,
    build_record,
    canonical_json,
    cross_check_index,
    record_blob_name,
    record_hash,
    seq_from_blob_name,
    verify_chain,
)

T0 = datetime(2025, 3, 1, 2, 0, 0, tzinfo=UTC)


def make_chain(n: int) -> list[EvidenceRecord]:
    head = EMPTY_HEAD
    out = []
    for i in range(n):
        record = build_record(head, at=T0 + timedelta(seconds=i), actor="nightly-20250301", action="catalog.ingested",
                              subject=f"backup acme/{i}", data={"i": i, "amount": Decimal("10.50")})
        out.append(record)
        head = record.head
    return out


def stored(records: list[EvidenceRecord]) -> list[tuple[int, bytes]]:
    return [(r.seq, r.to_bytes()) for r in records]


# ---- canonical JSON ------------------------------------------------------------------------

def test_canonical_json_sorts_keys_and_has_no_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, 2], "c": {"z": None, "y": True}}) == \
        b'{"a":[1,2],"b":1,"c":{"y":true,"z":null}}'


def test_canonical_json_writes_utf8_not_escapes() -> None:
    assert canonical_json({"name": "Müller €"}) == '{"name":"Müller €"}'.encode()


def test_canonical_json_writes_datetimes_as_utc_with_microseconds() -> None:
    cet = timezone(timedelta(hours=1))
    assert canonical_json({"at": datetime(2025, 3, 1, 3, 0, tzinfo=cet)}) == b'{"at":"2025-03-01T02:00:00.000000Z"}'


def test_canonical_json_refuses_naive_datetime() -> None:
    with pytest.raises(EvidenceInvalid, match=r"\$\.at: .*no timezone"):
        canonical_json({"at": datetime(2025, 3, 1, 2, 0)})


def test_canonical_json_writes_decimals_as_exact_strings_keeping_scale() -> None:
    assert canonical_json({"d": Decimal("1.50"), "e": Decimal("1E+3")}) == b'{"d":"1.50","e":"1000"}'


def test_canonical_json_refuses_nan_and_infinity() -> None:
    with pytest.raises(EvidenceInvalid, match="finite"):
        canonical_json({"x": float("nan")})
    with pytest.raises(EvidenceInvalid, match="finite"):
        canonical_json({"x": Decimal("Infinity")})


def test_canonical_json_refuses_sets_bytes_and_non_string_keys() -> None:
    with pytest.raises(EvidenceInvalid, match="set has no canonical JSON form"):
        canonical_json({"x": {1, 2}})
    with pytest.raises(EvidenceInvalid, match="bytes has no canonical JSON form"):
        canonical_json({"x": b"raw"})
    with pytest.raises(EvidenceInvalid, match="key 1 is not a string"):
        canonical_json({1: "x"})


def test_canonical_json_writes_str_enums_dates_and_tuples() -> None:
    assert canonical_json({"s": BackupStatus.AVAILABLE, "d": date(2025, 1, 2), "t": (1, "a")}) == \
        b'{"d":"2025-01-02","s":"available","t":[1,"a"]}'


def test_canonical_json_refuses_plain_enums() -> None:
    class Color(Enum):
        RED = 1

    with pytest.raises(EvidenceInvalid, match="not a StrEnum"):
        canonical_json({"c": Color.RED})


# ---- records -------------------------------------------------------------------------------

def test_first_record_links_to_genesis_and_hash_is_sha256_of_canonical_body() -> None:
    record = build_record(EMPTY_HEAD, at=T0, actor="alice", action="catalog.ingested", subject="backup acme/x",
                          data={"size": 3})
    assert record.seq == 1
    assert record.prev_hash == GENESIS_HASH == "0" * 64
    expected_body = (b'{"action":"catalog.ingested","actor":"alice","at":"2025-03-01T02:00:00.000000Z",'
                     b'"data":{"size":3},"prev_hash":"' + b"0" * 64 + b'","seq":1,"subject":"backup acme/x"}')
    assert record.hash == hashlib.sha256(expected_body).hexdigest()


def test_next_record_links_to_previous_hash() -> None:
    first, second = make_chain(2)
    assert second.seq == 2
    assert second.prev_hash == first.hash


def test_stored_record_round_trips_and_rehashes_equal() -> None:
    record = make_chain(1)[0]
    raw = json.loads(record.to_bytes())
    assert EvidenceRecord.from_json(raw) == record
    assert record_hash(raw) == record.hash


def test_build_record_refuses_empty_actor_subject_and_bad_action() -> None:
    with pytest.raises(EvidenceInvalid, match="actor must name who acted"):
        build_record(EMPTY_HEAD, at=T0, actor=" ", action="a.b", subject="s")
    with pytest.raises(EvidenceInvalid, match="subject must name"):
        build_record(EMPTY_HEAD, at=T0, actor="a", action="a.b", subject="")
    with pytest.raises(EvidenceInvalid, match="dotted lowercase"):
        build_record(EMPTY_HEAD, at=T0, actor="a", action="Catalog Ingested", subject="s")


def test_from_json_refuses_extra_fields() -> None:
    raw = json.loads(make_chain(1)[0].to_bytes())
    raw["note"] = "x"
    with pytest.raises(EvidenceInvalid, match=r"extra \['note'\]"):
        EvidenceRecord.from_json(raw)


def test_record_blob_names_sort_in_chain_order_and_parse_back() -> None:
    assert record_blob_name(7) == "records/000000000007.json"
    assert sorted([record_blob_name(10), record_blob_name(9)]) == [record_blob_name(9), record_blob_name(10)]
    assert seq_from_blob_name("records/000000000007.json") == 7
    assert seq_from_blob_name("records/7.json") is None
    assert seq_from_blob_name("bundles/000000000007.json") is None


# ---- verification --------------------------------------------------------------------------

def test_intact_chain_verifies_with_its_head() -> None:
    chain = make_chain(5)
    result = verify_chain(stored(chain))
    assert result.ok
    assert result.records_checked == 5
    assert result.head == ChainHead(5, chain[-1].hash)


def test_empty_chain_verifies() -> None:
    result = verify_chain([])
    assert result.ok and result.head == EMPTY_HEAD


def test_edited_record_is_named_as_edited() -> None:
    blobs = stored(make_chain(5))
    raw = json.loads(blobs[2][1])
    raw["data"]["amount"] = "99.00"
    blobs[2] = (3, json.dumps(raw).encode())
    result = verify_chain(blobs)
    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (3, BreakKind.EDITED)
    assert "edited" in result.problem.reason
    assert result.records_checked == 2


def test_edited_record_with_recomputed_hash_breaks_the_next_link() -> None:
    blobs = stored(make_chain(5))
    raw = json.loads(blobs[1][1])
    raw["actor"] = "mallory"
    raw["hash"] = record_hash(raw)
    blobs[1] = (2, canonical_json(raw))
    result = verify_chain(blobs)
    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (3, BreakKind.REORDERED)
    assert "prev_hash does not match the hash of record 2" in result.problem.reason


def test_deleted_record_is_named_as_deleted() -> None:
    blobs = stored(make_chain(5))
    del blobs[3]
    result = verify_chain(blobs)
    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (4, BreakKind.DELETED)
    assert "record 4 missing" in result.problem.reason


def test_deleted_first_record_is_named() -> None:
    result = verify_chain(stored(make_chain(3))[1:])
    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (1, BreakKind.DELETED)


def test_swapped_records_are_named_as_reordered() -> None:
    blobs = stored(make_chain(5))
    blobs[1], blobs[2] = (2, blobs[2][1]), (3, blobs[1][1])
    result = verify_chain(blobs)
    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (2, BreakKind.REORDERED)
    assert "holds record 3" in result.problem.reason


def test_unreadable_record_is_named() -> None:
    blobs = stored(make_chain(3))
    blobs[1] = (2, b"{not json")
    result = verify_chain(blobs)
    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (2, BreakKind.UNREADABLE)


def test_index_cross_check_finds_deleted_tail_that_storage_alone_cannot() -> None:
    chain = make_chain(4)
    result = verify_chain(stored(chain[:3]))
    assert result.ok  # storage alone looks fine
    problem = cross_check_index(result, result.hashes, {r.seq: r.hash for r in chain})
    assert problem is not None
    assert (problem.seq, problem.kind) == (4, BreakKind.INDEX_MISMATCH)
    assert "deleted from storage" in problem.reason


def test_index_cross_check_finds_rewritten_last_record() -> None:
    chain = make_chain(3)
    blobs = stored(chain)
    raw = json.loads(blobs[2][1])
    raw["data"] = {"forged": True}
    raw["hash"] = record_hash(raw)
    blobs[2] = (3, canonical_json(raw))
    result = verify_chain(blobs)
    assert result.ok
    problem = cross_check_index(result, result.hashes, {r.seq: r.hash for r in chain})
    assert problem is not None
    assert (problem.seq, problem.kind) == (3, BreakKind.INDEX_MISMATCH)
    assert "rewritten" in problem.reason


def test_index_cross_check_reports_records_the_index_does_not_know() -> None:
    chain = make_chain(3)
    result = verify_chain(stored(chain))
    problem = cross_check_index(result, result.hashes, {r.seq: r.hash for r in chain[:2]})
    assert problem is not None and problem.seq == 3
    assert "index does not know" in problem.reason


def test_index_cross_check_passes_when_equal() -> None:
    chain = make_chain(3)
    result = verify_chain(stored(chain))
    assert cross_check_index(result, result.hashes, {r.seq: r.hash for r in chain}) is None
