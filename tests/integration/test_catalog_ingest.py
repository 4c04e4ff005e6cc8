"""Catalog ingest, reconcile and rebuild against real Azurite and a real control database.

Backups here are small synthetic ones (a few KB of bytes as db.dump and a valid manifest with the
right sha256 and size); the last test catalogs a real backup taken by the backup adapter.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.catalog_store import PgCatalogStore
from continuity.adapters.postgres.connection import connect, ensure_database
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.catalog.ingest import CatalogService, IngestAction
from continuity.catalog.model import BackupStatus, RejectionCode
from continuity.catalog.service import open_catalog
from tests.unit.test_catalog import make_manifest

pytestmark = pytest.mark.stack
S = BackupStatus
A = IngestAction


@dataclass
class Env:
    stack: LocalStack
    blobs: BlobStore
    dsn: str
    backups: str
    evidence: str
    dbs: list[str]

    def service(self, dsn: str | None = None) -> CatalogService:
        return open_catalog(dsn or self.dsn, self.blobs, backup_container=self.backups,
                            evidence_container=self.evidence)

    def store(self, dsn: str | None = None) -> PgCatalogStore:
        return PgCatalogStore(dsn or self.dsn)

    def evidence_store(self) -> EvidenceStore:
        return EvidenceStore(self.dsn, self.blobs, self.evidence)

    def new_db(self) -> str:
        name = f"cati_{uuid.uuid4().hex[:10]}"
        ensure_database(self.stack.dsn("control"), name)
        self.dbs.append(name)
        return self.stack.dsn("control", name)


@pytest.fixture
def env(stack: LocalStack, blob_store: BlobStore) -> Iterator[Env]:
    suffix = uuid.uuid4().hex[:10]
    e = Env(stack, blob_store, "", f"backups-{suffix}", f"evidence-{suffix}", [])
    e.dsn = e.new_db()
    blob_store.ensure_containers([e.backups, e.evidence])
    yield e
    for c in (e.backups, e.evidence):
        blob_store.container(c).delete_container()
    with connect(stack.dsn("control")) as conn:
        for name in e.dbs:
            conn.execute(f"drop database if exists {name} with (force)")


def bid(n: int, day: int = 1) -> str:
    return f"202503{day:02d}T02{n % 60:02d}00Z-{n:06x}"


def prefix(tenant: str, backup_id: str) -> str:
    return f"{tenant}/{backup_id[:4]}/{backup_id[4:6]}/{backup_id[6:8]}/{backup_id}/"


def dump_bytes(n: int) -> bytes:
    return b"PGDMP" + bytes([n % 256]) * 3000


def put_dump(env: Env, tenant: str, backup_id: str, data: bytes) -> str:
    name = prefix(tenant, backup_id) + "db.dump"
    env.blobs.upload(env.backups, name, data)
    return name


def put_manifest(env: Env, tenant: str, backup_id: str, data: bytes | None = None, **overrides: Any) -> str:
    name = prefix(tenant, backup_id) + "manifest.json"
    body = make_manifest(tenant, backup_id, dump=data if data is not None else dump_bytes(0), **overrides)
    env.blobs.upload(env.backups, name, json.dumps(body).encode())
    return name


def put_backup(env: Env, tenant: str, n: int, day: int = 1) -> tuple[str, str]:
    backup_id = bid(n, day)
    data = dump_bytes(n)
    return put_dump(env, tenant, backup_id, data), put_manifest(env, tenant, backup_id, data)


def evidence_actions(env: Env) -> list[str]:
    return [r.action for r in env.evidence_store().records()]


# ---- the two parts, in any order -------------------------------------------------------------

def test_dump_then_manifest_gives_pending_then_available_with_tags_and_evidence(env: Env) -> None:
    svc = env.service()
    backup_id = bid(1)
    dump = put_dump(env, "acme-finance", backup_id, dump_bytes(1))
    first = svc.ingest_blob(dump)
    assert (first.action, first.status) == (A.PENDING, S.PENDING)
    assert "waiting for manifest.json" in first.message
    assert env.blobs.get_tags(env.backups, dump)["status"] == "pending"
    manifest = put_manifest(env, "acme-finance", backup_id, dump_bytes(1))
    second = svc.ingest_blob(manifest)
    assert (second.action, second.status) == (A.CATALOGED, S.AVAILABLE)
    entry = env.store().get_backup("acme-finance", backup_id)
    assert entry.status is S.AVAILABLE
    assert entry.dump_size == len(dump_bytes(1))
    for name in (dump, manifest):
        assert env.blobs.get_tags(env.backups, name) == {
            "tenant": "acme-finance", "backup_id": backup_id, "kind": "full", "status": "available"}
    assert evidence_actions(env) == ["catalog.ingested"]
    assert second.evidence_seq == 1


def test_manifest_before_dump_converges_on_the_same_entry(env: Env) -> None:
    svc = env.service()
    backup_id = bid(2)
    manifest = put_manifest(env, "acme-finance", backup_id, dump_bytes(2))
    assert svc.ingest_blob(manifest).action is A.PENDING
    assert env.store().get_backup("acme-finance", backup_id).status_reason == "waiting for db.dump"
    dump = put_dump(env, "acme-finance", backup_id, dump_bytes(2))
    assert svc.ingest_blob(dump).action is A.CATALOGED
    assert env.store().get_backup("acme-finance", backup_id).status is S.AVAILABLE


def test_duplicate_late_and_reordered_events_give_one_entry_and_one_evidence_record(env: Env) -> None:
    svc = env.service()
    dump, manifest = put_backup(env, "globex", 3)
    actions = [svc.ingest_blob(name).action for name in (manifest, dump, manifest, dump)]
    assert actions == [A.CATALOGED, A.DUPLICATE, A.DUPLICATE, A.DUPLICATE]
    items, _ = env.store().list_backups("globex")
    assert len(items) == 1 and items[0].status is S.AVAILABLE
    assert evidence_actions(env) == ["catalog.ingested"]


def test_redelivered_event_id_is_a_no_op(env: Env) -> None:
    svc = env.service()
    dump, manifest = put_backup(env, "globex", 4)
    assert svc.ingest_blob(manifest, event_id="evt-1").action is A.CATALOGED
    again = svc.ingest_blob(manifest, event_id="evt-1")
    assert again.action is A.DUPLICATE_EVENT
    assert "processed before (cataloged)" in again.message


def test_concurrent_deliveries_of_both_blobs_catalog_once(env: Env) -> None:
    svc = env.service()
    dump, manifest = put_backup(env, "acme-finance", 5)
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(svc.ingest_blob, [dump, manifest] * 3))
    assert sorted(o.action for o in outcomes).count(A.CATALOGED) == 1
    assert {o.action for o in outcomes} <= {A.CATALOGED, A.DUPLICATE}
    assert evidence_actions(env) == ["catalog.ingested"]


# ---- refusals ------------------------------------------------------------------------------

def test_different_manifest_under_a_cataloged_id_is_a_conflict_and_the_entry_is_kept(env: Env) -> None:
    svc = env.service()
    dump, manifest = put_backup(env, "acme-finance", 6)
    svc.ingest_blob(manifest)
    before = env.store().get_backup("acme-finance", bid(6))
    put_manifest(env, "acme-finance", bid(6), dump_bytes(6), row_counts={"account_move": 999})
    outcome = svc.ingest_blob(manifest)
    assert outcome.action is A.CONFLICT and outcome.rejected
    assert outcome.rejection_code is RejectionCode.CONFLICT
    assert "the catalog entry is kept" in outcome.message
    after = env.store().get_backup("acme-finance", bid(6))
    assert after.manifest_sha256 == before.manifest_sha256 and after.status is S.AVAILABLE
    assert [r["code"] for r in env.store().rejections("acme-finance")] == ["conflict"]
    assert evidence_actions(env) == ["catalog.ingested", "catalog.rejected"]


def test_checksum_mismatch_is_rejected_with_reason_tag_and_evidence(env: Env) -> None:
    svc = env.service()
    backup_id = bid(7)
    dump = put_dump(env, "acme-finance", backup_id, b"PGDMP" + b"\x01" * 3000)  # same size, other bytes
    put_manifest(env, "acme-finance", backup_id, dump_bytes(7))
    outcome = svc.ingest_blob(dump)
    assert (outcome.action, outcome.rejection_code) == (A.REJECTED, RejectionCode.CHECKSUM_MISMATCH)
    entry = env.store().get_backup("acme-finance", backup_id)
    assert entry.status is S.REJECTED and "sha256" in entry.status_reason
    assert env.blobs.get_tags(env.backups, dump)["status"] == "rejected"
    assert env.store().rejections("acme-finance")[0]["code"] == "checksum_mismatch"
    assert evidence_actions(env) == ["catalog.rejected"]


def test_size_mismatch_is_rejected(env: Env) -> None:
    svc = env.service()
    backup_id = bid(8)
    dump = put_dump(env, "acme-finance", backup_id, dump_bytes(8) + b"trailing")
    put_manifest(env, "acme-finance", backup_id, dump_bytes(8))
    outcome = svc.ingest_blob(dump)
    assert outcome.rejection_code is RejectionCode.SIZE_MISMATCH
    assert "bytes; the manifest says" in outcome.message


def test_rejected_backup_is_cataloged_once_the_right_dump_is_uploaded(env: Env) -> None:
    svc = env.service()
    backup_id = bid(9)
    dump = put_dump(env, "acme-finance", backup_id, b"truncated")
    put_manifest(env, "acme-finance", backup_id, dump_bytes(9))
    assert svc.ingest_blob(dump).action is A.REJECTED
    put_dump(env, "acme-finance", backup_id, dump_bytes(9))
    assert svc.ingest_blob(dump).action is A.CATALOGED
    assert env.store().get_backup("acme-finance", backup_id).status is S.AVAILABLE


def test_manifest_that_is_not_json_is_rejected(env: Env) -> None:
    svc = env.service()
    backup_id = bid(10)
    put_dump(env, "acme-finance", backup_id, dump_bytes(10))
    name = prefix("acme-finance", backup_id) + "manifest.json"
    env.blobs.upload(env.backups, name, b"{half a manifest")
    outcome = svc.ingest_blob(name)
    assert outcome.rejection_code is RejectionCode.MANIFEST_INVALID
    assert env.store().get_backup("acme-finance", backup_id).status is S.REJECTED


def test_manifest_failing_the_schema_is_rejected_naming_the_field(env: Env) -> None:
    svc = env.service()
    backup_id = bid(11)
    put_dump(env, "acme-finance", backup_id, dump_bytes(11))
    name = put_manifest(env, "acme-finance", backup_id, dump_bytes(11), unexpected="x")
    outcome = svc.ingest_blob(name)
    assert outcome.rejection_code is RejectionCode.MANIFEST_INVALID
    assert "fails the schema" in outcome.message and "unexpected" in outcome.message


def test_manifest_of_another_tenant_is_rejected(env: Env) -> None:
    svc = env.service()
    backup_id = bid(12)
    put_dump(env, "acme-finance", backup_id, dump_bytes(12))
    name = prefix("acme-finance", backup_id) + "manifest.json"
    env.blobs.upload(env.backups, name, json.dumps(make_manifest("globex", backup_id, dump_bytes(12))).encode())
    outcome = svc.ingest_blob(name)
    assert outcome.rejection_code is RejectionCode.MANIFEST_MISMATCH
    assert "names tenant 'globex'" in outcome.message


@pytest.mark.parametrize(("name", "code"), [
    ("acme-finance/2025/03/01/../../x/db.dump", RejectionCode.LAYOUT),
    ("acme-finance/2025/03/01/20250301T020000Z-a1b2c3/notes.txt", RejectionCode.LAYOUT),
    ("acme-finance/2025/03/01/20250301T020000Z-a1b2c3/db.dump\x00.txt", RejectionCode.LAYOUT),
    ("umbrella/2025/03/01/20250301T020000Z-a1b2c3/db.dump", RejectionCode.UNKNOWN_TENANT),
])
def test_blob_outside_the_layout_is_rejected_and_recorded(env: Env, name: str, code: RejectionCode) -> None:
    outcome = env.service().ingest_blob(name, event_id=f"evt-{code}")
    assert (outcome.action, outcome.rejection_code) == (A.REJECTED, code)
    assert [r["code"] for r in env.store().rejections()] == [str(code)]
    assert evidence_actions(env) == ["catalog.rejected"]
    assert env.store().count() == 0
    assert env.service().ingest_blob(name, event_id=f"evt-{code}").action is A.DUPLICATE_EVENT


# ---- reconcile and rebuild -------------------------------------------------------------------

def test_reconcile_ingests_what_events_missed_and_marks_gone_backups_missing(env: Env) -> None:
    svc = env.service()
    dump_a, manifest_a = put_backup(env, "acme-finance", 20)
    svc.ingest_blob(manifest_a)
    put_backup(env, "globex", 21)  # no event ever arrived for it
    env.blobs.delete(env.backups, dump_a)  # deleted behind the catalog's back
    report = svc.reconcile()
    assert report.ingested == {"cataloged": 1}
    assert report.marked_missing == 1
    assert env.store().get_backup("globex", bid(21)).status is S.AVAILABLE
    gone = env.store().get_backup("acme-finance", bid(20))
    assert gone.status is S.MISSING and "db.dump no longer in storage" in gone.status_reason
    assert evidence_actions(env) == ["catalog.ingested", "catalog.ingested", "catalog.missing"]
    again = svc.reconcile()
    assert (again.ingested, again.marked_missing) == ({}, 0)


def test_reconcile_restores_drifted_tags(env: Env) -> None:
    svc = env.service()
    dump, manifest = put_backup(env, "acme-finance", 22)
    svc.ingest_blob(manifest)
    env.blobs.set_tags(env.backups, dump, {"tenant": "acme-finance"})
    assert svc.reconcile().retagged == 1
    assert env.blobs.get_tags(env.backups, dump)["status"] == "available"


def test_rebuild_from_storage_alone_equals_the_original_catalog(env: Env) -> None:
    svc = env.service()
    for n in range(6):
        _, manifest = put_backup(env, "acme-finance" if n % 2 else "globex", 30 + n, day=1 + n)
        svc.ingest_blob(manifest)
    bad = put_dump(env, "acme-finance", bid(40), b"corrupt")
    put_manifest(env, "acme-finance", bid(40), dump_bytes(40))
    svc.ingest_blob(bad)
    put_dump(env, "globex", bid(41), dump_bytes(41))  # pending: manifest never came
    svc.ingest_blob(prefix("globex", bid(41)) + "db.dump")
    store = env.store()
    validated = store.list_backups("globex")[0][0]
    svc.record_validation(tenant="globex", backup_id=validated.backup_id, run_id="r1",
                          started_at=validated.created_at, finished_at=validated.created_at, passed=True,
                          checks=[], durations={}, summary={})
    assert env.blobs.get_tags(env.backups, validated.manifest_blob)["status"] == "validated"

    original = sorted((e.storage_view() for e in store.iter_entries()), key=lambda v: (v["tenant"], v["backup_id"]))
    fresh_dsn = env.new_db()
    report = env.service(fresh_dsn).rebuild()
    rebuilt = sorted((e.storage_view() for e in env.store(fresh_dsn).iter_entries()),
                     key=lambda v: (v["tenant"], v["backup_id"]))
    assert len(original) == 8
    assert rebuilt == original
    assert {v["status"] for v in rebuilt} == {"available", "validated", "rejected", "pending"}
    assert report.inserted == 6  # trusted from tags; the rejected and pending ones were ingested again
    assert report.ingested == {"rejected": 1, "pending": 1}


def test_rebuild_never_overwrites_an_existing_entry(env: Env) -> None:
    svc = env.service()
    _, manifest = put_backup(env, "acme-finance", 50)
    svc.ingest_blob(manifest)
    before = env.store().get_backup("acme-finance", bid(50))
    report = svc.rebuild()
    assert report.inserted == 0
    assert env.store().get_backup("acme-finance", bid(50)).updated_at == before.updated_at


def test_rebuild_with_verify_checksums_rehashes_dumps(env: Env) -> None:
    svc = env.service()
    dump, manifest = put_backup(env, "acme-finance", 51)
    svc.ingest_blob(manifest)
    env.blobs.upload(env.backups, dump, b"PGDMP" + b"\x09" * 3000, tags=env.blobs.get_tags(env.backups, dump))
    fresh = env.new_db()
    trusting = env.service(fresh).rebuild()
    assert trusting.inserted == 1  # the tag says available and sizes agree: trusted
    verifying = env.service(env.new_db()).rebuild(verify_checksums=True)
    assert verifying.ingested == {"rejected": 1}
    assert trusting.to_json()["operation"] == "rebuild"


# ---- rebuild from the manifest copies in metadata ------------------------------------------------


def put_manifest_as_the_backup_job_does(env: Env, tenant: str, backup_id: str, data: bytes, **overrides: Any) -> str:
    """The manifest through the backup job's own writer: its copy rides in the blob's metadata."""
    from continuity.adapters.tools.backup_taker import write_manifest

    name = prefix(tenant, backup_id) + "manifest.json"
    write_manifest(env.blobs, env.backups, name, json.dumps(make_manifest(tenant, backup_id, dump=data,
                                                                         **overrides)).encode(), {})
    return name


def test_forged_manifest_copy_in_metadata_is_rebuilt_as_written_but_every_restore_refuses_it(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from continuity.catalog.manifest import manifest_copy_metadata
    from continuity.kernel.settings import configured_registry
    from continuity.validation import service as validation
    from continuity.validation.checks import CheckStatus
    from continuity.validation.wiring import local_ports

    tenant, backup_id, dump = "acme-finance", bid(70), dump_bytes(70)
    source = {"server": "weu-primary", "region": "westeurope", "database": "odoo_acme_finance", "pg_version": "16.4"}
    dump_name = put_dump(env, tenant, backup_id, dump)
    name = put_manifest_as_the_backup_job_does(env, tenant, backup_id, dump, source=source)
    assert env.service().ingest_blob(name).action is A.CATALOGED
    # The attack, on storage without WORM: the dump is replaced, and the manifest blob's metadata alone is
    # rewritten (Set Blob Metadata) with a copy vouching for the new dump. manifest.json itself is untouched.
    tampered = b"PGDMP" + b"\x66" * 3000
    env.blobs.upload(env.backups, dump_name, tampered, tags=env.blobs.get_tags(env.backups, dump_name))
    forged = json.dumps(make_manifest(tenant, backup_id, dump=tampered, source=source)).encode()
    env.blobs.container(env.backups).get_blob_client(name).set_blob_metadata(manifest_copy_metadata(forged))

    # The catalog is lost and rebuilt from storage alone: the forged copy passes every check a manifest can.
    fresh = env.new_db()
    report = env.service(fresh).rebuild()
    assert (report.inserted, report.manifests_from_metadata, report.manifests_read) == (1, 1, 0)
    entry = env.store(fresh).get_backup(tenant, backup_id)
    stored_sha = hashlib.sha256(env.blobs.download(env.backups, name)).hexdigest()
    assert entry.dump_sha256 == hashlib.sha256(tampered).hexdigest()
    assert entry.manifest_sha256 == hashlib.sha256(forged).hexdigest() != stored_sha

    # Every restore (a validation's, a tenant recovery's stage) holds the manifest in storage to the catalog's:
    # refused before a byte reaches a server, saying why.
    monkeypatch.setenv("CONTINUITY_CONTROL_DSN", fresh)
    monkeypatch.setenv("CONTINUITY_BACKUP_CONTAINER", env.backups)
    ports = local_ports(configured_registry(), blobs=env.blobs)
    ref = validation.pick_backup(ports.source, tenant, backup_id)
    step = validation.restore_into_sandbox(ports, ref, f"scratch_forged_{uuid.uuid4().hex[:8]}")
    assert not step.restored
    checksum = next(c for c in step.checks if c.id == "file_checksum")
    assert checksum.status is CheckStatus.FAIL
    assert f"manifest.json in storage (sha256 {stored_sha[:12]}…) is not the manifest cataloged" in checksum.detail
    assert "treat the backup as tampered" in checksum.detail


def test_rebuild_takes_manifests_from_metadata_and_reads_legacy_and_bad_copies_from_the_blob(env: Env) -> None:
    from continuity.catalog.manifest import MANIFEST_COPY_KEY

    svc = env.service()
    for n in range(4):  # written as the backup job writes them now
        data = dump_bytes(90 + n)
        put_dump(env, ("acme-finance", "globex")[n % 2], bid(90 + n), data)
        svc.ingest_blob(put_manifest_as_the_backup_job_does(env, ("acme-finance", "globex")[n % 2], bid(90 + n),
                                                            data))
    for n in (94, 95):  # older backups: no copy in metadata
        _, manifest = put_backup(env, "acme-finance", n)
        svc.ingest_blob(manifest)
    put_dump(env, "globex", bid(96), dump_bytes(96))
    corrupt = put_manifest_as_the_backup_job_does(env, "globex", bid(96), dump_bytes(96))
    svc.ingest_blob(corrupt)
    client = env.blobs.container(env.backups).get_blob_client(corrupt)
    client.set_blob_metadata({f"{MANIFEST_COPY_KEY}0": "bm90IHpsaWI="})  # base64, not zlib
    put_dump(env, "globex", bid(97), dump_bytes(97))
    stale = put_manifest_as_the_backup_job_does(env, "globex", bid(97), dump_bytes(97))
    svc.ingest_blob(stale)
    # A copy that decodes but describes another backup: held to the same checks as the blob, and refused.
    other = json.dumps(make_manifest("globex", bid(98), dump=dump_bytes(97))).encode()
    from continuity.catalog.manifest import manifest_copy_metadata
    env.blobs.container(env.backups).get_blob_client(stale).set_blob_metadata(manifest_copy_metadata(other))

    original = sorted((e.storage_view() for e in env.store().iter_entries()),
                      key=lambda v: (v["tenant"], v["backup_id"]))
    fresh = env.new_db()
    report = env.service(fresh).rebuild(workers=2, batch=3)
    rebuilt = sorted((e.storage_view() for e in env.store(fresh).iter_entries()),
                     key=lambda v: (v["tenant"], v["backup_id"]))
    assert len(original) == 8 and rebuilt == original
    assert (report.inserted, report.manifests_from_metadata, report.manifests_read) == (8, 4, 4)
    assert report.ingested == {}
    from continuity.cli.commands.catalog import _render_sweep
    assert "manifests: 4 from the copy in metadata, 4 read blob by blob" in _render_sweep(report.to_json())
    assert any("manifest copy does not decode" in m and bid(96) in m for m in report.messages)
    assert any(f"manifest names backup {bid(98)!r}" in m and "reading manifest.json instead" in m
               for m in report.messages)


def test_listing_with_tags_and_metadata_agrees_with_the_sdk_across_pages(env: Env,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from continuity.adapters.storage import blob_listing
    from continuity.adapters.storage.blob_listing import list_container
    from continuity.kernel.errors import BackupNotFound

    for n in range(5):
        data = dump_bytes(100 + n)
        put_dump(env, "acme-finance", bid(100 + n), data)
        put_manifest_as_the_backup_job_does(env, "acme-finance", bid(100 + n), data)
    odd = "acme-finance/odd name \u00e9 &<'>%2F.json"  # escaped in the XML and in the URL
    env.blobs.upload(env.backups, odd, b"{}", tags={"status": "x y", "tenant": "acme-finance"},
                     metadata={"note": "a & b"})
    sdk = [(b.name, int(b.size), str(b.etag).strip('"'), dict(b.tags or {}), dict(b.metadata or {}))
           for b in env.blobs.container(env.backups).list_blobs(include=["tags", "metadata"])]

    def listed(store: BlobStore, page_size: int) -> list[tuple[str, int, str, dict[str, str], dict[str, str]]]:
        return [(b.name, b.size, b.etag, b.tags, b.metadata)
                for b in list_container(store, env.backups, page_size=page_size)]

    assert len(sdk) == 11 and listed(env.blobs, 3) == sdk
    assert all(b[4] for b in sdk if b[0].endswith("manifest.json")) and sdk[-1][4] == {"note": "a & b"}
    # A connection string holding a SAS instead of the account key lists the same.
    key = dict(p.split("=", 1) for p in env.blobs.connection_string.split(";") if p)["AccountKey"]
    sas = generate_container_sas(env.blobs.service.account_name, env.backups, account_key=key,
                                 permission=ContainerSasPermissions(read=True, list=True, tag=True),
                                 expiry=datetime.now(UTC) + timedelta(minutes=10))
    endpoint = env.blobs.service.url.rstrip("/")
    assert listed(BlobStore(f"BlobEndpoint={endpoint};SharedAccessSignature={sas}"), 4) == sdk
    # Nothing to sign with: the SDK's own listing, same answer.
    monkeypatch.setattr(blob_listing, "_signer", lambda _store, _container: None)
    assert listed(env.blobs, 4) == sdk
    monkeypatch.undo()
    with pytest.raises(BackupNotFound):
        list(list_container(env.blobs, f"none-{uuid.uuid4().hex[:8]}"))


def test_cli_catalog_list_and_reconcile(env: Env, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.cli.main import main

    monkeypatch.setenv("CONTINUITY_CONTROL_DSN", env.dsn)
    monkeypatch.setenv("CONTINUITY_BACKUP_CONTAINER", env.backups)
    monkeypatch.setenv("CONTINUITY_EVIDENCE_CONTAINER", env.evidence)
    put_backup(env, "acme-finance", 60)
    assert main(["catalog", "reconcile", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ingested"] == {"cataloged": 1}
    assert main(["catalog", "list", "--tenant", "acme-finance", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [i["backup_id"] for i in listed["items"]] == [bid(60)] and listed["next_cursor"] is None
    assert main(["catalog", "ingest", "umbrella/2025/03/01/20250301T020000Z-a1b2c3/db.dump"]) == 1


def test_a_real_backup_taken_by_the_backup_adapter_is_cataloged(env: Env, tmp_path: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    import yaml

    from continuity.adapters.postgres.demo_seed import seed_tenant
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.catalog.manifest import manifest_from_copy
    from tests.integration.test_demo_seed import CONFIG, drop_database, make_registry

    token = secrets.token_hex(3)
    registry = make_registry((f"t{token}", f"demo_{token}"))
    tenant = registry.tenants[0]
    raw = yaml.safe_load(CONFIG.read_text())
    raw["tenants"] = [tenant.model_dump(mode="json", exclude_none=True)]
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("CONTINUITY_BACKUP_CONTAINER", env.backups)
    try:
        seed_tenant(registry, tenant, 1, store=env.blobs)
        stored = take_backup(registry, tenant.id, store=env.blobs)
        svc = open_catalog(env.dsn, env.blobs, backup_container=env.backups, evidence_container=env.evidence,
                           tenants_file=tenants_file)
        outcome = svc.ingest_blob(stored.manifest)
        assert (outcome.action, outcome.status) == (A.CATALOGED, S.AVAILABLE), outcome.message
        entry = env.store().get_backup(tenant.id, stored.backup_id)
        assert (entry.dump_size, entry.dump_sha256) == (stored.size, stored.sha256)
        # The manifest blob carries its own copy in metadata, written with it: what a rebuild reads.
        props = env.blobs.container(env.backups).get_blob_client(stored.manifest).get_blob_properties()
        assert manifest_from_copy(props.metadata) == env.blobs.download(env.backups, stored.manifest)
        assert entry.source_database == tenant.database
        assert svc.ingest_blob(stored.dump).action is A.DUPLICATE
    finally:
        drop_database(env.stack, tenant.database)
        for name in env.blobs.list_names("attachments", tenant.attachments):
            env.blobs.delete("attachments", name)
