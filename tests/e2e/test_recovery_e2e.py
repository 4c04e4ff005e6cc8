"""Tenant recovery end to end: the devhost runs function_app.py against a dedicated throwaway stack, driven
over HTTP with local users' keys. A demo tenant is corrupted (posted moves deleted), recovered to its newest
validated backup after a second person's approval, while another tenant on the same cluster keeps
committing numbered rows (counted). Refusals answer 4xx, are recorded and change nothing; a host killed
between the two renames of the cutover resumes to exactly one live database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from continuity.adapters.local.identity_store import IdentityStore
from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.kernel.identity import Role
from tests.conftest import PORT_BASE
from tests.failover_support import Host, Writer, dedicated_stack
from tests.recovery_support import (
    backup_and_validate,
    database_names,
    delete_posted_moves,
    ledger_fingerprint,
    manifest_of,
    seed,
    write_registry,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

DEVHOST_PORT = PORT_BASE + 85  # +72..+79 devhost tests, +81 failover e2e
TENANT, OTHER = "rc-acme", "rc-globex"
DB, OTHER_DB = "odoo_rc_acme", "odoo_rc_globex"


class RecoveryHost(Host):
    def request_recovery(self, user: str, tenant: str = TENANT, **body: Any) -> tuple[int, Any]:
        return self.call("POST", f"/api/tenants/{tenant}/recoveries", user, {"reason": "posted moves deleted", **body})

    def decide(self, verdict: str, instance: str, user: str, ack: list[str] | None = None,
               comment: str = "ok") -> tuple[int, Any]:
        return self.call("POST", f"/api/recoveries/{instance}/{verdict}", user,
                         {"comment": comment, "acknowledge": ack or []})

    def status(self, instance: str, user: str = "amir") -> dict[str, Any]:
        code, body = self.call("GET", f"/api/recoveries/{instance}", user)
        assert code == 200, body
        return dict(body)


@pytest.fixture(scope="module")
def rstack(stack: LocalStack, blob_store: BlobStore,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, dict[str, Any]]]:
    """A dedicated stack whose registry holds two tenants on one primary; the first has a backup that went
    through the real nightly validation (VALIDATED) and a later one recorded as failed validation."""
    tenants_file = tmp_path_factory.mktemp("recovery-e2e") / "tenants.yaml"
    registry = write_registry(tenants_file, {TENANT: DB, OTHER: OTHER_DB})
    with dedicated_stack(PORT_BASE, "recovery-e2e", offset=52) as local, pytest.MonkeyPatch.context() as mp:
        s = local.settings
        env = {"CONTINUITY_LOCAL_DIR": str(s.base_dir), "CONTINUITY_PRIMARY_PORT": str(s.primary_port),
               "CONTINUITY_REPLICA_PORT": str(s.replica_port), "CONTINUITY_CONTROL_PORT": str(s.control_port),
               "CONTINUITY_SANDBOX_PORT": str(s.sandbox_port), "CONTINUITY_TENANTS_FILE": str(tenants_file)}
        for key, value in env.items():
            mp.setenv(key, value)
        seed(local, blob_store, TENANT, DB)
        seed(local, blob_store, OTHER, OTHER_DB)
        good = backup_and_validate(registry, TENANT, blob_store)
        other = backup_and_validate(registry, OTHER, blob_store)
        failed = _failed_backup(registry, blob_store)
        yield local, {"good": good, "other": other, "failed": failed, "env": env, "registry": registry}


def _failed_backup(registry: Any, blobs: BlobStore) -> str:
    """A later backup of the tenant that the catalog records as failed validation."""
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.catalog.service import open_catalog

    stored = take_backup(registry, TENANT, store=blobs)
    open_catalog(None, blobs).ingest_blob(stored.manifest, actor="test")
    now = datetime.now(UTC)
    PgCatalogStore(prepare()).record_validation(
        tenant=TENANT, backup_id=stored.backup_id, run_id=f"validate-{TENANT}-{stored.backup_id}", started_at=now,
        finished_at=now, passed=False, checks=[{"id": "ledger", "status": "fail"}], durations={},
        summary={"reason": "ledger: posted entries changed"})
    return stored.backup_id


@pytest.fixture(scope="module")
def host(rstack: tuple[LocalStack, dict[str, Any]]) -> Iterator[RecoveryHost]:
    local, facts = rstack
    identities = IdentityStore(local.base)
    keys = {name: identities.add_user(name, roles, replace=True) for name, roles in (
        ("olivia", [Role.OPERATOR]), ("amir", [Role.APPROVER]), ("ada", [Role.ADMIN]))}
    keys["gina"] = identities.add_user("gina", [Role.OPERATOR, Role.APPROVER], replace=True, tenants=[OTHER])
    devhost = RecoveryHost(local, keys, DEVHOST_PORT)
    devhost.env["CONTINUITY_TENANTS_FILE"] = facts["env"]["CONTINUITY_TENANTS_FILE"]
    devhost.env["CONTINUITY_APPROVAL_WINDOW_MINUTES"] = "2"
    devhost.start()
    yield devhost
    devhost.stop()


def evidence(local: LocalStack, subject: str) -> list[dict[str, Any]]:
    store = EvidenceStore(local.dsn("control", "continuity"), BlobStore())
    return [r.to_json() for r in store.records(subject=subject)]


def published(local: LocalStack) -> list[str]:
    path = local.base / "devhost" / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line).get("event", {}).get("type", "") for line in path.read_text().splitlines() if line.strip()]


def staging_left(local: LocalStack) -> list[str]:
    return [n for n in database_names(local, "odoo_rc_%") if "_staging_" in n]


# ---- the happy path ---------------------------------------------------------------------------------


def test_corrupted_tenant_recovered_to_newest_validated_backup_while_other_tenant_keeps_writing(
        host: RecoveryHost, rstack: tuple[LocalStack, dict[str, Any]], blob_store: BlobStore) -> None:
    local, facts = rstack
    live = local.dsn("primary", DB)
    deleted = delete_posted_moves(live, 4)
    corrupted = ledger_fingerprint(live)
    manifest = manifest_of(blob_store, TENANT, facts["good"])
    assert corrupted[0] != manifest["ledger"]["fingerprint"]
    writer = Writer(local.dsn("primary", OTHER_DB), table="recovery_probe")
    writer.start()
    try:
        code, body = host.request_recovery("olivia")
        assert code == 202, body
        assert body["backup_id"] == facts["good"] and body["choice"] == "newest"
        pending = host.wait_state(body["id"], "AWAITING_APPROVAL", "FAILED", "REFUSED")
        assert pending["state"] == "AWAITING_APPROVAL", pending["reason"]
        moves = {t["name"]: t for t in pending["data_loss"]["tables"]}["moves"]
        assert moves["missing_from_live"] == len(deleted)
        assert pending["checks"]["ledger"]["status"] == "pass"
        code, decided = host.decide("approve", body["id"], "amir")
        assert code == 202 and decided["status_url"] == f"/api/recoveries/{body['id']}", decided
        done = host.wait_state(body["id"], "COMPLETED", "FAILED", timeout=120)
        acked_during = len(writer.acked)
    finally:
        writer.stop()
    assert done["state"] == "COMPLETED", done["reason"]
    assert [s["step"] for s in done["steps"]] == ["stage", "checks", "fence", "swap", "reopen", "verify", "backup"]
    # The tenant's ledger matches the backup's manifest; the pre-recovery database is kept.
    assert ledger_fingerprint(live) == (manifest["ledger"]["fingerprint"], manifest["ledger"]["posted_moves"])
    names = done["databases"]
    assert ledger_fingerprint(local.dsn("primary", names["pre_recovery"])) == corrupted
    assert staging_left(local) == []
    # Another tenant on the same cluster served writes throughout, none refused or lost.
    assert acked_during > 50 and writer.errors == 0 and writer.refused == 0
    assert writer.lost_on(local.dsn("primary", OTHER_DB)) == []
    timings = done["timings"]
    for key in ("approval_wait", "stage", "checks", "fence", "swap", "reopen", "verify", "approval_to_live",
                "tenant_unavailable", "total"):
        assert timings[key] is not None, key
    actions = [r["action"] for r in evidence(local, body["id"])]
    for action in ("recovery.requested", "recovery.step.stage", "recovery.step.checks", "recovery.approved",
                   "recovery.step.fence", "recovery.step.swap", "recovery.step.reopen", "recovery.step.verify",
                   "recovery.step.backup", "recovery.completed"):
        assert action in actions, action
    events = published(local)
    for kind in ("requested", "approved", "completed"):
        assert f"continuity.recovery.{kind}" in events
    # The next nightly validates the recovered state: the newest backup is the post-recovery one.
    from continuity.adapters.tools.restore_runner import StorageBackupSource

    newest = StorageBackupSource(blob_store).latest_backup(TENANT)
    assert newest.backup_id == done["steps"][-1]["data"]["backup_id"]
    assert newest.manifest.ledger.fingerprint == manifest["ledger"]["fingerprint"]
    code, current = host.call("GET", f"/api/tenants/{TENANT}/recoveries/current", "olivia")
    assert code == 200 and current["state"] == "COMPLETED"


# ---- refusals: 4xx, recorded, nothing changed --------------------------------------------------------


def refusals(local: LocalStack, subject: str) -> list[str]:
    return [r["data"]["reason"] for r in evidence(local, subject) if r["action"] == "recovery.refused"]


def test_bad_requests_are_refused_recorded_and_change_nothing(
        host: RecoveryHost, rstack: tuple[LocalStack, dict[str, Any]]) -> None:
    local, facts = rstack
    before = database_names(local, "odoo_rc_%")
    fingerprint = ledger_fingerprint(local.dsn("primary", DB))
    iid = f"recovery-{TENANT}"
    code, body = host.request_recovery("olivia", backup_id=facts["other"])
    assert code == 422 and f"belongs to tenant {OTHER}, not {TENANT}" in body["error"]["message"]
    code, body = host.request_recovery("olivia", backup_id=facts["failed"])
    assert code == 422 and "failed validation" in body["error"]["message"]
    code, body = host.request_recovery("olivia", before=(datetime.now(UTC) - timedelta(days=30)).isoformat())
    assert code == 422 and "is before the oldest backup" in body["error"]["message"]
    code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", "olivia", raw=b"{not json")
    assert code == 400 and "not valid JSON" in body["error"]["message"]
    code, body = host.request_recovery("olivia", backup_id=facts["good"], before="2026-01-01T00:00:00Z")
    assert code == 400 and "not both" in body["error"]["message"]
    code, body = host.request_recovery("olivia", extra=1)
    assert code == 400 and "extra" in body["error"]["message"]
    code, body = host.request_recovery("amir")
    assert code == 403 and "needs the operator role" in body["error"]["message"]
    code, body = host.request_recovery("olivia", tenant="nosuch-tenant")
    assert code == 404 and body["error"]["code"] == "unknown_tenant"
    code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", None, {"reason": "x"})
    assert code == 401
    code, body = host.request_recovery("gina")
    assert code == 403 and "scoped to other tenants" in body["error"]["message"]
    reasons = refusals(local, iid)
    for expected in ("belongs to tenant", "failed validation", "before the oldest backup", "not valid JSON",
                     "not both", "needs the operator role", "scoped to other tenants"):
        assert any(expected in r for r in reasons), expected
    assert all(r["data"]["executed"] is False for r in evidence(local, iid) if r["action"] == "recovery.refused")
    assert database_names(local, "odoo_rc_%") == before
    assert ledger_fingerprint(local.dsn("primary", DB)) == fingerprint


def test_running_recovery_refuses_another_and_self_approval_then_rejection_drops_the_staged_copy(
        host: RecoveryHost, rstack: tuple[LocalStack, dict[str, Any]]) -> None:
    local, _ = rstack
    fingerprint = ledger_fingerprint(local.dsn("primary", DB))
    code, body = host.request_recovery("ada")
    assert code == 202, body
    iid = body["id"]
    code, again = host.request_recovery("olivia")
    assert code == 409 and "already running" in again["error"]["message"]
    host.wait_state(iid, "AWAITING_APPROVAL")
    code, own = host.decide("approve", iid, "ada")
    assert code == 403 and "cannot approve it: a second person" in own["error"]["message"]
    code, operator = host.decide("approve", iid, "olivia")
    assert code == 403 and "needs the approver role" in operator["error"]["message"]
    code, scoped = host.decide("approve", iid, "gina")
    assert code == 403 and "scoped to other tenants" in scoped["error"]["message"]
    assert host.call("GET", f"/api/recoveries/{iid}", "gina")[0] == 403
    code, rejected = host.decide("reject", iid, "amir", comment="restore the ledger by hand instead")
    # SUBMITTED: taken by the route, not yet by the orchestration within the route's wait (a loaded machine).
    assert code == 202 and rejected["state"] in ("REJECTED", "SUBMITTED"), rejected
    done = host.wait_state(iid, "REJECTED")
    assert [s["step"] for s in done["steps"]] == ["stage", "checks", "cleanup"]
    assert staging_left(local) == [] and ledger_fingerprint(local.dsn("primary", DB)) == fingerprint
    reasons = refusals(local, iid)
    assert any("already running" in r for r in reasons) and any("four-eyes" in r for r in reasons)
    assert "recovery.rejected" in [r["action"] for r in evidence(local, iid)]
    assert "continuity.recovery.failed" in published(local)  # rejected: the recovery did not happen


# ---- kill the host in the middle of the cutover --------------------------------------------------------


@pytest.mark.parametrize("point", ["swap-mid", "swap"])
def test_host_killed_during_the_swap_resumes_to_exactly_one_live_database(
        host: RecoveryHost, rstack: tuple[LocalStack, dict[str, Any]], blob_store: BlobStore, point: str) -> None:
    """``swap-mid``: killed after renaming live → pre_recovery, before staged → live (inside the swap's
    transaction); ``swap``: killed after the swap committed, before the step was recorded."""
    local, facts = rstack
    live = local.dsn("primary", DB)
    delete_posted_moves(live, 1)
    manifest = manifest_of(blob_store, TENANT, facts["good"])
    host.stop()
    host.start(CONTINUITY_FAILOVER_STEP_PAUSE=f"recovery.{point}:30")
    try:
        code, body = host.request_recovery("olivia")
        assert code == 202, body
        pending = host.wait_state(body["id"], "AWAITING_APPROVAL", "FAILED", "REFUSED")
        assert pending["state"] == "AWAITING_APPROVAL", pending["reason"]
        names = pending["databases"]
        assert host.decide("approve", body["id"], "amir")[0] == 202
        reached = _in_swap_transaction if point == "swap-mid" else (
            lambda lo: names["pre_recovery"] in database_names(lo, "odoo_rc_acme%"))
        wait_until(lambda: reached(local), timeout=60, what="the swap reaching its pause", interval=0.05)
        host.kill()
        dbs = database_names(local, "odoo_rc_acme%")
        assert [n for n in dbs if n == DB] == [DB], "while the host is dead, exactly one database is named live"
        if point == "swap-mid":
            assert names["pre_recovery"] not in dbs and names["staged"] in dbs, "the kill left a half swap"
        else:
            assert names["pre_recovery"] in dbs and names["staged"] not in dbs
    finally:
        host.stop()
        host.start()
    done = host.wait_state(body["id"], "COMPLETED", "FAILED", timeout=120)
    assert done["state"] == "COMPLETED", done["reason"]
    dbs = database_names(local, "odoo_rc_acme%")
    assert [n for n in dbs if n == DB] == [DB] and dbs[DB]["allow_connections"]
    assert names["pre_recovery"] in dbs and names["staged"] not in dbs
    assert ledger_fingerprint(live)[0] == manifest["ledger"]["fingerprint"]


def _in_swap_transaction(local: LocalStack) -> bool:
    """A session sits inside the swap's transaction: it renamed a database and has not committed."""
    import psycopg

    with psycopg.connect(local.dsn("primary"), autocommit=True) as conn:
        row = conn.execute("select count(*) from pg_locks l join pg_stat_activity a using (pid) "
                           "where a.state = 'idle in transaction' and l.locktype = 'object' "
                           "and l.classid = 'pg_database'::regclass").fetchone()
    return bool(row and row[0])


# ---- the CLI speaks the same HTTP -----------------------------------------------------------------------


def test_cli_recover_drill_requests_approves_and_leaves_live_untouched(
        host: RecoveryHost, rstack: tuple[LocalStack, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.cli.main import main

    local, _ = rstack
    for key, value in host.env.items():
        monkeypatch.setenv(key, value)
    fingerprint = ledger_fingerprint(local.dsn("primary", DB))
    assert main(["recover", TENANT, "--reason", "drill", "--drill", "--wait", "--user", "olivia", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "AWAITING_APPROVAL" and shown["data_loss"]["summary"]
    assert main(["recover", TENANT, "--approve", "--user", "olivia"]) == 2
    assert "cannot approve it" in capsys.readouterr().err
    assert main(["recover", TENANT, "--approve", "--wait", "--user", "amir", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["state"] == "COMPLETED" and [s["step"] for s in done["steps"]] == ["stage", "checks", "verify",
                                                                                    "cleanup"]
    assert ledger_fingerprint(local.dsn("primary", DB)) == fingerprint and staging_left(local) == []
    assert main(["recover", TENANT, "--status", "--user", "amir"]) == 0
    assert "COMPLETED" in capsys.readouterr().out


def test_unknown_recovery_and_tenant_without_one_answer_404(host: RecoveryHost) -> None:
    code, body = host.call("GET", "/api/recoveries/failover-platform", "amir")
    assert code == 404 and body["error"]["code"] == "not_found"
    code, body = host.call("GET", f"/api/tenants/{OTHER}/recoveries/current", "amir")
    assert code == 404 and "request one" in body["error"]["message"]
    code, body = host.decide("approve", f"recovery-{OTHER}", "amir")
    assert code == 404
