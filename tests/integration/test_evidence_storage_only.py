"""Evidence an auditor verifies alone: storage-only verification with a read-only SAS, checkpoints, and the
idempotency race, against real Azurite and real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.connection import connect, ensure_database
from continuity.adapters.postgres.control_db import migrate
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceReader, EvidenceStore
from continuity.evidence.chain import (
    BreakKind,
    ChainHead,
    EvidenceRecord,
    build_record,
    checkpoint_blob_name,
    record_blob_name,
)
from continuity.kernel.errors import StoreUnavailable
from continuity.kernel.settings import AZURITE_ACCOUNT, AZURITE_KEY

pytestmark = pytest.mark.stack
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLI = str(PROJECT_ROOT / ".venv" / "bin" / "continuity")
NOBODY_LISTENS = int(os.environ.get("CONTINUITY_TEST_PORT_BASE", "26400")) + 98
BOGUS_DSN = f"host=127.0.0.1 port={NOBODY_LISTENS} user=nobody dbname=nothing connect_timeout=2"


@pytest.fixture
def store(fresh: tuple[str, str], blob_store: BlobStore) -> EvidenceStore:
    """Checkpoints every 3 records, so a few appends leave several."""
    return EvidenceStore(fresh[0], blob_store, container=fresh[1], checkpoint_every=3)


def read_only_url(blob_store: BlobStore, container: str) -> str:
    """The evidence container as an auditor gets it: a URL with a SAS that may only read and list."""
    sas = generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    return f"{blob_store.container(container).url}?{sas}"


def append_n(store: EvidenceStore, n: int) -> list[EvidenceRecord]:
    return [store.append(actor="test", action="test.appended", subject=f"item {i}", data={"i": i})
            for i in range(n)]


def drop_tail(store: EvidenceStore, blob_store: BlobStore, dsn: str, keep_through: int) -> None:
    """Play an attacker who controls storage and the control database: delete the newest records from both,
    leaving a shorter chain that is intact in itself (checkpoints stay: the container keeps them)."""
    for name in blob_store.list_names(store.container, prefix="records/"):
        if int(name.split("/")[1].split(".")[0]) > keep_through:
            blob_store.delete(store.container, name)
    with connect(dsn) as conn:
        conn.execute("delete from catalog.evidence_records where seq > %s", (keep_through,))
        row = conn.execute("select seq, hash from catalog.evidence_records order by seq desc limit 1").fetchone()
        conn.execute("update catalog.evidence_head set seq = %s, hash = %s where id = 1", row)


def forge_from(store: EvidenceStore, blob_store: BlobStore, seq: int) -> None:
    """Rewrite records ``seq``.. in storage as a consistent chain of their own (every hash recomputed)."""
    names = sorted(blob_store.list_names(store.container, prefix="records/"))
    previous = EvidenceRecord.from_json(json.loads(blob_store.download(store.container, record_blob_name(seq - 1))))
    head = previous.head
    for name in names[seq - 1:]:
        original = EvidenceRecord.from_json(json.loads(blob_store.download(store.container, name)))
        forged = build_record(head, at=original.at, actor="mallory", action=original.action,
                              subject=original.subject, data=original.data)
        blob_store.upload(store.container, name, forged.to_bytes())
        head = forged.head


def test_appends_checkpoint_the_head_at_the_cadence(store: EvidenceStore, blob_store: BlobStore) -> None:
    records = append_n(store, 7)
    assert sorted(blob_store.list_names(store.container, prefix="checkpoints/")) == [
        checkpoint_blob_name(3), checkpoint_blob_name(6)]
    newest = json.loads(blob_store.download(store.container, checkpoint_blob_name(6)))
    first = json.loads(blob_store.download(store.container, checkpoint_blob_name(3)))
    assert (newest["seq"], newest["hash"]) == (6, records[5].hash)
    assert newest["prev_checkpoint_hash"] == first["checkpoint_hash"]


def test_storage_only_verify_passes_on_a_good_chain_with_a_read_only_sas(store: EvidenceStore,
                                                                          blob_store: BlobStore) -> None:
    records = append_n(store, 7)
    reader = EvidenceReader.from_container_url(read_only_url(blob_store, store.container))
    report = reader.verify()
    assert report.ok, report.render()
    assert report.storage.head == records[-1].head == store.head()
    assert report.to_json()["mode"] == "storage-only" and report.index_head is None
    assert report.to_json()["checkpoints_checked"] == 2
    assert report.to_json()["newest_checkpoint"]["seq"] == 6
    # The credential it ran with can read and list, and nothing else.
    with pytest.raises(StoreUnavailable):
        reader.blobs.upload(store.container, "records/999999999999.json", b"{}", overwrite=False)
    assert not blob_store.exists(store.container, "records/999999999999.json")


def test_storage_only_verify_detects_a_deleted_tail_behind_a_checkpoint(
        store: EvidenceStore, blob_store: BlobStore, fresh: tuple[str, str]) -> None:
    append_n(store, 7)  # checkpoints at 3 and 6
    drop_tail(store, blob_store, fresh[0], keep_through=4)
    report = EvidenceReader(blob_store, store.container).verify()
    assert report.problem is not None, report.render()
    assert (report.problem.seq, report.problem.kind) == (5, BreakKind.TRUNCATED)
    assert "checkpoint 6 vouches for record 6" in report.problem.reason
    # The full verify, whose index the attacker made agree, finds it through the same checkpoint.
    full = store.verify()
    assert full.problem is not None and (full.problem.seq, full.problem.kind) == (5, BreakKind.TRUNCATED)
    assert full.checkpointed is None  # a broken chain is never checkpointed


def test_storage_only_verify_detects_a_rewritten_record(store: EvidenceStore, blob_store: BlobStore) -> None:
    append_n(store, 7)
    forge_from(store, blob_store, 2)  # records 2..7 rewritten, hashes recomputed: they link to each other
    report = EvidenceReader(blob_store, store.container).verify()
    assert report.problem is not None, report.render()
    assert (report.problem.seq, report.problem.kind) == (3, BreakKind.REWRITTEN)


def test_storage_only_verify_checks_the_expected_head(store: EvidenceStore, blob_store: BlobStore) -> None:
    records = append_n(store, 5)
    published = records[-1].head
    reader = EvidenceReader(blob_store, store.container)
    assert reader.verify(expect_head=published).ok
    wrong = reader.verify(expect_head=ChainHead(5, "f" * 64))
    assert wrong.problem is not None and (wrong.problem.seq, wrong.problem.kind) == (5, BreakKind.REWRITTEN)
    beyond = reader.verify(expect_head=ChainHead(9, published.hash))
    assert beyond.problem is not None and (beyond.problem.seq, beyond.problem.kind) == (6, BreakKind.TRUNCATED)


def test_full_verify_checkpoints_the_head_it_verified(fresh: tuple[str, str], blob_store: BlobStore) -> None:
    store = EvidenceStore(fresh[0], blob_store, container=fresh[1], checkpoint_every=0)
    records = append_n(store, 4)
    assert blob_store.list_names(store.container, prefix="checkpoints/") == []
    report = store.verify()
    assert report.ok and report.checkpointed is not None and report.checkpointed.head == records[-1].head
    assert store.verify().checkpointed == report.checkpointed  # verifying again adds nothing
    assert blob_store.list_names(store.container, prefix="checkpoints/") == [checkpoint_blob_name(4)]
    drop_tail(store, blob_store, fresh[0], keep_through=3)
    problem = EvidenceReader(blob_store, store.container).verify().problem
    assert problem is not None and (problem.seq, problem.kind) == (4, BreakKind.TRUNCATED)


def test_an_index_rebuilt_from_storage_adopts_records_past_existing_checkpoints(
        store: EvidenceStore, blob_store: BlobStore, stack: LocalStack) -> None:
    records = append_n(store, 7)  # checkpoints at 3 and 6
    dbname = f"ev_rebuilt_{uuid.uuid4().hex[:8]}"
    ensure_database(stack.dsn("control"), dbname)
    try:
        dsn = stack.dsn("control", dbname)
        migrate(dsn)
        rebuilt = EvidenceStore(dsn, blob_store, container=store.container, checkpoint_every=3)
        nxt = rebuilt.append(actor="test", action="test.appended", subject="after the rebuild", data={})
        assert nxt.seq == 8 and nxt.prev_hash == records[-1].hash
        assert rebuilt.verify().ok
    finally:
        with connect(stack.dsn("control")) as conn:
            conn.execute(f"drop database if exists {dbname} with (force)")


def test_concurrent_appends_with_one_idempotency_key_leave_one_record_and_no_orphan_blob(
        store: EvidenceStore, blob_store: BlobStore) -> None:
    threads = 8

    def append_once(start: threading.Barrier, key: str) -> EvidenceRecord:
        start.wait(timeout=30)  # all threads pass the unlocked key look-up together
        return store.append(actor="test", action="test.appended", subject="the same fact", data={},
                            idempotency_key=key)

    for round_ in range(3):
        start, key = threading.Barrier(threads), f"validation:run-{round_}"
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(append_once, [start] * threads, [key] * threads))
        assert all(r == results[0] for r in results), [r.seq for r in results]
    assert store.head().seq == 3
    assert sorted(blob_store.list_names(store.container, prefix="records/")) == [record_blob_name(s) for s in (1, 2, 3)]
    assert [r.subject for r in store.records()] == ["the same fact"] * 3
    # The next append is the next seq: nothing in storage was left over for it to adopt.
    assert store.append(actor="test", action="test.appended", subject="after", data={}).seq == 4
    assert store.verify().ok


def cli(*args: str, url: str | None = None, container: str | None = None) -> subprocess.CompletedProcess[str]:
    """``continuity evidence verify --storage-only`` as an auditor runs it: the control database unreachable and
    the storage account's key wrong, so only the read-only SAS in ``url`` can work."""
    env = {**os.environ, "CONTINUITY_CONTROL_DSN": BOGUS_DSN,
           "CONTINUITY_STORAGE_CONNECTION": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
           f"AccountKey={'A' * 86}==;BlobEndpoint=http://127.0.0.1:{NOBODY_LISTENS}/devstoreaccount1"}
    if container:
        env["CONTINUITY_EVIDENCE_CONTAINER"] = container
    command = [CLI, "evidence", "verify", "--storage-only", *(["--container-url", url] if url else []), *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_storage_only_verify_runs_with_a_read_only_sas_and_no_control_database(
        store: EvidenceStore, blob_store: BlobStore, fresh: tuple[str, str]) -> None:
    records = append_n(store, 7)
    url = read_only_url(blob_store, store.container)

    good = cli("--json", url=url)
    assert good.returncode == 0, good.stderr
    out = json.loads(good.stdout)
    assert out["ok"] is True and out["mode"] == "storage-only"
    assert out["storage_head"] == records[-1].head.to_json() and out["index_head"] is None

    head = f"{records[-1].seq}:{records[-1].hash}"
    assert cli("--expect-head", head, url=url).returncode == 0
    mismatch = cli("--expect-head", f"7:{'0' * 64}", url=url)
    assert mismatch.returncode == 1 and "BROKEN at record 7 (rewritten)" in mismatch.stdout

    drop_tail(store, blob_store, fresh[0], keep_through=4)
    truncated = cli("--json", "--expect-head", head, url=url)
    assert truncated.returncode == 1
    assert json.loads(truncated.stdout)["problem"]["kind"] == "truncated"

    # The default verify needs the control database: under the same environment it cannot run.
    full = subprocess.run([CLI, "evidence", "verify"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CONTINUITY_CONTROL_DSN": BOGUS_DSN,
                                            "CONTINUITY_EVIDENCE_CONTAINER": store.container})
    assert full.returncode == 2 and "cannot connect to PostgreSQL" in full.stderr


def test_cli_storage_only_verify_with_the_configured_account_and_a_bogus_control_dsn(
        store: EvidenceStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.cli.main import main

    records = append_n(store, 4)
    monkeypatch.setenv("CONTINUITY_CONTROL_DSN", BOGUS_DSN)
    monkeypatch.setenv("CONTINUITY_EVIDENCE_CONTAINER", store.container)
    assert main(["evidence", "verify", "--storage-only"]) == 0
    text = capsys.readouterr().out
    assert f"storage head: seq 4 {records[-1].hash}" in text and "storage only (no control database)" in text


def test_cli_refuses_a_malformed_expected_head_and_a_container_url_without_storage_only() -> None:
    malformed = cli("--expect-head", "42", url=None)
    assert malformed.returncode == 2 and "SEQ:HASH" in malformed.stderr
    env = {**os.environ, "CONTINUITY_CONTROL_DSN": BOGUS_DSN}
    mixed = subprocess.run([CLI, "evidence", "verify", "--container-url", "https://a.blob.core.windows.net/e?sig=x"],
                           cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert mixed.returncode == 2 and "add --storage-only" in mixed.stderr
