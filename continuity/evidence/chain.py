"""The evidence chain: append-only, hash-linked records an auditor can verify without trusting us.

Each record is ``{seq, prev_hash, hash, at, actor, action, subject, data}`` with
``hash = sha256(canonical JSON of the record without "hash")``. The first record has ``seq`` 1 and
``prev_hash`` :data:`GENESIS_HASH` (64 zeros). Editing a record changes its hash; deleting one leaves a
gap in ``seq``; swapping two breaks ``seq`` order and the ``prev_hash`` links. :func:`verify_chain`
names the first record where any of that happened.

Canonical JSON (:func:`canonical_json`), the rules the hash depends on:

* objects with keys sorted by code point, no whitespace (``","`` and ``":"`` separators), UTF-8,
  non-ASCII characters written as themselves (not ``\\u`` escapes); keys must be strings;
* ``datetime`` must be timezone-aware and is written as a UTC string ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
  (always six fraction digits); ``date`` as ``YYYY-MM-DD``;
* ``Decimal`` is written as a JSON *string* in plain notation (``format(d, "f")``, scale kept:
  ``Decimal("1.50")`` is ``"1.50"``), never a float, so money keeps its exact value; NaN/Infinity refused;
* ``float`` must be finite and is written in Python's shortest round-trip form; ``bool``/``None``/``int``/``str``
  as JSON; ``StrEnum``/``UUID`` as their string; tuples and lists as arrays;
* anything else (sets, bytes, naive datetimes, objects) is refused with :class:`EvidenceInvalid`,
  because a value without one obvious text form cannot be hashed reproducibly.

Pure: no clock, no I/O. Adapters store records (``continuity.adapters.storage.evidence_store``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any
from uuid import UUID

from continuity.kernel.errors import ContinuityError

GENESIS_HASH = "0" * 64
FIRST_SEQ = 1
RECORD_FIELDS = ("seq", "prev_hash", "hash", "at", "actor", "action", "subject", "data")
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
RECORD_PREFIX = "records/"


class EvidenceInvalid(ContinuityError):
    """A record or value that cannot go into the chain as given."""

    code = "evidence_invalid"


class EvidenceChainBroken(ContinuityError):
    """The stored chain is not intact; appending to it would hide the damage."""

    code = "evidence_chain_broken"
    http_status = 409


# ---- canonical JSON ------------------------------------------------------------------------


def format_datetime(value: datetime) -> str:
    """The one text form of an instant: UTC, microseconds, ``Z``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise EvidenceInvalid(f"datetime {value.isoformat()} has no timezone; pass an aware UTC datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_datetime(text: str) -> datetime:
    """Inverse of :func:`format_datetime`."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (TypeError, ValueError) as exc:
        raise EvidenceInvalid(f"timestamp {text!r} is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ") from exc


def to_canonical(value: Any, path: str = "$") -> Any:
    """``value`` as a tree of JSON-native types following the canonical rules.

    :raises EvidenceInvalid: naming the path of the first value that has no canonical form.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Enum):
        if isinstance(value, StrEnum):
            return str(value.value)
        raise EvidenceInvalid(f"{path}: enum {value!r} is not a StrEnum; pass its value")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EvidenceInvalid(f"{path}: {value} is not a finite number")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise EvidenceInvalid(f"{path}: {value} is not a finite decimal")
        return format(value, "f")
    if isinstance(value, datetime):
        try:
            return format_datetime(value)
        except EvidenceInvalid as exc:
            raise EvidenceInvalid(f"{path}: {exc}") from exc
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EvidenceInvalid(f"{path}: key {key!r} is not a string")
            out[key] = to_canonical(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [to_canonical(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise EvidenceInvalid(f"{path}: a {type(value).__name__} has no canonical JSON form "
                          "(use str, int, Decimal, aware datetime, list or dict)")


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON bytes of ``value`` (see the module docstring for the rules)."""
    return json.dumps(to_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_hash(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a record without its ``hash`` field."""
    return sha256_hex(canonical_json({k: v for k, v in body.items() if k != "hash"}))


# ---- records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    """Where the chain ends: repeated in reports and outgoing events. ``seq`` 0 is the empty chain."""

    seq: int
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}


EMPTY_HEAD = ChainHead(seq=FIRST_SEQ - 1, hash=GENESIS_HASH)


@dataclass(frozen=True)
class EvidenceRecord:
    seq: int
    prev_hash: str
    hash: str
    at: datetime
    actor: str
    action: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The hashed part: every field but ``hash``, in canonical form."""
        return {"seq": self.seq, "prev_hash": self.prev_hash, "at": format_datetime(self.at),
                "actor": self.actor, "action": self.action, "subject": self.subject, "data": self.data}

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    def to_bytes(self) -> bytes:
        """What is stored: the canonical JSON of the whole record, hash included."""
        return canonical_json(self.to_json())

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash)

    @classmethod
    def from_json(cls, raw: Any) -> EvidenceRecord:
        """Parse a stored record, refusing missing or extra fields (it does not check the hash)."""
        problem = record_shape_problem(raw)
        if problem:
            raise EvidenceInvalid(problem)
        return cls(seq=raw["seq"], prev_hash=raw["prev_hash"], hash=raw["hash"], at=parse_datetime(raw["at"]),
                   actor=raw["actor"], action=raw["action"], subject=raw["subject"], data=raw["data"])


def record_shape_problem(raw: Any) -> str | None:
    """Why ``raw`` is not a well-formed record, or None."""
    if not isinstance(raw, dict):
        return "record is not a JSON object"
    keys = set(raw)
    if keys != set(RECORD_FIELDS):
        missing = sorted(set(RECORD_FIELDS) - keys)
        extra = sorted(keys - set(RECORD_FIELDS))
        return f"record fields differ from {list(RECORD_FIELDS)} (missing {missing}, extra {extra})"
    if not isinstance(raw["seq"], int) or isinstance(raw["seq"], bool) or raw["seq"] < FIRST_SEQ:
        return f"seq {raw['seq']!r} is not a positive integer"
    for name in ("prev_hash", "hash"):
        if not isinstance(raw[name], str) or not HASH_RE.match(raw[name]):
            return f"{name} is not 64 lowercase hex digits"
    for name in ("at", "actor", "action", "subject"):
        if not isinstance(raw[name], str):
            return f"{name} is not a string"
    if not isinstance(raw["data"], dict):
        return "data is not a JSON object"
    return None


def build_record(head: ChainHead, *, at: datetime, actor: str, action: str, subject: str,
                 data: Mapping[str, Any] | None = None) -> EvidenceRecord:
    """The record that follows ``head``.

    :raises EvidenceInvalid: empty actor/subject, an action not like ``catalog.ingested``, or data
        without a canonical form.
    """
    if not actor.strip():
        raise EvidenceInvalid("actor must name who acted (a user, or a workflow instance id)")
    if not subject.strip():
        raise EvidenceInvalid("subject must name what was acted on (e.g. 'backup acme/20250101T020000Z-abc123')")
    if not ACTION_RE.match(action):
        raise EvidenceInvalid(f"action {action!r} must be dotted lowercase words, e.g. 'catalog.ingested'")
    canonical_data = to_canonical(dict(data or {}), "data")
    body = {"seq": head.seq + 1, "prev_hash": head.hash, "at": format_datetime(at), "actor": actor,
            "action": action, "subject": subject, "data": canonical_data}
    return EvidenceRecord(seq=head.seq + 1, prev_hash=head.hash, hash=record_hash(body), at=at.astimezone(UTC),
                          actor=actor, action=action, subject=subject, data=canonical_data)


def record_blob_name(seq: int) -> str:
    """``records/{seq:012d}.json``: zero-padded so that name order is chain order."""
    return f"{RECORD_PREFIX}{seq:012d}.json"


def seq_from_blob_name(name: str) -> int | None:
    """The seq a record blob name claims, or None if the name is not a record name."""
    match = re.fullmatch(rf"{RECORD_PREFIX}([0-9]{{12}})\.json", name)
    return int(match.group(1)) if match else None


# ---- verification --------------------------------------------------------------------------


class BreakKind(StrEnum):
    EDITED = "edited"          # the content no longer matches its hash
    DELETED = "deleted"        # a seq is missing
    REORDERED = "reordered"    # seq out of place, or prev_hash not the previous record's hash
    UNREADABLE = "unreadable"  # not JSON, or not a record
    INDEX_MISMATCH = "index_mismatch"  # storage and the control database's index disagree


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    kind: BreakKind
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": str(self.kind), "reason": self.reason}


@dataclass(frozen=True)
class ChainVerification:
    """What :func:`verify_chain` found: ``problem`` is the first break, or None if the chain is intact."""

    records_checked: int
    head: ChainHead
    problem: ChainBreak | None
    hashes: Mapping[int, str] = field(default_factory=dict)  # {seq: hash} of the records accepted

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "records_checked": self.records_checked, "head": self.head.to_json(),
                "problem": self.problem.to_json() if self.problem else None}


def verify_chain(stored: Iterable[tuple[int, bytes]]) -> ChainVerification:
    """Walk stored records in name order and report the first broken link.

    :param stored: ``(seq the blob name claims, blob bytes)`` sorted by that seq.
    :returns: records checked up to the break, the last good head, and the break (or None).
    """
    head = EMPTY_HEAD
    checked = 0
    hashes: dict[int, str] = {}
    for name_seq, blob in stored:
        expected = head.seq + 1
        if name_seq > expected:
            missing = f"record {expected}" if name_seq == expected + 1 else f"records {expected}..{name_seq - 1}"
            return ChainVerification(checked, head, hashes=hashes, problem=ChainBreak(
                expected, BreakKind.DELETED, f"{missing} missing: the next stored record is {name_seq} (deleted)"))
        if name_seq < expected:  # only possible with unsorted input or duplicate names
            return ChainVerification(checked, head, hashes=hashes, problem=ChainBreak(
                name_seq, BreakKind.REORDERED, f"record {name_seq} appears after record {head.seq}"))
        try:
            raw = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return ChainVerification(checked, head, hashes=hashes, problem=ChainBreak(
                name_seq, BreakKind.UNREADABLE, f"record {name_seq} is not UTF-8 JSON ({exc})"))
        problem = record_shape_problem(raw)
        if problem:
            return ChainVerification(checked, head, hashes=hashes, problem=ChainBreak(
                name_seq, BreakKind.UNREADABLE, f"record {name_seq}: {problem}"))
        try:
            actual = record_hash(raw)
        except EvidenceInvalid as exc:
            return ChainVerification(checked, head, hashes=hashes, problem=ChainBreak(
                name_seq, BreakKind.UNREADABLE, f"record {name_seq}: {exc}"))
        if actual != raw["hash"]:
            return ChainVerification(checked, head, hashes=hashes, problem=ChainBreak(
                name_seq, BreakKind.EDITED,
                f"record {name_seq}: content does not match its hash (stored {raw['hash'][:12]}…, "
                f"computed {actual[:12]}…): edited after it was written"))
        if raw["seq"] != name_seq:
            return ChainVerification(checked, head, hashes=hashes, problem=ChainBreak(
                name_seq, BreakKind.REORDERED,
                f"the blob for record {name_seq} holds record {raw['seq']}: records swapped or reordered"))
        if raw["prev_hash"] != head.hash:
            return ChainVerification(checked, head, hashes=hashes, problem=ChainBreak(
                name_seq, BreakKind.REORDERED,
                f"record {name_seq}: prev_hash does not match the hash of record {head.seq}: "
                "a record before it was replaced, or records were reordered"))
        head = ChainHead(raw["seq"], raw["hash"])
        hashes[head.seq] = head.hash
        checked += 1
    return ChainVerification(checked, head, None, hashes)


def cross_check_index(verification: ChainVerification, stored_hashes: Mapping[int, str],
                      index: Mapping[int, str]) -> ChainBreak | None:
    """Cross-check a storage walk against the control database's index ``{seq: hash}``.

    Catches what storage alone cannot: the newest records deleted, or the newest record rewritten with
    a recomputed hash. Returns the first disagreement, or None.

    :param stored_hashes: ``{seq: hash}`` of the records the walk accepted (up to its head).
    """
    for seq in sorted(set(stored_hashes) & set(index)):
        if stored_hashes[seq] != index[seq]:
            return ChainBreak(seq, BreakKind.INDEX_MISMATCH,
                              f"record {seq}: hash in storage ({stored_hashes[seq][:12]}…) differs from the "
                              f"index ({index[seq][:12]}…): rewritten after it was indexed")
    if verification.problem is not None:
        return None  # storage is broken before the rest; that break is the finding
    head = verification.head
    index_head = max(index) if index else 0
    if index_head > head.seq:
        return ChainBreak(head.seq + 1, BreakKind.INDEX_MISMATCH,
                          f"records {head.seq + 1}..{index_head} are in the index but not in storage "
                          f"(storage ends at {head.seq}): deleted from storage")
    if head.seq > index_head:
        return ChainBreak(index_head + 1, BreakKind.INDEX_MISMATCH,
                          f"storage holds records {index_head + 1}..{head.seq} that the index does not know: "
                          "written outside this system, or an append crashed before its index row committed "
                          "(the next append adopts it)")
    return None
