"""The evidence chain in storage: one blob per record, plus an index in the control database.

Append protocol (serialised, crash-safe, idempotent):

1. ``SELECT ... FOR UPDATE`` on the single chain-head row: concurrent appenders in any thread or
   process queue here, so the chain never forks. Holding it, look the idempotency key up again.
2. Write the record blob ``records/{seq:012d}.json`` with ``If-None-Match: *`` (never overwrite).
3. Insert the index row and move the head; every :data:`~continuity.evidence.chain.CHECKPOINT_EVERY`-th
   record, also write the checkpoint blob ``checkpoints/{seq:012d}.json`` (``If-None-Match: *``); commit.

A crash after 2 and before 3 leaves a valid record in storage that the index lacks (never a gap: the
blob exists before the index names it). The next append finds the blob taken, adopts it into the
index if it links to the head, and appends after it. An append with an idempotency key that is
already indexed (or sits in such an orphan blob) returns that record instead of appending twice, so
activities retried at least once record once.

:meth:`EvidenceStore.verify` walks the chain from storage, not trusting the database, then
cross-checks the database index, and checkpoints the head it verified. :class:`EvidenceReader` is the
storage-only half (``evidence verify --storage-only``): it lists and reads the evidence container and
nothing else, so it runs with a read-only SAS and without the control database.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from continuity.adapters.postgres.connection import connect
from continuity.adapters.storage.blob_store import TIMEOUT_SECONDS, BlobStore, unavailable
from continuity.evidence.chain import (
    CHECKPOINT_EVERY,
    CHECKPOINT_PREFIX,
    RECORD_PREFIX,
    ChainBreak,
    ChainHead,
    ChainVerification,
    Checkpoint,
    EvidenceChainBroken,
    EvidenceInvalid,
    EvidenceRecord,
    StorageVerification,
    build_checkpoint,
    build_record,
    checkpoint_blob_name,
    checkpoint_due,
    cross_check_index,
    first_break,
    record_blob_name,
    record_hash,
    seq_from_blob_name,
    seq_from_checkpoint_name,
    verify_storage,
)
from continuity.kernel import settings
from continuity.kernel.errors import BackupNotFound, ConfigError

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII: it travels as blob metadata
IMMUTABILITY_NOTE_AZURITE = "no (Azurite)"


@dataclass(frozen=True)
class EvidenceReport:
    """The result of ``continuity evidence verify`` (``index_head`` None: ``--storage-only``)."""

    verified: StorageVerification
    index_head: ChainHead | None
    problem: ChainBreak | None
    enforces_immutability: bool
    store: str
    container: str
    checkpointed: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def storage(self) -> ChainVerification:
        """The walk of the records in storage."""
        return self.verified.records

    @property
    def storage_only(self) -> bool:
        return self.index_head is None

    @property
    def immutability(self) -> str:
        if self.enforces_immutability:
            return "yes"
        return IMMUTABILITY_NOTE_AZURITE if self.store == "azurite" else "no"

    def to_json(self) -> dict[str, Any]:
        verified = self.verified.to_json()
        return {
            "ok": self.ok,
            "mode": "storage-only" if self.storage_only else "storage+index",
            "records_checked": verified["records_checked"],
            "storage_head": verified["storage_head"],
            "index_head": self.index_head.to_json() if self.index_head else None,
            "checkpoints_checked": verified["checkpoints_checked"],
            "newest_checkpoint": verified["newest_checkpoint"],
            "expected_head": verified["expected_head"],
            "checkpointed": self.checkpointed.to_json() if self.checkpointed else None,
            "problem": self.problem.to_json() if self.problem else None,
            "container": self.container,
            "store_enforces_immutability": self.enforces_immutability,
            "immutability": self.immutability,
        }

    def render(self) -> str:
        source = "storage only (no control database)" if self.storage_only else "storage"
        newest = self.verified.newest_checkpoint
        lines = [
            f"evidence chain in container {self.container!r}: {self.storage.records_checked} record(s) checked "
            f"from {source}",
            f"storage head: seq {self.storage.head.seq} {self.storage.head.hash}",
        ]
        if self.index_head is not None:
            lines.append(f"index head:   seq {self.index_head.seq} {self.index_head.hash}")
        lines.append(f"checkpoints:  {len(self.verified.checkpoints)} checked, newest "
                     + (f"seq {newest.seq} {newest.hash} at {newest.to_json()['at']}" if newest else "none"))
        if self.verified.expected is not None:
            lines.append(f"expected head: seq {self.verified.expected.seq} {self.verified.expected.hash}")
        if self.checkpointed is not None:
            lines.append(f"head checkpointed in storage: seq {self.checkpointed.seq}")
        lines.append(f"store enforces immutability: {self.immutability}")
        if self.problem:
            lines.append(f"BROKEN at record {self.problem.seq} ({self.problem.kind}): {self.problem.reason}")
        else:
            lines.append("OK: every record matches its hash and links to the one before it"
                         + (", and the chain reaches every checkpoint" if self.verified.checkpoints else "")
                         + (" and the expected head" if self.verified.expected else ""))
        return "\n".join(lines)


class EvidenceReader:
    """The evidence container, read-only: it lists and reads blobs, writes nothing, needs no control database.

    What ``continuity evidence verify --storage-only`` runs, so an auditor can use credentials that can only
    list and read (a container SAS with permissions ``rl``, or the Storage Blob Data Reader role).
    """

    def __init__(self, blobs: BlobStore, container: str | None = None) -> None:
        self.blobs = blobs
        self.container = container or settings.get("CONTINUITY_EVIDENCE_CONTAINER")

    @classmethod
    def from_container_url(cls, url: str) -> EvidenceReader:
        """A reader from a container URL carrying a SAS token, as an auditor is handed one.

        ``https://ACCOUNT.blob.core.windows.net/evidence?sv=…&sp=rl&sig=…``; Azurite's path-style
        ``http://127.0.0.1:10000/devstoreaccount1/evidence?sv=…`` works the same.

        :raises ConfigError: not an http(s) URL naming a container, or no SAS token in it.
        """
        parts = urlsplit(url.strip())
        segments = [s for s in parts.path.split("/") if s]
        if parts.scheme not in ("http", "https") or not parts.netloc or not segments or not parts.query:
            raise ConfigError("the container URL must be http(s)://ACCOUNT-ENDPOINT/CONTAINER?SAS-TOKEN, e.g. "
                              "https://ACCOUNT.blob.core.windows.net/evidence?sv=…&sp=rl&sig=… (a read+list SAS)")
        endpoint = urlunsplit((parts.scheme, parts.netloc, "/".join(segments[:-1]), "", ""))
        return cls(BlobStore(f"BlobEndpoint={endpoint};SharedAccessSignature={parts.query}"), segments[-1])

    def _numbered(self, prefix: str, seq_of: Callable[[str], int | None]) -> list[tuple[int, str]]:
        names = self.blobs.list_names(self.container, prefix=prefix)
        return sorted((seq, name) for name in names if (seq := seq_of(name)) is not None)

    def _read(self, numbered: list[tuple[int, str]], what: str) -> Iterator[tuple[int, bytes]]:
        for seq, name in numbered:
            try:
                yield seq, self.blobs.download(self.container, name)
            except BackupNotFound:  # deleted between list and read: the walk reports the gap
                logger.warning("evidence %s vanished during verify", what, extra={"seq": seq})

    def stored_records(self) -> Iterator[tuple[int, bytes]]:
        """``(seq, bytes)`` of every record blob, in seq order."""
        return self._read(self._numbered(RECORD_PREFIX, seq_from_blob_name), "record")

    def stored_checkpoints(self) -> Iterator[tuple[int, bytes]]:
        """``(seq, bytes)`` of every checkpoint blob, in seq order."""
        return self._read(self._numbered(CHECKPOINT_PREFIX, seq_from_checkpoint_name), "checkpoint")

    def newest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint with the highest seq, or None if there is none.

        :raises EvidenceChainBroken: it cannot be read; a new checkpoint must not link to damage.
        """
        numbered = self._numbered(CHECKPOINT_PREFIX, seq_from_checkpoint_name)
        return self.checkpoint_at(numbered[-1][0]) if numbered else None

    def checkpoint_at(self, seq: int) -> Checkpoint | None:
        """The checkpoint at ``seq``, or None if there is none.

        :raises EvidenceChainBroken: it exists but cannot be read.
        """
        try:
            raw = json.loads(self.blobs.download(self.container, checkpoint_blob_name(seq)))
        except BackupNotFound:
            return None
        except ValueError as exc:
            raise EvidenceChainBroken(f"evidence checkpoint {seq} cannot be read ({exc}); run "
                                      "`continuity evidence verify --storage-only`") from exc
        try:
            return Checkpoint.from_json(raw)
        except EvidenceInvalid as exc:
            raise EvidenceChainBroken(f"evidence checkpoint {seq} cannot be read ({exc}); run "
                                      "`continuity evidence verify --storage-only`") from exc

    def verify(self, expect_head: ChainHead | None = None) -> EvidenceReport:
        """Verify records and checkpoints from storage alone, optionally against a head published earlier."""
        checkpoints = self.stored_checkpoints()  # listed before the records: see EvidenceStore.verify
        verified = verify_storage(self.stored_records(), checkpoints, expect_head)
        return EvidenceReport(verified=verified, index_head=None, problem=verified.problem,
                              enforces_immutability=self.blobs.enforces_immutability(),
                              store="azurite" if self.blobs.is_azurite else "azure", container=self.container)


class EvidenceStore:
    """Append to and verify the evidence chain of one control database and one evidence container."""

    def __init__(self, dsn: str, blobs: BlobStore, container: str | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        """:param checkpoint_every: checkpoint the head after every this many records (0: only on verify)."""
        self.dsn = dsn
        self.blobs = blobs
        self.reader = EvidenceReader(blobs, container)
        self.container = self.reader.container
        self.checkpoint_every = checkpoint_every

    # ---- append ------------------------------------------------------------------------------
    def append(self, *, actor: str, action: str, subject: str, data: Mapping[str, Any] | None = None,
               idempotency_key: str | None = None, at: datetime | None = None) -> EvidenceRecord:
        """Append one record after the current head and return it.

        :param idempotency_key: a natural key of the fact (e.g. ``catalog.ingested:acme/2025...:<sha>``);
            appending again with it returns the first record unchanged.
        :raises EvidenceInvalid: bad actor/action/subject/data/key.
        :raises EvidenceChainBroken: storage holds a record at the next seq that does not link to the head.
        """
        if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.match(idempotency_key):
            raise EvidenceInvalid("idempotency_key must be 1-200 printable ASCII characters without spaces")
        at = at or datetime.now(UTC)
        with connect(self.dsn) as conn, conn.transaction():
            if idempotency_key is not None:
                existing = self._indexed_by_key(conn, idempotency_key)
                if existing is not None:  # the common retry: answered without queueing for the lock
                    return existing
            head = self._lock_head(conn)
            # The idempotency race: two appends with one key both pass the look-up above before either has
            # committed, then queue on the head lock. Once we hold the lock the index is final for every
            # append but ours (each appender indexes its record and commits before it releases the lock, and
            # this READ COMMITTED statement sees what they committed), so the look-up that decides is this one.
            # The record blob is written only after it: the lock reserves the seq and the key is known to be
            # free, so a blob carrying a key already indexed can no longer be written, nor adopted later as a
            # second record of that fact. A blob is orphaned only by a crash between its upload and the commit,
            # and the crashed append's retry (same key) adopts it below. The unique index on idempotency_key
            # stays as the backstop.
            if idempotency_key is not None:
                existing = self._indexed_by_key(conn, idempotency_key)
                if existing is not None:
                    return existing
            while True:
                record = build_record(head, at=at, actor=actor, action=action, subject=subject, data=data)
                metadata = {"idempotency_key": idempotency_key} if idempotency_key else None
                try:
                    self.blobs.upload(self.container, record_blob_name(record.seq), record.to_bytes(),
                                      overwrite=False, metadata=metadata)
                except ResourceExistsError:
                    orphan, orphan_key = self._adopt(conn, head)
                    self._checkpoint_if_due(orphan.head)
                    if idempotency_key is not None and orphan_key == idempotency_key:
                        return orphan
                    head = orphan.head
                    continue
                self._index(conn, record, idempotency_key)
                self._checkpoint_if_due(record.head)
                logger.info("evidence appended", extra={"seq": record.seq, "action": action, "subject": subject})
                return record

    @staticmethod
    def _lock_head(conn: psycopg.Connection) -> ChainHead:
        """The indexed head, locked until the transaction ends: appends and checkpoints queue here."""
        seq, hash_ = conn.execute(  # type: ignore[misc]
            "select seq, hash from catalog.evidence_head where id = 1 for update").fetchone()
        return ChainHead(int(seq), str(hash_))

    def _checkpoint_if_due(self, head: ChainHead) -> None:
        if checkpoint_due(head.seq, self.checkpoint_every):
            self._write_checkpoint(head)

    def _write_checkpoint(self, head: ChainHead) -> Checkpoint | None:
        """Store the checkpoint of ``head`` after the newest one; the caller holds the head lock.

        Every checkpoint writer holds the lock, so checkpoints are written in seq order and each links to the
        one before. Written before the append commits: if the commit then fails, the record blob stays as an
        orphan that the next append adopts, and the checkpoint agrees with it.

        :returns: the checkpoint at ``head.seq`` (new or already there), or None when storage already holds
            checkpoints beyond ``head`` and none at it.
        :raises EvidenceChainBroken: storage holds a checkpoint at ``head.seq`` with another hash.
        """
        newest = self.reader.newest_checkpoint()
        if newest is not None and newest.seq >= head.seq:
            # The index is behind storage: a retried append, a verify right after the cadence, or an index being
            # rebuilt by adopting the records storage holds. The checkpoint chain takes nothing in its middle;
            # the one at this seq, if there is one, must agree with the record.
            existing = newest if newest.seq == head.seq else self.reader.checkpoint_at(head.seq)
            if existing is not None and existing.head != head:
                raise EvidenceChainBroken(
                    f"evidence checkpoint {existing.seq} vouches for hash {existing.hash[:12]}… but the record "
                    f"at that seq has {head.hash[:12]}…; run `continuity evidence verify --storage-only`")
            return existing
        checkpoint = build_checkpoint(head, newest, datetime.now(UTC))
        try:
            self.blobs.upload(self.container, checkpoint_blob_name(checkpoint.seq), checkpoint.to_bytes(),
                              overwrite=False)
        except ResourceExistsError as exc:  # listed as absent a moment ago, under the lock: not ours
            raise EvidenceChainBroken(f"evidence checkpoint {checkpoint.seq} appeared in storage while this "
                                      "process held the chain lock: something outside this system writes to "
                                      "the evidence container") from exc
        logger.info("evidence checkpointed", extra={"seq": checkpoint.seq})
        return checkpoint

    def checkpoint(self, verified: ChainHead | None = None) -> Checkpoint | None:
        """Checkpoint the indexed head now (e.g. at the end of a verify or of the nightly run).

        :param verified: write only if the indexed head is still this one (a head that a verify checked).
        :returns: the checkpoint of the head (new, or the one already there), or None: an empty chain, the
            head moved past ``verified`` (the cadence will checkpoint it), or storage checkpoints beyond it.
        """
        with connect(self.dsn) as conn, conn.transaction():
            head = self._lock_head(conn)
            if head.seq == 0 or (verified is not None and head != verified):
                return None
            return self._write_checkpoint(head)

    def _indexed_by_key(self, conn: psycopg.Connection, key: str) -> EvidenceRecord | None:
        row = conn.execute("select record from catalog.evidence_records where idempotency_key = %s",
                           (key,)).fetchone()
        return EvidenceRecord.from_json(json.loads(row[0])) if row else None

    def _index(self, conn: psycopg.Connection, record: EvidenceRecord, key: str | None) -> None:
        conn.execute(
            """insert into catalog.evidence_records
                   (seq, prev_hash, hash, at, actor, action, subject, blob_name, record, idempotency_key)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (record.seq, record.prev_hash, record.hash, record.at, record.actor, record.action, record.subject,
             record_blob_name(record.seq), record.to_bytes().decode("utf-8"), key))
        conn.execute("update catalog.evidence_head set seq = %s, hash = %s where id = 1", (record.seq, record.hash))

    def _adopt(self, conn: psycopg.Connection, head: ChainHead) -> tuple[EvidenceRecord, str | None]:
        """Index the record an earlier, crashed append left in storage right after ``head``."""
        name = record_blob_name(head.seq + 1)
        client = self.blobs.container(self.container).get_blob_client(name)
        try:
            props = client.get_blob_properties(timeout=TIMEOUT_SECONDS)
            raw = json.loads(client.download_blob(timeout=TIMEOUT_SECONDS).readall())
            record = EvidenceRecord.from_json(raw)
        except (ResourceNotFoundError, ValueError, EvidenceInvalid) as exc:
            raise EvidenceChainBroken(f"evidence record {head.seq + 1} exists in storage but cannot be read "
                                      f"({exc}); run `continuity evidence verify`") from exc
        except AzureError as exc:
            raise unavailable(exc) from exc
        if record.seq != head.seq + 1 or record.prev_hash != head.hash or record_hash(raw) != record.hash:
            raise EvidenceChainBroken(f"evidence record {head.seq + 1} in storage does not follow the indexed head "
                                      f"(seq {head.seq}); run `continuity evidence verify` before appending")
        key = (props.metadata or {}).get("idempotency_key")
        if key is not None and self._indexed_by_key(conn, key) is not None:
            key = None  # the key already names another record; keep the index unique
        self._index(conn, record, key)
        logger.warning("adopted an evidence record left by an interrupted append", extra={"seq": record.seq})
        return record, key

    # ---- read --------------------------------------------------------------------------------
    def head(self) -> ChainHead:
        """The chain head as the index knows it: for reports and outgoing events."""
        with connect(self.dsn) as conn:
            seq, hash_ = conn.execute("select seq, hash from catalog.evidence_head where id = 1").fetchone()  # type: ignore[misc]
        return ChainHead(int(seq), str(hash_))

    def records(self, subject: str | None = None, limit: int = 1000) -> list[EvidenceRecord]:
        """Indexed records, oldest first, optionally of one subject."""
        with connect(self.dsn) as conn:
            if subject is None:
                rows = conn.execute("select record from catalog.evidence_records order by seq limit %s",
                                    (limit,)).fetchall()
            else:
                rows = conn.execute("select record from catalog.evidence_records where subject = %s "
                                    "order by seq limit %s", (subject, limit)).fetchall()
        return [EvidenceRecord.from_json(json.loads(r[0])) for r in rows]

    def _indexed_hashes(self, after_appends_in_flight: bool = False) -> dict[int, str]:
        """``{seq: hash}`` of the indexed records; with ``after_appends_in_flight``, read once they have committed."""
        with connect(self.dsn) as conn, conn.transaction():
            if after_appends_in_flight:
                conn.execute("select 1 from catalog.evidence_head where id = 1 for share")
            return {int(s): str(h) for s, h in conn.execute("select seq, hash from catalog.evidence_records")}

    def verify(self, expect_head: ChainHead | None = None, checkpoint: bool = True) -> EvidenceReport:
        """Walk the chain and its checkpoints from storage, cross-check the index; the first break is the finding.

        :param expect_head: a head published earlier that the chain must reach with the same hash.
        :param checkpoint: when the chain is intact, checkpoint the head verified.
        """
        # The index first, storage second: a record's blob is stored before its index row commits, so every
        # record indexed at that moment is in storage when it is listed after, while appends running meanwhile
        # only add records beyond the index (never a false "deleted from storage").
        index = self._indexed_hashes()
        # Checkpoints are listed before records: a checkpoint is written after its record, so each one listed
        # vouches for a record the later listing holds (listed after, one written meanwhile looked truncated).
        checkpoints = self.reader.stored_checkpoints()
        verified = verify_storage(self.reader.stored_records(), checkpoints, expect_head)
        if verified.problem is None and verified.records.head.seq > max(index, default=0):
            # Records beyond the index are an append in flight (blob stored, index row not yet committed) or an
            # orphan. Appends hold the head lock until they commit, so once we have it, what is still unknown
            # to the index is an orphan, not a verify that raced the host. Appends queued for the lock before us
            # commit records beyond what we listed: only the seqs the listing reached are taken from this read
            # (the first read, made before the listing, still says what storage must hold).
            listed = verified.records.head.seq
            later = self._indexed_hashes(after_appends_in_flight=True)
            index = {**index, **{seq: hash_ for seq, hash_ in later.items() if seq <= listed}}
        index_head = ChainHead(max(index), index[max(index)]) if index else ChainHead(0, "0" * 64)
        index_problem = cross_check_index(verified.records, verified.records.hashes, index)
        problem = first_break([verified.problem, index_problem])
        written = None
        if problem is None and checkpoint and verified.records.head.seq > 0:
            written = self.checkpoint(verified=verified.records.head)
        return EvidenceReport(verified=verified, index_head=index_head, problem=problem,
                              enforces_immutability=self.blobs.enforces_immutability(),
                              store="azurite" if self.blobs.is_azurite else "azure", container=self.container,
                              checkpointed=written)
