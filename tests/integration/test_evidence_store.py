"""The evidence chain against real PostgreSQL (index, head lock) and real Azurite (one blob per record)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from continuity.adapters.postgres.connection import connect
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.evidence.chain import (
    BreakKind,
    ChainHead,
    EvidenceChainBroken,
    EvidenceRecord,
    build_record,
    record_blob_name,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.stack
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def store(fresh: tuple[str, str], blob_store: BlobStore) -> EvidenceStore:
    return EvidenceStore(fresh[0], blob_store, container=fresh[1])


def append(store: EvidenceStore, i: int, key: str | None = None) -> object:
    return store.append(actor="test", action="test.appended", subject=f"item {i}", data={"i": i},
                        idempotency_key=key)


def test_appended_records_form_a_chain_that_verifies_from_storage(store: EvidenceStore) -> None:
    for i in range(5):
        append(store, i)
    report = store.verify()
    assert report.ok, report.render()
    assert report.storage.records_checked == 5
    assert report.storage.head == store.head()
    assert report.index_head == store.head()
    assert store.head().seq == 5


def test_verify_reports_that_azurite_does_not_enforce_immutability(store: EvidenceStore) -> None:
    append(store, 1)
    report = store.verify()
    assert report.to_json()["store_enforces_immutability"] is False
    assert "store enforces immutability: no (Azurite)" in report.render()


def test_each_record_is_one_canonical_blob(store: EvidenceStore, blob_store: BlobStore) -> None:
    record = append(store, 1)
    assert blob_store.download(store.container, record_blob_name(1)) == record.to_bytes()  # type: ignore[attr-defined]


def test_concurrent_threads_never_fork_the_chain(store: EvidenceStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: append(store, i), range(40)))
    report = store.verify()
    assert report.ok, report.render()
    assert report.storage.records_checked == 40
    assert sorted(r.data["i"] for r in store.records()) == list(range(40))


def test_concurrent_processes_never_fork_the_chain(store: EvidenceStore, fresh: tuple[str, str]) -> None:
    dsn, container = fresh
    script = (
        "import sys; from continuity.adapters.storage.blob_store import BlobStore;"
        "from continuity.adapters.storage.evidence_store import EvidenceStore;"
        "s = EvidenceStore(sys.argv[1], BlobStore(), container=sys.argv[2]);"
        "[s.append(actor='proc', action='test.appended', subject=f'p{sys.argv[3]}-{i}', data={}) for i in range(15)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, dsn, container, str(p)], cwd=PROJECT_ROOT)
             for p in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    report = store.verify()
    assert report.ok, report.render()
    assert report.storage.records_checked == 45


class AppendHeldAfterItsBlob(BlobStore):
    """Real Azurite, but the append of ``seq`` stops between storing its record blob and committing its index row."""

    def __init__(self, seq: int) -> None:
        super().__init__()
        self.name = record_blob_name(seq)
        self.stored, self.go_on = threading.Event(), threading.Event()

    def upload(self, container: str, name: str, data: Any, **kwargs: Any) -> Any:
        written = super().upload(container, name, data, **kwargs)
        if name == self.name:
            self.stored.set()
            self.go_on.wait(timeout=60)
        return written


def lock_waiters(dsn: str) -> int:
    with connect(dsn) as conn:
        return int(conn.execute(  # type: ignore[index]
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'"
        ).fetchone()[0])


@contextlib.contextmanager
def append_2_held_after_its_blob(dsn: str, container: str, pool: ThreadPoolExecutor) -> Iterator[Future[Any]]:
    """Record 1 appended; the append of record 2 running in ``pool``, held after storing its blob (before its
    index row commits) until the block ends. Yields that append's future."""
    append(EvidenceStore(dsn, BlobStore(), container=container), 1)
    held = AppendHeldAfterItsBlob(2)
    appending = pool.submit(append, EvidenceStore(dsn, held, container=container), 2)
    try:
        assert held.stored.wait(timeout=60), "the append never stored its blob"
        yield appending
    finally:
        held.go_on.set()


def test_verify_while_an_append_is_half_way_waits_for_it_instead_of_reporting_a_break(
        fresh: tuple[str, str]) -> None:
    # CI caught this: a verify run while the host was still appending saw record N in storage before its index
    # row committed and called it "written outside this system". An append in flight is not a break.
    dsn, container = fresh
    verifier = EvidenceStore(dsn, BlobStore(), container=container)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with append_2_held_after_its_blob(dsn, container, pool) as appending:
            verifying = pool.submit(verifier.verify)
            wait_until(lambda: verifying.done() or lock_waiters(dsn) > 0, timeout=60,
                       what="verify done, or waiting for the append")
        report = verifying.result(timeout=60)
        assert appending.result(timeout=60).seq == 2
    assert report.ok, report.render()
    assert report.storage.records_checked == 2 and report.index_head.seq == 2  # type: ignore[union-attr]


def test_verify_does_not_call_records_appended_after_its_listing_deleted(fresh: tuple[str, str]) -> None:
    # Record 2 is in flight when verify lists storage, and append 3 is queued for the head lock before verify:
    # by the time verify holds the lock, the index holds 3, which its listing could not. Not a deleted tail.
    dsn, container = fresh
    verifier = EvidenceStore(dsn, BlobStore(), container=container)
    with ThreadPoolExecutor(max_workers=3) as pool:
        with append_2_held_after_its_blob(dsn, container, pool) as appending:
            queued = pool.submit(append, EvidenceStore(dsn, BlobStore(), container=container), 3)
            wait_until(lambda: lock_waiters(dsn) >= 1, timeout=60, what="append 3 queued for the head lock")
            verifying = pool.submit(verifier.verify)
            wait_until(lambda: verifying.done() or lock_waiters(dsn) >= 2, timeout=60,
                       what="verify done, or queued behind append 3")
        report = verifying.result(timeout=60)
        assert (appending.result(timeout=60).seq, queued.result(timeout=60).seq) == (2, 3)  # type: ignore[attr-defined]
    assert report.ok, report.render()
    assert report.storage.records_checked == 2
    assert verifier.verify().storage.records_checked == 3


class AppendsRightAfterListingRecords(BlobStore):
    """Real Azurite; the first listing of ``records/`` is followed at once by an append that checkpoints its head."""

    def __init__(self, appender: EvidenceStore) -> None:
        super().__init__()
        self.appender: EvidenceStore | None = appender

    def list_names(self, container: str, prefix: str | None = None) -> list[str]:
        names = super().list_names(container, prefix=prefix)
        if prefix == "records/" and self.appender is not None:
            appender, self.appender = self.appender, None
            append(appender, 99)
        return names


def test_verify_does_not_call_a_checkpoint_written_during_it_a_truncated_tail(
        fresh: tuple[str, str], blob_store: BlobStore) -> None:
    # A checkpoint is written after its record; listed after the records, it can vouch for one the listing
    # missed and look like a deleted tail. Checkpoints are listed first, so each one's record is in the listing.
    dsn, container = fresh
    appender = EvidenceStore(dsn, blob_store, container=container, checkpoint_every=1)
    append(appender, 1)
    verifier = EvidenceStore(dsn, AppendsRightAfterListingRecords(appender), container=container, checkpoint_every=0)
    report = verifier.verify(checkpoint=False)
    assert report.ok, report.render()
    assert verifier.verify().storage.records_checked == 2  # the record appended meanwhile is in the next one


def test_retried_append_with_same_idempotency_key_appends_once(store: EvidenceStore) -> None:
    first = append(store, 1, key="catalog.ingested:acme/x:abc")
    again = append(store, 1, key="catalog.ingested:acme/x:abc")
    assert again == first
    assert store.head().seq == 1


def test_idempotency_key_with_spaces_is_refused(store: EvidenceStore) -> None:
    from continuity.evidence.chain import EvidenceInvalid

    with pytest.raises(EvidenceInvalid, match="printable ASCII"):
        append(store, 1, key="has space")


def test_append_after_crash_adopts_the_orphan_blob_and_leaves_no_gap(store: EvidenceStore,
                                                                     blob_store: BlobStore) -> None:
    append(store, 1)
    # An append that wrote its blob and died before committing its index row.
    orphan = build_record(store.head(), at=datetime.now(UTC), actor="crashed", action="test.appended",
                          subject="item orphan", data={})
    blob_store.upload(store.container, record_blob_name(orphan.seq), orphan.to_bytes(), overwrite=False,
                      metadata={"idempotency_key": "orphan-key"})
    assert store.verify().problem.kind is BreakKind.INDEX_MISMATCH  # type: ignore[union-attr]
    nxt = append(store, 3)
    assert nxt.seq == 3  # type: ignore[attr-defined]
    assert store.verify().ok
    # The crashed activity's retry finds its record instead of appending a second one.
    assert append(store, 2, key="orphan-key") == orphan
    assert store.head().seq == 3


def test_retry_of_crashed_append_returns_the_orphan(store: EvidenceStore, blob_store: BlobStore) -> None:
    orphan = build_record(store.head(), at=datetime.now(UTC), actor="crashed", action="test.appended",
                          subject="item 1", data={"i": 1})
    blob_store.upload(store.container, record_blob_name(1), orphan.to_bytes(), overwrite=False,
                      metadata={"idempotency_key": "k1"})
    assert append(store, 1, key="k1") == orphan
    assert store.head().seq == 1
    assert store.verify().ok


def test_append_refuses_when_storage_holds_a_record_that_does_not_link(store: EvidenceStore,
                                                                        blob_store: BlobStore) -> None:
    append(store, 1)
    blob_store.upload(store.container, record_blob_name(2), b'{"not": "a record"}', overwrite=False)
    with pytest.raises(EvidenceChainBroken, match="record 2 exists in storage but cannot be read"):
        append(store, 2)


def tamper(blob_store: BlobStore, container: str, seq: int, edit: object) -> None:
    raw = json.loads(blob_store.download(container, record_blob_name(seq)))
    edit(raw)  # type: ignore[operator]
    blob_store.upload(container, record_blob_name(seq), json.dumps(raw).encode())


def test_verify_names_an_edited_record(store: EvidenceStore, blob_store: BlobStore) -> None:
    for i in range(4):
        append(store, i)
    tamper(blob_store, store.container, 2, lambda r: r["data"].update(i=99))
    report = store.verify()
    assert not report.ok
    assert (report.problem.seq, report.problem.kind) == (2, BreakKind.EDITED)  # type: ignore[union-attr]


def test_verify_names_a_deleted_record(store: EvidenceStore, blob_store: BlobStore) -> None:
    for i in range(4):
        append(store, i)
    blob_store.delete(store.container, record_blob_name(3))
    problem = store.verify().problem
    assert problem is not None and (problem.seq, problem.kind) == (3, BreakKind.DELETED)


def test_verify_names_a_deleted_last_record_through_the_index(store: EvidenceStore, blob_store: BlobStore) -> None:
    for i in range(4):
        append(store, i)
    blob_store.delete(store.container, record_blob_name(4))
    problem = store.verify().problem
    assert problem is not None and (problem.seq, problem.kind) == (4, BreakKind.INDEX_MISMATCH)


def test_verify_names_swapped_records(store: EvidenceStore, blob_store: BlobStore) -> None:
    for i in range(4):
        append(store, i)
    two = blob_store.download(store.container, record_blob_name(2))
    three = blob_store.download(store.container, record_blob_name(3))
    blob_store.upload(store.container, record_blob_name(2), three)
    blob_store.upload(store.container, record_blob_name(3), two)
    problem = store.verify().problem
    assert problem is not None and (problem.seq, problem.kind) == (2, BreakKind.REORDERED)


def rewrite_index(dsn: str, keep_through: int, forged: list[object] | None = None) -> None:
    """Play an attacker who controls the control database: drop every index row after ``keep_through``,
    write ``forged`` records in as if they were the originals, and move the head to the last row left."""
    with connect(dsn) as conn:
        conn.execute("delete from catalog.evidence_records where seq > %s", (keep_through,))
        for record in forged or []:
            conn.execute("update catalog.evidence_records set hash = %s, record = %s where seq = %s",
                         (record.hash, record.to_bytes().decode(), record.seq))  # type: ignore[attr-defined]
        row = conn.execute("select seq, hash from catalog.evidence_records order by seq desc limit 1").fetchone()
        seq, hash_ = row if row else (0, "0" * 64)
        conn.execute("update catalog.evidence_head set seq = %s, hash = %s where id = 1", (seq, hash_))


def forge(store: EvidenceStore, blob_store: BlobStore, seq: int, **changes: object) -> object:
    """Rewrite record ``seq`` in storage with a correctly recomputed hash, so the record alone looks intact."""
    original = EvidenceRecord.from_json(json.loads(blob_store.download(store.container, record_blob_name(seq))))
    previous = ChainHead(seq - 1, original.prev_hash)
    fields = {"at": original.at, "actor": original.actor, "action": original.action, "subject": original.subject,
              "data": original.data, **changes}
    record = build_record(previous, **fields)  # type: ignore[arg-type]
    blob_store.upload(store.container, record_blob_name(seq), record.to_bytes())
    return record


def test_verify_does_not_trust_the_database(store: EvidenceStore, blob_store: BlobStore,
                                            fresh: tuple[str, str]) -> None:
    for i in range(4):
        append(store, i)
    # Record 2 rewritten with a valid hash of its own, and the index made to agree with the forgery: the
    # database vouches for it, storage does not (record 3 still links to the original record 2).
    forged = forge(store, blob_store, 2, actor="mallory")
    rewrite_index(fresh[0], keep_through=4, forged=[forged])
    report = store.verify()
    assert report.index_head.seq == 4
    assert report.problem is not None and (report.problem.seq, report.problem.kind) == (3, BreakKind.REORDERED)
    assert report.storage.records_checked == 2  # the walk accepted 1 and the forged 2, then broke at the link


@pytest.mark.parametrize("damage, expected", [
    ("edit record 2", (2, BreakKind.EDITED)),
    ("delete record 2", (2, BreakKind.DELETED)),
    ("swap records 2 and 3", (2, BreakKind.REORDERED)),
])
def test_verify_finds_tampering_from_storage_alone_with_the_index_emptied(
        store: EvidenceStore, blob_store: BlobStore, fresh: tuple[str, str], damage: str,
        expected: tuple[int, BreakKind]) -> None:
    for i in range(4):
        append(store, i)
    rewrite_index(fresh[0], keep_through=0)  # the database knows nothing any more
    if damage == "edit record 2":
        tamper(blob_store, store.container, 2, lambda r: r["data"].update(i=99))
    elif damage == "delete record 2":
        blob_store.delete(store.container, record_blob_name(2))
    else:
        two = blob_store.download(store.container, record_blob_name(2))
        blob_store.upload(store.container, record_blob_name(2), blob_store.download(store.container,
                                                                                     record_blob_name(3)))
        blob_store.upload(store.container, record_blob_name(3), two)
    report = store.verify()
    assert report.index_head.seq == 0
    assert report.problem is not None and (report.problem.seq, report.problem.kind) == expected, report.render()


def test_a_truncated_tail_is_found_through_the_index_and_from_storage_alone_against_a_published_head(
        store: EvidenceStore, blob_store: BlobStore, fresh: tuple[str, str]) -> None:
    from continuity.adapters.storage.evidence_store import EvidenceReader

    records = [append(store, i) for i in range(5)]
    published = store.head()  # what outgoing events and reports carry as evidence_chain_head
    assert published == records[-1].head  # type: ignore[attr-defined]
    for seq in (4, 5):  # the newest two records deleted from storage
        blob_store.delete(store.container, record_blob_name(seq))

    # With the index intact, verify names the first missing record.
    report = store.verify()
    assert report.problem is not None and (report.problem.seq, report.problem.kind) == (4, BreakKind.INDEX_MISMATCH)
    assert "deleted from storage" in report.problem.reason

    # An attacker who also deletes the index rows leaves a shorter chain that is intact in itself, and no
    # checkpoint lies beyond it yet (the cadence is 100 records): both verifies pass on their own. What catches
    # it from storage alone is a head published before: --expect-head.
    rewrite_index(fresh[0], keep_through=3)
    report = store.verify(checkpoint=False)
    assert report.ok, report.render()  # the limit without a checkpoint, asserted so that closing it shows up here
    assert report.storage.head == records[2].head  # type: ignore[attr-defined]
    reader = EvidenceReader(blob_store, store.container)
    assert reader.verify().ok
    against = reader.verify(expect_head=published).problem
    assert against is not None and (against.seq, against.kind) == (4, BreakKind.TRUNCATED)


def test_cli_evidence_verify_exits_nonzero_naming_the_broken_record(
        store: EvidenceStore, blob_store: BlobStore, fresh: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.cli.main import main

    monkeypatch.setenv("CONTINUITY_CONTROL_DSN", fresh[0])
    monkeypatch.setenv("CONTINUITY_EVIDENCE_CONTAINER", fresh[1])
    for i in range(3):
        append(store, i)
    assert main(["evidence", "verify"]) == 0
    assert "store enforces immutability: no (Azurite)" in capsys.readouterr().out
    tamper(blob_store, store.container, 2, lambda r: r.update(subject="forged"))
    assert main(["evidence", "verify", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["problem"]["seq"] == 2 and out["problem"]["kind"] == "edited"
    assert out["records_checked"] == 1
