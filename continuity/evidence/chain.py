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

Checkpoints (:class:`Checkpoint`) anchor the tail. Storage alone cannot tell a chain whose newest records
were deleted from a shorter intact one, so every :data:`CHECKPOINT_EVERY` records (and after each clean
``evidence verify``) the writer stores ``checkpoints/{seq:012d}.json``: ``{seq, hash, at, prev_checkpoint_hash,
checkpoint_hash}``, the head it reached, chained to the previous checkpoint. :func:`verify_storage` checks
records, checkpoints and optionally a head published earlier (``--expect-head SEQ:HASH``) with nothing but
what storage holds: records ending before a checkpoint are a truncated tail; a record whose hash differs
from a checkpoint's or the expected head's was rewritten.

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
CHECKPOINT_PREFIX = "checkpoints/"
CHECKPOINT_FIELDS = ("seq", "hash", "at", "prev_checkpoint_hash", "checkpoint_hash")
# The default cadence: a checkpoint every 100 records. At most the records appended since the newest
# checkpoint can vanish unnoticed from storage alone; a published head (--expect-head) covers those.
CHECKPOINT_EVERY = 100


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
    TRUNCATED = "truncated"    # storage ends before a checkpoint (or an expected head) says the chain reached
    REWRITTEN = "rewritten"    # a record's hash differs from the one a checkpoint (or an expected head) vouches for
    CHECKPOINT_INVALID = "checkpoint_invalid"  # a checkpoint unreadable, edited, deleted or out of its chain


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


# ---- checkpoints and storage-only verification ----------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A chain head stored on its own, so that storage knows how far the chain had reached.

    ``checkpoint_hash`` is the sha256 of the canonical JSON of the other fields; ``prev_checkpoint_hash`` is the
    previous checkpoint's ``checkpoint_hash`` (:data:`GENESIS_HASH` for the first), so checkpoints form a chain
    of their own and a deleted or replaced one shows.
    """

    seq: int
    hash: str
    at: datetime
    prev_checkpoint_hash: str
    checkpoint_hash: str

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash)

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": format_datetime(self.at),
                "prev_checkpoint_hash": self.prev_checkpoint_hash}

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "checkpoint_hash": self.checkpoint_hash}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, raw: Any) -> Checkpoint:
        """Parse a stored checkpoint, refusing missing or extra fields (it does not check the hash)."""
        problem = checkpoint_shape_problem(raw)
        if problem:
            raise EvidenceInvalid(problem)
        return cls(seq=raw["seq"], hash=raw["hash"], at=parse_datetime(raw["at"]),
                   prev_checkpoint_hash=raw["prev_checkpoint_hash"], checkpoint_hash=raw["checkpoint_hash"])


def checkpoint_shape_problem(raw: Any) -> str | None:
    """Why ``raw`` is not a well-formed checkpoint, or None."""
    if not isinstance(raw, dict):
        return "checkpoint is not a JSON object"
    if set(raw) != set(CHECKPOINT_FIELDS):
        return f"checkpoint fields differ from {list(CHECKPOINT_FIELDS)}"
    if not isinstance(raw["seq"], int) or isinstance(raw["seq"], bool) or raw["seq"] < FIRST_SEQ:
        return f"seq {raw['seq']!r} is not a positive integer"
    for name in ("hash", "prev_checkpoint_hash", "checkpoint_hash"):
        if not isinstance(raw[name], str) or not HASH_RE.match(raw[name]):
            return f"{name} is not 64 lowercase hex digits"
    if not isinstance(raw["at"], str):
        return "at is not a string"
    return None


def checkpoint_hash(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a checkpoint without its ``checkpoint_hash`` field."""
    return sha256_hex(canonical_json({k: v for k, v in body.items() if k != "checkpoint_hash"}))


def build_checkpoint(head: ChainHead, previous: Checkpoint | None, at: datetime) -> Checkpoint:
    """The checkpoint of ``head``, chained to ``previous`` (None for the first).

    :raises EvidenceInvalid: an empty chain, or a head not after ``previous``.
    """
    if head.seq < FIRST_SEQ:
        raise EvidenceInvalid("an empty chain has no head to checkpoint")
    if previous is not None and previous.seq >= head.seq:
        raise EvidenceInvalid(f"a checkpoint at seq {head.seq} cannot follow the checkpoint at seq {previous.seq}")
    prev = previous.checkpoint_hash if previous is not None else GENESIS_HASH
    body = {"seq": head.seq, "hash": head.hash, "at": format_datetime(at), "prev_checkpoint_hash": prev}
    return Checkpoint(seq=head.seq, hash=head.hash, at=at.astimezone(UTC), prev_checkpoint_hash=prev,
                      checkpoint_hash=checkpoint_hash(body))


def checkpoint_due(seq: int, every: int) -> bool:
    """Whether the record at ``seq`` is one the cadence checkpoints (every ``every``-th; 0 turns it off)."""
    return every > 0 and seq >= FIRST_SEQ and seq % every == 0


def checkpoint_blob_name(seq: int) -> str:
    """``checkpoints/{seq:012d}.json``: name order is seq order."""
    return f"{CHECKPOINT_PREFIX}{seq:012d}.json"


def seq_from_checkpoint_name(name: str) -> int | None:
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}([0-9]{{12}})\.json", name)
    return int(match.group(1)) if match else None


def parse_head(text: str) -> ChainHead:
    """``SEQ:HASH``, as ``evidence verify`` prints a head and events carry it, parsed.

    :raises EvidenceInvalid: naming the accepted form.
    """
    seq_text, _, hash_ = text.strip().partition(":")
    if not re.fullmatch(r"[0-9]{1,18}", seq_text) or int(seq_text) < FIRST_SEQ or not HASH_RE.match(hash_):
        raise EvidenceInvalid(f"head {text!r} is not SEQ:HASH: a seq of at least {FIRST_SEQ}, a colon and 64 "
                              "lowercase hex digits, as `evidence verify` prints it or an event's "
                              "evidence_chain_head carries it")
    return ChainHead(int(seq_text), hash_)


@dataclass(frozen=True)
class CheckpointWalk:
    """What :func:`verify_checkpoints` found: the checkpoints accepted (oldest first) and the first break."""

    checkpoints: tuple[Checkpoint, ...]
    problem: ChainBreak | None


def verify_checkpoints(stored: Iterable[tuple[int, bytes]]) -> CheckpointWalk:
    """Walk stored checkpoints in name order: each must match its own hash and link to the one before.

    :param stored: ``(seq the blob name claims, blob bytes)`` sorted by that seq.
    """
    accepted: list[Checkpoint] = []

    def broken(seq: int, reason: str) -> CheckpointWalk:
        return CheckpointWalk(tuple(accepted), ChainBreak(seq, BreakKind.CHECKPOINT_INVALID, reason))

    for name_seq, blob in stored:
        try:
            raw = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return broken(name_seq, f"checkpoint {name_seq} is not UTF-8 JSON ({exc})")
        problem = checkpoint_shape_problem(raw)
        if problem:
            return broken(name_seq, f"checkpoint {name_seq}: {problem}")
        try:
            computed = checkpoint_hash(raw)
            checkpoint = Checkpoint.from_json(raw)
        except EvidenceInvalid as exc:
            return broken(name_seq, f"checkpoint {name_seq}: {exc}")
        if computed != checkpoint.checkpoint_hash:
            return broken(name_seq, f"checkpoint {name_seq}: content does not match its checkpoint_hash: edited "
                                    "after it was written")
        if checkpoint.seq != name_seq:
            return broken(name_seq, f"the blob for checkpoint {name_seq} holds checkpoint {checkpoint.seq}")
        expected_prev = accepted[-1].checkpoint_hash if accepted else GENESIS_HASH
        if checkpoint.prev_checkpoint_hash != expected_prev:
            before = f"the checkpoint at seq {accepted[-1].seq}" if accepted else "the start of the chain"
            return broken(name_seq, f"checkpoint {name_seq} does not link to {before}: a checkpoint between them "
                                    "was deleted or replaced")
        accepted.append(checkpoint)
    return CheckpointWalk(tuple(accepted), None)


def vouched_head_problem(walk: ChainVerification, vouched: ChainHead, who: str) -> ChainBreak | None:
    """Whether the records walked agree with a head something else vouches for (a checkpoint, a published head).

    :returns: REWRITTEN if the record at that seq has another hash, TRUNCATED if an intact walk ends before
        it, None if they agree or the walk broke earlier (that break is the finding).
    """
    stored = walk.hashes.get(vouched.seq)
    if stored is not None:
        if stored == vouched.hash:
            return None
        return ChainBreak(vouched.seq, BreakKind.REWRITTEN,
                          f"record {vouched.seq}: hash in storage ({stored[:12]}…) differs from {who} "
                          f"({vouched.hash[:12]}…): it, or a record before it, was rewritten after {who} was taken")
    if walk.problem is not None:
        return None
    first_missing = walk.head.seq + 1
    missing = (f"record {first_missing}" if first_missing == vouched.seq
               else f"records {first_missing}..{vouched.seq}")
    return ChainBreak(first_missing, BreakKind.TRUNCATED,
                      f"storage ends at record {walk.head.seq} but {who} vouches for record {vouched.seq}: "
                      f"{missing} deleted (tail truncated)")


def first_break(problems: Iterable[ChainBreak | None]) -> ChainBreak | None:
    """The break with the lowest seq (the earliest found on a tie), or None."""
    found = [p for p in problems if p is not None]
    return min(found, key=lambda p: p.seq) if found else None


@dataclass(frozen=True)
class StorageVerification:
    """What storage alone proves: the records' walk, the checkpoints, and agreement with an expected head."""

    records: ChainVerification
    checkpoints: tuple[Checkpoint, ...]
    expected: ChainHead | None
    problem: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def newest_checkpoint(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def to_json(self) -> dict[str, Any]:
        newest = self.newest_checkpoint
        return {"ok": self.ok, "records_checked": self.records.records_checked,
                "storage_head": self.records.head.to_json(), "checkpoints_checked": len(self.checkpoints),
                "newest_checkpoint": newest.to_json() if newest else None,
                "expected_head": self.expected.to_json() if self.expected else None,
                "problem": self.problem.to_json() if self.problem else None}


def verify_storage(records: Iterable[tuple[int, bytes]], checkpoints: Iterable[tuple[int, bytes]],
                   expected: ChainHead | None = None) -> StorageVerification:
    """Verify the chain from storage alone: records, checkpoints, and optionally a head published earlier.

    :param records: ``(seq from blob name, bytes)`` of ``records/``, sorted by seq.
    :param checkpoints: the same for ``checkpoints/``.
    :param expected: a head published before (an event's ``evidence_chain_head``): the chain must reach it
        with the same hash.
    """
    walk = verify_chain(records)
    marks = verify_checkpoints(checkpoints)
    vouched: list[ChainBreak | None] = [
        vouched_head_problem(walk, cp.head, f"checkpoint {cp.seq}") for cp in marks.checkpoints]
    if expected is not None:
        vouched.append(vouched_head_problem(walk, expected, "the expected head"))
    problem = first_break([walk.problem, marks.problem, *vouched])
    return StorageVerification(walk, marks.checkpoints, expected, problem)
