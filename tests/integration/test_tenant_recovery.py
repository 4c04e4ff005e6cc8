"""Tenant recovery against real PostgreSQL and Azurite, step by step through continuity.recovery.service:
staging beside live, the nightly checks on the staged copy, the data-loss report, the cutover with another
tenant writing on the same cluster throughout, a kill between the two renames, resuming a half-made swap,
rollback, and attachments the store cannot bring back (Azurite keeps no versions)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.local.run_folders import LeftoverNotOurs, default_root, folder_name
from continuity.adapters.postgres.tenant_recovery import TenantDatabases, restore_missing_attachments
from continuity.adapters.storage.blob_store import BlobStore
from continuity.kernel.errors import Conflict
from continuity.recovery import service as recovery_service
from continuity.recovery.rules import CutoverPosition, DatabaseNames, RecoveryRefused
from tests.failover_support import Writer
from tests.recovery_support import (
    backup_and_validate,
    database_names,
    delete_posted_moves,
    drop_databases,
    ledger_fingerprint,
    manifest_of,
    seed,
    write_registry,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
TENANT, OTHER = "rc-int", "rc-int-other"
DB, OTHER_DB = "odoo_rc_int", "odoo_rc_int_other"


@pytest.fixture(scope="module")
def world(stack: LocalStack, blob_store: BlobStore,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path = tmp_path_factory.mktemp("recovery") / "tenants.yaml"
    registry = write_registry(path, {TENANT: DB, OTHER: OTHER_DB})
    previous = os.environ.get("CONTINUITY_TENANTS_FILE")
    os.environ["CONTINUITY_TENANTS_FILE"] = str(path)
    try:
        drop_databases(stack, "odoo_rc_int%")
        seed(stack, blob_store, TENANT, DB)
        seed(stack, blob_store, OTHER, OTHER_DB)
        backup_id = backup_and_validate(registry, TENANT, blob_store)
        yield {"registry": registry, "backup_id": backup_id, "tenants_file": path}
        drop_databases(stack, "odoo_rc_int%")  # the kept pre-recovery copies too: the stack is shared
    finally:
        if previous is None:
            os.environ.pop("CONTINUITY_TENANTS_FILE", None)
        else:
            os.environ["CONTINUITY_TENANTS_FILE"] = previous


def new_run(world: dict[str, Any], stamp: datetime) -> dict[str, Any]:
    run_id = f"it-{stamp:%H%M%S%f}"
    planned = recovery_service.plan(TENANT, stamp, run_id, world["backup_id"])
    return {"tenant": TENANT, "run_id": run_id, "backup_id": world["backup_id"], "names": planned["names"],
            "marker": planned["marker"], "drill": False}


def staged_and_checked(world: dict[str, Any], stamp: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    run = new_run(world, stamp)
    staged = recovery_service.stage(run)
    assert staged["ok"], staged["detail"]
    checked = recovery_service.check({**run, "restore": staged["data"]["restore"]})
    return run, checked


def test_refusals_of_the_backup_choice_name_the_reason(world: dict[str, Any], blob_store: BlobStore) -> None:
    with pytest.raises(RecoveryRefused, match=f"belongs to tenant {TENANT}, not {OTHER}"):
        recovery_service.choose(OTHER, world["backup_id"], None)
    with pytest.raises(RecoveryRefused, match="is before the oldest backup"):
        recovery_service.choose(TENANT, None, datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(Conflict, match="already running"):
        recovery_service.choose(TENANT, None, None, running="recovery-rc-int, CHECKING")
    chosen = recovery_service.choose(TENANT, None, None)
    assert chosen["backup"]["backup_id"] == world["backup_id"] and chosen["choice"] == "newest"


def test_staged_copy_passes_the_nightly_checks_and_reports_data_loss_without_touching_live(
        world: dict[str, Any], stack: LocalStack) -> None:
    live_dsn = stack.dsn("primary", DB)
    deleted = delete_posted_moves(live_dsn, 3)
    with psycopg.connect(live_dsn, autocommit=True) as conn:
        conn.execute("insert into account_move (id, name, date, state, move_type, journal_id, company_id, currency_id,"
                     " auto_post, write_date) values (1000, '/', '2026-03-02', 'draft', 'out_invoice', 1, 1, 1, 'no',"
                     " now() at time zone 'utc')")
        conn.execute("update account_move set write_date = now() at time zone 'utc' where id = 1")
    before = ledger_fingerprint(live_dsn)
    run, checked = staged_and_checked(world, datetime.now(UTC))
    try:
        assert checked["ok"], checked["detail"]
        assert checked["data"]["failed_checks"] == []
        assert checked["data"]["checks"]["ledger"]["status"] == "pass"
        moves = {t["name"]: t for t in checked["data"]["data_loss"]["tables"]}["moves"]
        assert moves["missing_from_live"] == len(deleted) and moves["created_after"] == 1
        assert moves["modified_after"] == 1
        invoices = {t["name"]: t for t in checked["data"]["data_loss"]["tables"]}["invoices"]
        assert invoices["created_after"] == 1
        assert ledger_fingerprint(live_dsn) == before, "staging changed the live database"
    finally:
        assert recovery_service.cleanup(run)["data"]["dropped"] is True
        with psycopg.connect(live_dsn, autocommit=True) as conn:
            conn.execute("delete from account_move where id = 1000")


def test_cutover_recovers_the_ledger_while_another_tenant_on_the_cluster_keeps_writing(
        world: dict[str, Any], stack: LocalStack, blob_store: BlobStore) -> None:
    live_dsn = stack.dsn("primary", DB)
    delete_posted_moves(live_dsn, 2)
    manifest = manifest_of(blob_store, TENANT, world["backup_id"])
    corrupted = ledger_fingerprint(live_dsn)
    assert corrupted[0] != manifest["ledger"]["fingerprint"]
    run, checked = staged_and_checked(world, datetime.now(UTC))
    assert checked["ok"], checked["detail"]
    names = DatabaseNames.from_json(run["names"])
    tenant_session = psycopg.connect(live_dsn, autocommit=True)  # an application session on the corrupted db
    writer = Writer(stack.dsn("primary", OTHER_DB), table="recovery_probe")
    writer.start()
    try:
        # The other tenant is writing before the cutover starts, during it and after it ends.
        wait_until(lambda: len(writer.acked) >= 10, timeout=30, what="the other tenant's writer committing")
        during_start = len(writer.acked)
        steps = [recovery_service.fence(run), recovery_service.swap(run), recovery_service.reopen(run),
                 recovery_service.verify(run)]
        during_end = len(writer.acked)
        wait_until(lambda: len(writer.acked) >= during_end + 10, timeout=30,
                   what="the other tenant still committing after the cutover")
    finally:
        writer.stop()
    assert [s["ok"] for s in steps] == [True] * 4, [s["detail"] for s in steps]
    assert writer.errors == 0 and writer.refused == 0, "the other tenant's writes were disturbed"
    assert during_end > during_start, "the other tenant committed nothing while the cutover ran"
    assert writer.lost_on(stack.dsn("primary", OTHER_DB)) == []
    with pytest.raises(psycopg.OperationalError):
        tenant_session.execute("select 1")  # the fence ended the tenant's own sessions
    fingerprint, posted = ledger_fingerprint(live_dsn)
    assert fingerprint == manifest["ledger"]["fingerprint"] and posted == manifest["ledger"]["posted_moves"]
    dbs = database_names(stack, "odoo_rc_int%")
    assert names.pre_recovery in dbs and names.staged not in dbs and dbs[DB]["allow_connections"]
    with psycopg.connect(stack.dsn("primary", names.pre_recovery), autocommit=True) as kept:
        assert kept.execute("show default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            kept.execute("delete from account_move")
    assert ledger_fingerprint(stack.dsn("primary", names.pre_recovery)) == corrupted, "the original was not kept"
    assert steps[3]["data"]["ledger_matches_manifest"] is True
    again = recovery_service.swap(run)  # a re-run step is a no-op
    assert again["ok"] and again["data"]["actions"] == []
    taken = recovery_service.backup_after(run)
    assert taken["ok"] and taken["data"]["backup_id"] != world["backup_id"]
    assert manifest_of(blob_store, TENANT, taken["data"]["backup_id"])["ledger"]["fingerprint"] == fingerprint


KILL_SCRIPT = """
import sys, json
from continuity.recovery import service as recovery_service
print(json.dumps(recovery_service.swap(json.loads(sys.argv[1]))), flush=True)
"""


def test_kill_between_the_two_renames_leaves_the_original_live_and_the_resumed_step_completes(
        world: dict[str, Any], stack: LocalStack) -> None:
    import json

    run, checked = staged_and_checked(world, datetime.now(UTC))
    assert checked["ok"], checked["detail"]
    names = DatabaseNames.from_json(run["names"])
    assert recovery_service.fence(run)["ok"]
    env = {**os.environ, "CONTINUITY_FAILOVER_STEP_PAUSE": "recovery.swap-mid:60", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(run)], env=env, cwd=ROOT,
                            start_new_session=True)
    launched = datetime.now(UTC)

    def paused_mid_swap() -> bool:  # the swap's transaction has renamed live → pre_recovery and now sleeps
        assert proc.poll() is None, "the swap process ended before reaching its pause"
        with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
            row = conn.execute("select count(*) from pg_locks l join pg_stat_activity a using (pid) "
                               "where a.state = 'idle in transaction' and l.locktype = 'object' "
                               "and l.classid = 'pg_database'::regclass").fetchone()
        return bool(row and row[0])

    try:
        wait_until(paused_mid_swap, timeout=30, what="the swap reaching its pause between the renames", interval=0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    killed = datetime.now(UTC)
    databases = TenantDatabases(stack.dsn("primary"), names, run["marker"])
    # The killed session's transaction is rolled back once the server notices the dead client.
    wait_until(lambda: databases.position()[0] is CutoverPosition.FENCED, timeout=10,
               what="the killed swap rolled back to FENCED", interval=0.05)
    dbs = database_names(stack, "odoo_rc_int%")
    assert DB in dbs and dbs[DB]["comment"] != run["marker"] and names.pre_recovery not in dbs, "a half swap was left"
    resumed = recovery_service.swap(run)
    assert resumed["ok"] and resumed["data"]["position"] == "SWAPPED"
    # The swap's timing counts from its killed first attempt, not from the resumed one.
    assert resumed["attempts"] == 2
    assert launched <= datetime.fromisoformat(resumed["started_at"]) <= killed
    reopened = recovery_service.reopen(run)
    assert reopened["ok"]
    dbs = database_names(stack, "odoo_rc_int%")
    assert [n for n in dbs if n == DB] == [DB] and dbs[DB]["comment"] == run["marker"]
    # The tenant was unavailable from the fence (before the killed swap) until the reopen: the crash counts.
    window = reopened["data"]["unavailable"]
    since, until = datetime.fromisoformat(window["since"]), datetime.fromisoformat(window["until"])
    assert since <= launched and until >= killed
    assert window["seconds"] == round((until - since).total_seconds(), 3) >= (killed - launched).total_seconds()
    assert recovery_service.reopen(run)["data"]["unavailable"] == window, "a re-run must not move the window"


STAGE_SCRIPT = """
import sys, json
from continuity.recovery import service as recovery_service
print(json.dumps(recovery_service.stage(json.loads(sys.argv[1]))), flush=True)
"""


def staged_comment(stack: LocalStack, name: str) -> str | None:
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        row = conn.execute("select coalesce(shobj_description(oid, 'pg_database'), '') from pg_database "
                           "where datname = %s", (name,)).fetchone()
    return None if row is None else str(row[0])


def pg_children_naming(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode() if proc.name.isdigit() else ""
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] if line else "X"
        except OSError:
            continue
        if text in line and state not in ("Z", "X") and "pytest" not in line:
            found.append(line)
    return found


def test_stage_killed_after_its_restore_is_redone_by_the_next_attempt_without_leftovers(
        world: dict[str, Any], stack: LocalStack) -> None:
    import json

    run = new_run(world, datetime.now(UTC))
    names = DatabaseNames.from_json(run["names"])
    folder = default_root() / folder_name(run["run_id"], "stage")
    env = {**os.environ, "CONTINUITY_FAILOVER_STEP_PAUSE": "recovery.restored:120", "PYTHONPATH": str(ROOT)}
    launched = datetime.now(UTC)
    proc = subprocess.Popen([sys.executable, "-c", STAGE_SCRIPT, json.dumps(run)], env=env, cwd=ROOT,
                            start_new_session=True)

    def restored_and_held() -> bool:  # restored into the staging database, the dump still in the run's folder
        assert proc.poll() is None, "the stage step ended before reaching its pause"
        return staged_comment(stack, names.staged) == run["marker"] and any(folder.glob("*.dump"))

    try:
        wait_until(restored_and_held, timeout=120, what="the stage step held after its restore")
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the host only
        proc.wait(timeout=10)
    killed = datetime.now(UTC)
    assert any(folder.glob("*.dump")), "the crash left the downloaded dump (tenant data) behind"
    try:
        again = recovery_service.stage(run)
        assert again["ok"], again["detail"]
        assert again["attempts"] == 2
        first = datetime.fromisoformat(again["started_at"])
        assert launched <= first <= killed < datetime.fromisoformat(again["attempt_started_at"])
        assert again["seconds"] >= (killed - first).total_seconds(), "the killed attempt's time is not counted"
        assert not folder.exists(), "the run's folder (and the dump in it) outlived the step"
        assert staged_comment(stack, names.staged) == run["marker"]
        assert pg_children_naming(names.staged) == []
        checked = recovery_service.check({**run, "restore": again["data"]["restore"]})
        assert checked["ok"], checked["detail"]  # the redone staging copy is whole
    finally:
        assert recovery_service.cleanup(run)["data"]["dropped"] is True
    assert staged_comment(stack, names.staged) is None


def test_staging_database_this_recovery_did_not_make_is_refused_and_left_untouched(
        world: dict[str, Any], stack: LocalStack) -> None:
    from psycopg import sql

    run = new_run(world, datetime.now(UTC))
    names = DatabaseNames.from_json(run["names"])
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(names.staged)))
        conn.execute(sql.SQL("comment on database {} is 'someone else''s copy'").format(
            sql.Identifier(names.staged)))
    with psycopg.connect(stack.dsn("primary", names.staged), autocommit=True) as conn:
        conn.execute("create table keep (x int)")
        conn.execute("insert into keep values (42)")
    try:
        with pytest.raises(LeftoverNotOurs, match=f"database {names.staged} exists but is not this recovery's "
                                                  "staging copy .* left untouched"):
            recovery_service.stage(run)
        with pytest.raises(LeftoverNotOurs):
            recovery_service.cleanup(run)
        assert not (default_root() / folder_name(run["run_id"], "stage")).exists()
        with psycopg.connect(stack.dsn("primary", names.staged), autocommit=True) as conn:
            assert conn.execute("select x from keep").fetchall() == [(42,)]
        assert staged_comment(stack, names.staged) == "someone else's copy"
    finally:
        with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(names.staged)))


def test_half_made_swap_resumes_forward_or_rolls_back_to_the_original(world: dict[str, Any],
                                                                      stack: LocalStack) -> None:
    from psycopg import sql

    run, checked = staged_and_checked(world, datetime.now(UTC))
    assert checked["ok"], checked["detail"]
    names = DatabaseNames.from_json(run["names"])
    original = ledger_fingerprint(stack.dsn("primary", DB))
    assert recovery_service.fence(run)["ok"]
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:  # a swap interrupted between renames
        conn.execute(sql.SQL("alter database {} rename to {}").format(sql.Identifier(DB),
                                                                      sql.Identifier(names.pre_recovery)))
    databases = TenantDatabases(stack.dsn("primary"), names, run["marker"])
    assert databases.position()[0] is CutoverPosition.HALF_SWAPPED
    back = recovery_service.rollback(run)
    assert back["ok"] and back["data"]["from"] == "HALF_SWAPPED" and back["data"]["staged_dropped"]
    dbs = database_names(stack, "odoo_rc_int%")
    assert dbs[DB]["allow_connections"] and names.pre_recovery not in dbs and names.staged not in dbs
    assert ledger_fingerprint(stack.dsn("primary", DB)) == original


def test_attachments_the_store_lost_are_reported_as_not_found_on_a_store_without_versions(
        world: dict[str, Any], blob_store: BlobStore) -> None:
    prefix = f"{TENANT}/"
    names = [n.removeprefix(prefix) for n in blob_store.list_names("attachments", prefix=prefix)]
    lost = names[0]
    content = blob_store.download("attachments", prefix + lost)
    blob_store.delete("attachments", prefix + lost)
    try:
        report = restore_missing_attachments(blob_store, "attachments", prefix, {n: "" for n in names})
        assert report["missing"] == 1 and report["not_found"] == [lost] and report["restored"] == []
        assert report["store_keeps_versions"] is False
        assert "could not be found (the store keeps no blob versions or soft-deleted blobs)" in report["note"]
    finally:
        blob_store.upload("attachments", prefix + lost, content)
