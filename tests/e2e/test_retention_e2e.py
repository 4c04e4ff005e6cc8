"""Retention end to end: function_app.py on the devhost, real Azurite and PostgreSQL, a simulated clock.

Ninety days of small synthetic backups (every third day, 2025-12-31 .. 2026-03-31 at 01:00 UTC) for the
three demo tenants are uploaded to Azurite and cataloged by the devhost's own BlobCreated path. Then, as of
2026-03-31 03:30 UTC: the dry-run plan, an apply through the admin route, and the audit. The devhost runs
on a control database and containers of its own, so no other test's backups are planned or deleted.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from continuity.adapters.local.identity_store import IdentityStore
from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.catalog_store import PgCatalogStore
from continuity.adapters.postgres.connection import connect
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.catalog.model import BackupStatus
from continuity.kernel.identity import Role
from tests.e2e.devhost_support import app_devhost_on_own_catalog
from tests.unit.test_catalog import make_manifest
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

DB = "continuity_retention_e2e"
BACKUPS = "retention-e2e-backups"
EVIDENCE = "retention-e2e-evidence"
AS_OF = "2026-03-31T03:30:00Z"
TENANTS = ("acme-finance", "globex", "initech")
# One backup every third day at 01:00 UTC from 2025-12-31 to 2026-03-31: 31 per tenant over 90 days
# (a daily schedule would triple the ingest time of this test without exercising another rule).
DAYS = [date(2026, 3, 31) - timedelta(days=3 * n) for n in range(31)]


def _d(month: int, *days: int, year: int = 2026) -> set[date]:
    return {date(year, month, d) for d in days}


DEC31 = {date(2025, 12, 31)}
# What each tier's policy keeps as of 2026-03-31 03:30 (a Tuesday, ISO week 14) and in which tier, worked
# out by hand from config/tenants.yaml, independently of the planner. Ages at 03:30: Mar 31 0.1 days,
# Mar 19 12.1, Mar 16 15.1, Mar 1 30.1, Feb 26 33.1, Jan 30 60.1, Dec 31 90.1.
KEPT: dict[str, set[date]] = {
    # bronze: daily 7 (Mar 31 .. Mar 13) also holds weeks 11-14 and the 7-day immutability window;
    # monthly 3 adds Feb 26 and Jan 30. Dec 31 is in none of them.
    "initech": _d(3, 31, 28, 25, 22, 19, 16, 13) | _d(2, 26) | _d(1, 30),
    # silver: daily 7 as above (immutable 14 days: Mar 19 and newer, inside it); monthly 12 adds Feb 26,
    # Jan 30 and Dec 31; yearly 1 is Mar 31.
    "globex": _d(3, 31, 28, 25, 22, 19, 16, 13) | _d(2, 26) | _d(1, 30) | DEC31,
    # gold: daily 14 (Mar 31 .. Feb 20); weekly 8 adds Feb 14 (week 7); monthly and yearly add Jan 30, Dec 31.
    "acme-finance": _d(3, 31, 28, 25, 22, 19, 16, 13, 10, 7, 4, 1) | _d(2, 26, 23, 20, 14) | _d(1, 30) | DEC31,
}
TIERS: dict[str, dict[str, set[date]]] = {
    # bronze: cool after 30 days, cold and archive after 90
    "initech": {"Cool": _d(2, 26) | _d(1, 30)},
    # silver: cool after 14 days, cold after 60
    "globex": {"Cool": _d(3, 16, 13) | _d(2, 26), "Cold": _d(1, 30) | DEC31},
    # gold: cool after 7, cold after 30; archive after 90 only once validated, so Dec 31 stays cold
    "acme-finance": {"Cool": _d(3, 22, 19, 16, 13, 10, 7, 4), "Cold": _d(3, 1) | _d(2, 26, 23, 20, 14) | _d(1, 30)
                     | DEC31},
}


def expected_tier(tenant: str, day: date) -> str:
    return next((tier for tier, days in TIERS[tenant].items() if day in days), "Hot")


class Api:
    def __init__(self, stack: LocalStack, user_keys: dict[str, str]) -> None:
        self.port = stack.settings.devhost_port
        self.keys_path = stack.base / "devhost" / "keys.json"
        self.user_keys = user_keys

    def key(self, name: str) -> str:
        return str(json.loads(self.keys_path.read_text())[name])

    def call(self, method: str, path: str, body: Any = None, *, user: str | None = None,
             admin: bool = False) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json",
                   "x-functions-key": self.key("masterKey" if admin else "functionKey")}
        if user:
            headers["X-Continuity-Key"] = self.user_keys[user]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def world(stack: LocalStack, blob_store: BlobStore) -> Iterator[tuple[Api, str]]:
    identities = IdentityStore(stack.base)
    keys = {name: identities.add_user(name, roles, replace=True)
            for name, roles in (("amir", [Role.APPROVER]), ("olivia", [Role.OPERATOR]))}
    with app_devhost_on_own_catalog(stack, blob_store, database=DB, backups=BACKUPS, evidence=EVIDENCE,
                                    subscription="retention-e2e-created") as dsn:
        yield Api(stack, keys), dsn


def _put(blobs: BlobStore, tenant: str, day: date) -> None:
    created = datetime(day.year, day.month, day.day, 1, 0, tzinfo=UTC)
    backup_id = f"{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    prefix = f"{tenant}/{created:%Y/%m/%d}/{backup_id}/"
    dump = b"PGDMP" + uuid.uuid4().bytes * 16
    # Dump first, then the manifest: the order a backup job writes them.
    blobs.upload(BACKUPS, prefix + "db.dump", dump)
    blobs.upload(BACKUPS, prefix + "manifest.json", json.dumps(make_manifest(tenant, backup_id, dump=dump)).encode())


def _entries(dsn: str) -> dict[str, list[Any]]:
    store = PgCatalogStore(dsn)
    return {t: store.list_backups(tenant=t, limit=1000)[0] for t in TENANTS}


def _available(dsn: str) -> dict[str, int]:
    with connect(dsn) as conn:
        rows = conn.execute("select tenant, count(*) from catalog.backups where status = 'available' "
                            "group by tenant").fetchall()
    return {str(t): int(n) for t, n in rows}


def _storage(blobs: BlobStore) -> dict[str, str]:
    return {b.name: str(b.blob_tier) for b in blobs.container(BACKUPS).list_blobs()}


@pytest.fixture(scope="module")
def seeded(world: tuple[Api, str], blob_store: BlobStore) -> tuple[Api, str]:
    api, dsn = world
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda job: _put(blob_store, *job), [(t, d) for t in TENANTS for d in DAYS]))
    wait_until(lambda: _available(dsn) == {t: len(DAYS) for t in TENANTS}, timeout=420,
               what=f"{len(TENANTS) * len(DAYS)} backups cataloged through BlobCreated", interval=0.5)
    return api, dsn


def test_ninety_days_plan_apply_audit_leaves_exactly_the_policy_in_storage(
        seeded: tuple[Api, str], blob_store: BlobStore, capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.cli.main import main
    from continuity.retention import service as retention_service

    api, dsn = seeded
    evidence = EvidenceStore(dsn, blob_store, EVIDENCE)
    before = (_storage(blob_store), evidence.head())

    # The dry run changes nothing.
    status, plan = api.call("GET", f"/api/retention/plan?tenant=initech&as_of={AS_OF}", user="olivia")
    assert status == 200, plan
    assert plan["dry_run"] is True and plan["now"] == AS_OF
    assert plan["summary"]["DELETE"] == len(DAYS) - len(KEPT["initech"])
    assert plan["immutability"].startswith("not enforced by this store")
    assert (_storage(blob_store), evidence.head()) == before

    # as_of is refused on the operator route; a start while another run applies is refused 409 and changes nothing.
    status, body = api.call("POST", "/api/retention/apply", {"as_of": AS_OF}, user="olivia")
    assert status == 403 and "as_of is accepted only for dry runs" in body["error"]["message"]
    future = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    status, body = api.call("POST", "/api/retention/apply-as-of", {"as_of": future}, admin=True)
    assert status == 400 and "is in the future; retention never runs ahead of the clock" in body["error"]["message"]
    ports = retention_service.open_ports()
    assert retention_service.begin_run(ports, "retention-20260330", datetime(2026, 3, 30, 3, tzinfo=UTC),
                                       "timer")["state"] == "started"
    status, body = api.call("POST", "/api/retention/apply-as-of", {"as_of": AS_OF}, admin=True)
    assert status == 409 and body["error"]["message"].startswith("retention run retention-20260330 is applying")
    assert _storage(blob_store) == before[0]
    retention_service.finish_run(ports, "retention-20260330", error="stopped by the test")

    # Apply as of the simulated day, through the orchestration.
    status, started = api.call("POST", "/api/retention/apply-as-of", {"as_of": AS_OF}, admin=True, user="olivia")
    assert status == 202, started
    assert started["instance_id"] == "retention-20260331"
    run = wait_until(lambda: (r := api.call("GET", started["status_url"], user="olivia")[1])["runtime_status"] in (
        "Completed", "Failed") and r, timeout=240, what="the retention run to end", interval=0.5)
    assert run["runtime_status"] == "Completed", run
    assert run["run"]["state"] == "completed" and run["run"]["requested_by"] == "olivia"
    assert run["run"]["summary"]["not_done_count"] == 0
    status, again = api.call("POST", "/api/retention/apply-as-of", {"as_of": AS_OF}, admin=True)
    assert status == 200 and again["created"] is False  # a second start the same day does nothing new

    # Storage holds exactly what the policies keep, in the tier their age calls for.
    storage = _storage(blob_store)
    entries = _entries(dsn)
    for tenant in TENANTS:
        kept = {e.created_at.date(): e for e in entries[tenant] if e.status is not BackupStatus.DELETED}
        assert set(kept) == KEPT[tenant], tenant
        for day, entry in kept.items():
            assert storage[entry.dump_blob] == storage[entry.manifest_blob] == expected_tier(tenant, day), \
                f"{tenant} {day}"
        for entry in entries[tenant]:
            if entry.status is BackupStatus.DELETED:
                assert entry.dump_blob not in storage and entry.manifest_blob not in storage
    assert len(storage) == 2 * sum(len(k) for k in KEPT.values())
    actions = [r.action for r in evidence.records(subject="retention/retention-20260331")]
    # The refused start above is recorded under the instance it would have been, then the real run.
    assert actions == ["retention.refused", "retention.planned", "retention.batch_applied", "retention.completed"]

    # The audit reads every blob back and finds no deviation; immutability is honestly not enforced.
    assert main(["retention", "audit", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["deviations"] == []
    assert report["last_run"] == "retention-20260331" and report["as_of"] == AS_OF
    assert report["blobs_read"] == len(storage)
    assert report["immutability"]["note"].startswith("not enforced by this store: ")

    # The CLI speaks the same API: applying again as of the same day is the same run, already completed;
    # planning again at that time finds nothing left to change.
    assert main(["retention", "apply", "--user", "olivia", "--as-of", AS_OF, "--wait", "--json"]) == 0
    followed = json.loads(capsys.readouterr().out)
    assert followed["run_id"] == "retention-20260331" and followed["runtime_status"] == "Completed"
    assert main(["retention", "plan", "--as-of", AS_OF, "--json"]) == 0
    replanned = json.loads(capsys.readouterr().out)
    assert replanned["summary"]["DELETE"] == replanned["summary"]["SET_TIER"] == 0
    assert replanned["summary"]["KEEP"] == sum(len(k) for k in KEPT.values())


def test_legal_holds_over_http_record_the_actor_and_refuse_unknown_targets(
        seeded: tuple[Api, str], blob_store: BlobStore, capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.cli.main import main

    api, dsn = seeded
    entry = _entries(dsn)["initech"][0]
    path = "/api/tenants/initech/holds"
    status, body = api.call("POST", path, {"reason": "case 2026-17"}, user="olivia")
    assert status == 403 and "olivia may not set legal holds" in body["error"]["message"]
    status, body = api.call("POST", "/api/tenants/nobody/holds", {"reason": "case 2026-17"}, user="amir")
    assert status == 404 and body["error"]["code"] == "unknown_tenant"
    status, body = api.call("POST", path, {"reason": "case 2026-17", "backup_id": "20250101T010000Z-000000"},
                            user="amir")
    assert status == 404 and body["error"]["code"] == "backup_not_found"
    status, body = api.call("POST", path, {"reason": "case 2026-17: subpoena", "backup_id": entry.backup_id},
                            user="amir")
    assert status == 201, body
    assert body["hold"]["set_by"] == "amir" and body["storage"]["status"] == "NOT_ENFORCED"
    status, listing = api.call("GET", path, user="amir")
    assert status == 200 and [h["backup_id"] for h in listing["active"]] == [entry.backup_id]
    # Clearing through the CLI (same API, the user's key from the local keyring); a second clear is refused.
    clear = ["hold", "clear", "initech", "--backup", entry.backup_id, "--user", "amir", "--json"]
    assert main([*clear, "--reason", "case closed"]) == 0
    assert json.loads(capsys.readouterr().out)["hold"]["cleared_by"] == "amir"
    assert main([*clear, "--reason", "again"]) == 2
    refusal = json.loads(capsys.readouterr().out)["error"]
    assert refusal["code"] == "hold_not_found" and "there is no active legal hold on backup initech/" in \
        refusal["message"]
    records = EvidenceStore(dsn, blob_store, EVIDENCE).records(limit=100000)
    holds = [(r.action, r.actor) for r in records if r.subject.startswith("hold/")]
    assert holds == [("hold.refused", "olivia"), ("hold.refused", "amir"), ("hold.refused", "amir"),
                     ("hold.set", "amir"), ("hold.cleared", "amir"), ("hold.refused", "amir")]
    cleared = next(r for r in records if r.action == "hold.cleared")
    assert cleared.data["reason"] == "case closed" and cleared.data["set_reason"] == "case 2026-17: subpoena"
