"""The evidence chain in storage: one blob per record, plus an index in the control database.

Append protocol (serialised, crash-safe, idempotent):

1. ``SELECT ... FOR UPDATE`` on the single chain-head row: concurrent appenders in any thread or
   process queue here, so the chain never forks.
2. Write the record blob ``records/{seq:012d}.json`` with ``If-None-Match: *`` (never overwrite).
3. Insert the index row and move the head, then commit.

A crash after 2 and before 3 leaves a valid record in storage that the index lacks (never a gap: the
blob exists before the index names it). The next append finds the blob taken, adopts it into the
index if it links to the head, and appends after it. An append with an idempotency key that is
already indexed (or sits in such an orphan blob) returns that record instead of appending twice, so
activities retried at least once record once.

:meth:`EvidenceStore.verify` walks the chain from storage, not trusting the database, then
cross-checks the database index.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from continuity.adapters.postgres.connection import connect
from continuity.adapters.storage.blob_store import TIMEOUT_SECONDS, BlobStore, unavailable
from continuity.evidence.chain import (
    RECORD_PREFIX,
    ChainBreak,
    ChainHead,
    ChainVerification,
    EvidenceChainBroken,
    EvidenceInvalid,
    EvidenceRecord,
    build_record,
    cross_check_index,
    record_blob_name,
    record_hash,
    seq_from_blob_name,
    verify_chain,
)
from continuity.kernel import settings
from continuity.kernel.errors import BackupNotFound

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII: it travels as blob metadata
IMMUTABILITY_NOTE_AZURITE = "no (Azurite)"


@dataclass(frozen=True)
class EvidenceReport:
    """The result of ``continuity evidence verify``."""

    storage: ChainVerification
    index_head: ChainHead
    problem: ChainBreak | None
    enforces_immutability: bool
    store: str
    container: str

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def immutability(self) -> str:
        if self.enforces_immutability:
            return "yes"
        return IMMUTABILITY_NOTE_AZURITE if self.store == "azurite" else "no"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records_checked": self.storage.records_checked,
            "storage_head": self.storage.head.to_json(),
            "index_head": self.index_head.to_json(),
            "problem": self.problem.to_json() if self.problem else None,
            "container": self.container,
            "store_enforces_immutability": self.enforces_immutability,
            "immutability": self.immutability,
        }

    def render(self) -> str:
        lines = [
            f"evidence chain in container {self.container!r}: {self.storage.records_checked} record(s) checked "
            "from storage",
            f"storage head: seq {self.storage.head.seq} {self.storage.head.hash}",
            f"index head:   seq {self.index_head.seq} {self.index_head.hash}",
            f"store enforces immutability: {self.immutability}",
        ]
        if self.problem:
            lines.append(f"BROKEN at record {self.problem.seq} ({self.problem.kind}): {self.problem.reason}")
        else:
            lines.append("OK: every record matches its hash and links to the one before it")
        return "\n".join(lines)


class EvidenceStore:
    """Append to and verify the evidence chain of one control database and one evidence container."""

    def __init__(self, dsn: str, blobs: BlobStore, container: str | None = None) -> None:
        self.dsn = dsn
        self.blobs = blobs
        self.container = container or settings.get("CONTINUITY_EVIDENCE_CONTAINER")

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
                if existing is not None:
                    return existing
            seq, hash_ = conn.execute(  # type: ignore[misc]
                "select seq, hash from catalog.evidence_head where id = 1 for update").fetchone()
            head = ChainHead(int(seq), str(hash_))
            while True:
                record = build_record(head, at=at, actor=actor, action=action, subject=subject, data=data)
                metadata = {"idempotency_key": idempotency_key} if idempotency_key else None
                try:
                    self.blobs.upload(self.container, record_blob_name(record.seq), record.to_bytes(),
                                      overwrite=False, metadata=metadata)
                except ResourceExistsError:
                    orphan, orphan_key = self._adopt(conn, head)
                    if idempotency_key is not None and orphan_key == idempotency_key:
                        return orphan
                    head = orphan.head
                    continue
                self._index(conn, record, idempotency_key)
                logger.info("evidence appended", extra={"seq": record.seq, "action": action, "subject": subject})
                return record

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

    def _stored(self) -> Iterator[tuple[int, bytes]]:
        names = self.blobs.list_names(self.container, prefix=RECORD_PREFIX)
        numbered = sorted((seq, name) for name in names if (seq := seq_from_blob_name(name)) is not None)
        for seq, name in numbered:
            try:
                yield seq, self.blobs.download(self.container, name)
            except BackupNotFound:  # deleted between list and read: the walk reports the gap
                logger.warning("evidence record vanished during verify", extra={"seq": seq})

    def verify(self) -> EvidenceReport:
        """Walk the chain from storage and cross-check the index; the first break is the finding."""
        walk = verify_chain(self._stored())
        with connect(self.dsn) as conn:
            index = {int(s): str(h) for s, h in conn.execute("select seq, hash from catalog.evidence_records")}
        index_head = ChainHead(max(index), index[max(index)]) if index else ChainHead(0, "0" * 64)
        index_problem = cross_check_index(walk, walk.hashes, index)
        problems = [p for p in (walk.problem, index_problem) if p is not None]
        problem = min(problems, key=lambda p: p.seq) if problems else None
        return EvidenceReport(storage=walk, index_head=index_head, problem=problem,
                              enforces_immutability=self.blobs.enforces_immutability(),
                              store="azurite" if self.blobs.is_azurite else "azure", container=self.container)
