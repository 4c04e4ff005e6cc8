"""Point-in-time recovery of one tenant end to end, from a real WAL archive (barman-cloud in Azurite).

A dedicated stack's primary archives every WAL segment with ``barman-cloud-wal-archive``; a base backup is
taken with ``barman-cloud-backup``. Two tenants write timestamped rows; at T one tenant's posted invoices are
deleted and one of its attachment files goes from the store; the tenant is recovered ``--to`` T−1 s over
HTTP (the devhost runs function_app.py), approved by a second person, while the other tenant keeps writing.
Its rows are back as they were at T−1 s, the other tenant lost nothing written after T, the attachment is
back with its sha1 verified, the evidence names the target, base backup, WAL range and the staged digest,
and the chain verifies. Then the nightly archive proof passes, and fails naming the segment once one is
deleted from the archive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from continuity.adapters.local.identity_store import IdentityStore
from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.kernel import settings
from continuity.kernel.identity import Role
from tests.conftest import PORT_BASE
from tests.e2e.test_recovery_e2e import RecoveryHost as Host
from tests.failover_support import Writer, dedicated_stack
from tests.recovery_support import backup_and_validate, delete_posted_moves, ledger_fingerprint, seed, write_registry
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

CLUSTER_OFFSET = 48  # this stack's primary, replica, control, sandbox: +48..+51
DEVHOST_PORT = PORT_BASE + 88
TENANT, OTHER = "pt-acme", "pt-globex"
DB, OTHER_DB = "odoo_pt_acme", "odoo_pt_globex"
SERVER = "weu-primary"


@pytest.fixture(scope="module")
def pstack(stack: LocalStack, blob_store: BlobStore,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, dict[str, Any]]]:
    """A dedicated stack (its primary archiving to the shared Azurite) with two seeded tenants, one validated
    backup of the first, and a base backup taken after both were seeded."""
    from continuity.pitr import service as pitr

    tenants_file = tmp_path_factory.mktemp("pitr-e2e") / "tenants.yaml"
    registry = write_registry(tenants_file, {TENANT: DB, OTHER: OTHER_DB})
    with dedicated_stack(PORT_BASE, "pitr-e2e", offset=CLUSTER_OFFSET) as local, \
            pytest.MonkeyPatch.context() as mp:
        s = local.settings
        env = {"CONTINUITY_LOCAL_DIR": str(s.base_dir), "CONTINUITY_PRIMARY_PORT": str(s.primary_port),
               "CONTINUITY_REPLICA_PORT": str(s.replica_port), "CONTINUITY_CONTROL_PORT": str(s.control_port),
               "CONTINUITY_SANDBOX_PORT": str(s.sandbox_port), "CONTINUITY_TENANTS_FILE": str(tenants_file)}
        for key, value in env.items():
            mp.setenv(key, value)
        seed(local, blob_store, TENANT, DB, attachments=4)
        seed(local, blob_store, OTHER, OTHER_DB, attachments=2)
        validated = backup_and_validate(registry, TENANT, blob_store)
        base = pitr.take_base_backup(registry, SERVER)
        yield local, {"env": env, "registry": registry, "validated": validated, "base": base}


@pytest.fixture(scope="module")
def host(pstack: tuple[LocalStack, dict[str, Any]]) -> Iterator[Host]:
    local, facts = pstack
    identities = IdentityStore(local.base)
    keys = {name: identities.add_user(name, roles, replace=True) for name, roles in (
        ("olivia", [Role.OPERATOR]), ("amir", [Role.APPROVER]))}
    devhost = Host(local, keys, DEVHOST_PORT)
    devhost.env["CONTINUITY_TENANTS_FILE"] = facts["env"]["CONTINUITY_TENANTS_FILE"]
    devhost.start()
    yield devhost
    devhost.stop()


def probe_rows(dsn: str) -> dict[int, datetime]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {int(n): at for n, at in conn.execute("select n, at from pitr_probe")}


def server_now(dsn: str) -> datetime:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select clock_timestamp()").fetchone()
    assert row is not None
    return row[0].astimezone(UTC)


def one_attachment(dsn: str) -> tuple[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select store_fname, checksum from ir_attachment where store_fname is not null "
                           "order by id limit 1").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_requests_outside_the_archive_are_refused_and_recorded(
        host: Host, pstack: tuple[LocalStack, dict[str, Any]]) -> None:
    local, facts = pstack
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", "olivia",
                           {"reason": "bad import", "to": future})
    assert code == 422 and "is in the future" in body["error"]["message"], body
    long_ago = "2020-01-01T00:00:00+00:00"
    code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", "olivia", {"reason": "x", "to": long_ago})
    assert code == 422 and "before the earliest restorable point" in body["error"]["message"], body
    code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", "olivia",
                           {"reason": "x", "to": "2026-11-30T12:00:00"})
    assert code == 400 and "time zone" in body["error"]["message"], body
    code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", "olivia",
                           {"reason": "x", "to": long_ago, "backup_id": facts["validated"]})
    assert code == 400 and "one of backup_id, before or to" in body["error"]["message"], body
    store = EvidenceStore(local.dsn("control", "continuity"), BlobStore())
    reasons = [r.data.get("reason", "") for r in store.records(subject=f"recovery-{TENANT}")
               if r.action == "recovery.refused"]
    assert any("is in the future" in r for r in reasons) and any("earliest restorable" in r for r in reasons)


def test_one_tenant_rewound_to_a_second_while_the_other_keeps_writing(
        host: Host, pstack: tuple[LocalStack, dict[str, Any]], blob_store: BlobStore) -> None:
    local, facts = pstack
    live, other_live = local.dsn("primary", DB), local.dsn("primary", OTHER_DB)
    fingerprint_before = ledger_fingerprint(live)
    attachment, sha1 = one_attachment(live)
    container = settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
    blob = f"{TENANT}/{attachment}" if not attachment.startswith(TENANT) else attachment
    assert hashlib.sha1(blob_store.download(container, blob), usedforsecurity=False).hexdigest() == sha1

    mine, other = Writer(live, table="pitr_probe"), Writer(other_live, table="pitr_probe")
    mine.start()
    other.start()
    try:
        wait_until(lambda: len(mine.acked) > 30 and len(other.acked) > 30, timeout=60, what="both tenants writing")
        first = min(probe_rows(live).values())
        # T−1 s must fall inside the writes: rows before it to bring back, rows after it to leave out.
        wait_until(lambda: server_now(live) > first + timedelta(seconds=3), timeout=60, what="3 s of writes")
        at_t = server_now(live)
        target = at_t - timedelta(seconds=1)
        # At T: the faulty import deletes posted invoices and Odoo's GC removes a file from the store.
        deleted = delete_posted_moves(live, 4)
        blob_store.container(container).delete_blob(blob)
        wait_until(lambda: server_now(live) > at_t + timedelta(seconds=1) and len(mine.acked) > 60,
                   timeout=60, what="writes after T")
        mine.stop()
        written = probe_rows(live)
        after_t_other = [n for n, at in probe_rows(other_live).items() if at > at_t]
        assert deleted and after_t_other, "the scenario needs deletions at T and the other tenant's writes after it"

        code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", "olivia",
                               {"reason": "faulty import at T", "to": target.isoformat()})
        assert code == 202 and body["choice"] == "point_in_time", body
        pending = host.wait_state(body["id"], "AWAITING_APPROVAL", "FAILED", "REFUSED", timeout=300)
        assert pending["state"] == "AWAITING_APPROVAL", pending["reason"]
        code, decided = host.call("POST", f"/api/recoveries/{body['id']}/approve", "amir",
                                  {"comment": "matches the incident", "acknowledge": []})
        assert code == 202, decided
        done = host.wait_state(body["id"], "COMPLETED", "FAILED", timeout=300)
        acked_during = len(other.acked)
    finally:
        mine.stop()
        other.stop()
    assert done["state"] == "COMPLETED", done["reason"]
    steps = [s["step"] for s in done["steps"]]
    assert steps[:3] == ["rewind", "stage", "checks"] and "swap" in steps, steps

    # The tenant's rows are as they were at T−1 s: every row committed well before it, none after it.
    recovered = set(probe_rows(live))
    # A row's "at" is its transaction's start; the rewind goes by commit times. A row begun before T−1 s commits
    # after it only if its backend stalls in between: a second covers a loaded runner; one begun after T−1 s
    # can only have committed after it too.
    assert {n for n, at in written.items() if at <= target - timedelta(seconds=1)} <= recovered
    assert not recovered & {n for n, at in written.items() if at > target + timedelta(milliseconds=200)}
    assert recovered == set(range(1, len(recovered) + 1)), "a point in time has no holes"
    assert ledger_fingerprint(live) == fingerprint_before
    # The other tenant wrote throughout, nothing lost, its writes after T all there.
    assert other.errors == 0 and other.refused == 0 and acked_during > len(after_t_other)
    assert other.lost_on(other_live) == []
    # The attachment deleted after T is back, its sha1 the one the database at T records.
    assert hashlib.sha1(blob_store.download(container, blob), usedforsecurity=False).hexdigest() == sha1
    stage = next(s for s in done["steps"] if s["step"] == "stage")
    assert attachment in stage["data"]["attachments"]["from_kept_copy"]
    checks = next(s for s in done["steps"] if s["step"] == "checks")["data"]["checks"]
    assert checks["attachments"]["status"] == "pass", checks["attachments"]

    # Evidence: the rewind's target, base backup, WAL range and the digest of what was staged; chain verifies.
    store = EvidenceStore(local.dsn("control", "continuity"), BlobStore())
    records = {r.action: r for r in store.records(subject=body["id"])}
    rewind = records["recovery.step.rewind"].data["data"]
    point = rewind["point_in_time"]
    assert point["target"] == target.isoformat()
    assert point["base_backup"]["backup_id"] == facts["base"]["base_backup"]
    assert point["wal_first"] <= point["wal_last"]
    assert len(rewind["extract"]["dump_sha256"]) == 64
    assert "recovery.completed" in records
    assert store.verify().ok


def test_archive_retention_keeps_the_promised_window_with_barmans_own_delete(
        pstack: tuple[LocalStack, dict[str, Any]], blob_store: BlobStore) -> None:
    from continuity.pitr import service as pitr
    from continuity.pitr.rules import segment_number

    local, facts = pstack
    registry = facts["registry"]
    newer = [pitr.take_base_backup(registry, SERVER)["base_backup"] for _ in range(2)]
    name = local.archive_name()
    barman = local.barman()
    before = {b.backup_id: b for b in barman.base_backups(name)}
    assert {facts["base"]["base_backup"], *newer} <= set(before)
    # Forty days on, past the gold tier's 7-day window and 30-day immutability: the oldest base backup goes,
    # the newest two (base_backups_min) stay.
    as_of = datetime.now(UTC) + timedelta(days=40)
    dry = pitr.apply_archive_retention(registry, SERVER, as_of, dry_run=True)
    assert [d["backup_id"] for d in dry["plan"]["delete"]] == [facts["base"]["base_backup"]] and not dry["deleted"]
    assert set(before) == {b.backup_id for b in barman.base_backups(name)}, "a dry run deletes nothing"
    done = pitr.apply_archive_retention(registry, SERVER, as_of)
    assert done["deleted"] == [facts["base"]["base_backup"]]
    after = {b.backup_id: b for b in barman.base_backups(name)}
    assert set(after) == set(newer)
    oldest_kept = min(after.values(), key=lambda b: b.end_time)
    remaining = [s.name for s in barman.segments(name, blob_store)]
    assert remaining
    assert all(segment_number(n) >= segment_number(oldest_kept.begin_wal) for n in remaining), \
        "WAL no kept base backup needs is deleted"
    window = done["window_after"]
    assert window["restorable"] and window["oldest_base_backup"] == oldest_kept.backup_id and window["gap"] is None
    store = EvidenceStore(local.dsn("control", "continuity"), BlobStore())
    assert [r.action for r in store.records(subject=f"servers/{SERVER}/archive")].count("retention.archive") == 1
    # The catalog's record of the archive follows storage: rebuilt from the listing after the delete.
    recorded = pitr.recorded_windows([SERVER])[SERVER]
    assert {b["backup_id"] for b in recorded["base_backups"]} == set(newer)
    assert recorded["earliest"] == oldest_kept.end_time and recorded["gap"] is None


def test_nightly_archive_proof_passes_then_fails_naming_a_deleted_segment(
        pstack: tuple[LocalStack, dict[str, Any]], blob_store: BlobStore) -> None:
    from continuity.pitr import service as pitr

    local, facts = pstack
    registry = facts["registry"]
    proof = pitr.prove_archive(registry, SERVER, "proof-e2e-1")
    assert proof["ok"], proof["reason"]
    assert set(proof["tenants"]) == {TENANT, OTHER}
    assert all(not r["failed_checks"] and r["within_rto"] for r in proof["tenants"].values())
    assert proof["rewind"]["target_name"] == proof["restore_point"]
    assert local.rewound_copies() == [], "the rewound copy is always removed"

    barman = local.barman()
    name = local.archive_name()
    newest_base = max(barman.base_backups(name), key=lambda b: b.end_time)
    segments = sorted(s.name for s in barman.segments(name, blob_store))
    victim = next(s for s in segments if s > newest_base.begin_wal)
    wal = settings.get("CONTINUITY_WAL_CONTAINER")
    doomed = [n for n in blob_store.list_names(wal, prefix=f"{name}/wals/") if n.rsplit("/", 1)[-1].startswith(
        victim + ".") or n.endswith("/" + victim)]
    # Corrupted in place: the restore command cannot bring it, replay stops there, the proof names it.
    for blob in doomed:
        blob_store.upload(wal, blob, b"\x1f\x8b not a WAL segment", overwrite=True)
    corrupted = pitr.prove_archive(registry, SERVER, "proof-e2e-corrupted")
    assert not corrupted["ok"] and victim in corrupted["reason"], corrupted
    assert corrupted["code"] == "recovery_chain_broken"
    # Removed: found before any restore, by the archive listing alone.
    for blob in doomed:
        blob_store.container(wal).delete_blob(blob)
    failed = pitr.prove_archive(registry, SERVER, "proof-e2e-2")
    assert not failed["ok"] and victim in failed["reason"] and failed["code"] == "recovery_chain_broken", failed
    store = EvidenceStore(local.dsn("control", "continuity"), BlobStore())
    proofs = [r.action for r in store.records(subject=f"servers/{SERVER}/archive")]
    assert proofs.count("pitr.archive_proof") >= 1 and "pitr.archive_proof_failed" in proofs
    assert local.rewound_copies() == []
