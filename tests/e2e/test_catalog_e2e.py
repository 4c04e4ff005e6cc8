"""The catalog and incident workflows end to end: function_app.py on the devhost, real Azurite and PostgreSQL.

Events arrive the way Azure delivers them: the devhost's blob watcher (BlobCreated for new blobs) or
POSTs to ``/runtime/webhooks/eventgrid?functionName=...``. The devhost runs with a catalog of its own: a control
database and backups and evidence containers no other test module uses, and a test registry that adds tenants
(``bulk-*``, ``ghost`` whose database does not exist). Each test makes the backups it looks at, so the tests
pass in any order and one by one.
"""

from __future__ import annotations

import http.client
import json
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.catalog_store import PgCatalogStore
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.catalog.model import BackupStatus, CatalogEntry
from tests.e2e.devhost_support import app_devhost_on_own_catalog
from tests.unit.test_catalog import make_manifest
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

ROOT = Path(__file__).resolve().parents[2]
BULK_TENANTS = ("bulk-a", "bulk-b")
DB = "continuity_catalog_e2e"
BACKUPS = "catalog-e2e-backups"
EVIDENCE = "catalog-e2e-evidence"
# How long a test waits for the devhost before giving up: a bound on a hang, not the latency under test.
PATIENCE_SECONDS = 120
# "Within seconds": the most a new backup may take from its manifest landing in storage to being available in
# the catalog, by storage's and the catalog's own timestamps (the watcher polls every second here; about 8 s were
# measured on a loaded two-core machine).
CATALOG_LAG_BOUND_SECONDS = 30


class Host:
    def __init__(self, stack: LocalStack, dsn: str) -> None:
        self.port = stack.settings.devhost_port
        self.keys_path = stack.base / "devhost" / "keys.json"
        self.dsn = dsn

    @property
    def keys(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.keys_path.read_text())
        return data

    def request(self, method: str, path: str, payload: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            body = json.dumps(payload).encode() if payload is not None else None
            conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
        finally:
            conn.close()

    def deliver(self, function: str, events: list[dict[str, Any]]) -> int:
        status, _ = self.request("POST", f"/runtime/webhooks/eventgrid?functionName={function}"
                                 f"&code={self.keys['eventGridKey']}", events,
                                 {"aeg-event-type": "Notification"})
        return status

    def events_log(self) -> list[dict[str, Any]]:
        path = self.keys_path.parent / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def host(stack: LocalStack, blob_store: BlobStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """The devhost on this module's own control database, containers and registry (this process reads the same)."""
    registry = yaml.safe_load((ROOT / "config" / "tenants.yaml").read_text())
    for tid in BULK_TENANTS:
        registry["tenants"].append({"id": tid, "name": tid, "tier": "bronze", "server": "weu-primary",
                                    "database": f"odoo_{tid.replace('-', '_')}", "primary_region": "westeurope",
                                    "secondary_region": "northeurope"})
    registry["tenants"].append({"id": "ghost", "name": "Ghost Ltd", "tier": "gold", "server": "weu-primary",
                                "database": "odoo_ghost_does_not_exist", "primary_region": "westeurope",
                                "secondary_region": "northeurope"})
    path = tmp_path_factory.mktemp("registry") / "tenants.yaml"
    path.write_text(yaml.safe_dump(registry))
    env = {"CONTINUITY_TENANTS_FILE": str(path), "CONTINUITY_INCIDENT_RETRY_ATTEMPTS": "2",
           "CONTINUITY_INCIDENT_FIRST_RETRY_SECONDS": "1"}
    failed = [{"name": "backup-failed", "source": "topic", "function": "backup_failed",
               "includedEventTypes": ["Continuity.Backup.Failed"]}]
    with app_devhost_on_own_catalog(stack, blob_store, database=DB, backups=BACKUPS, evidence=EVIDENCE,
                                    subscription="catalog-e2e-created", env=env, topic_subscriptions=failed) as dsn:
        yield Host(stack, dsn)


def _put_backup(blobs: BlobStore, tenant: str, created: datetime) -> tuple[str, dict[str, Any]]:
    """A small synthetic backup (valid manifest, matching checksum); returns its id and both blobs' facts."""
    backup_id = f"{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    prefix = f"{tenant}/{created:%Y/%m/%d}/{backup_id}/"
    dump = b"PGDMP" + uuid.uuid4().bytes * 64
    parts = {}
    for name, data in (("db.dump", dump), ("manifest.json", json.dumps(make_manifest(tenant, backup_id, dump=dump))
                                            .encode())):
        result = blobs.container(BACKUPS).get_blob_client(prefix + name).upload_blob(data, overwrite=True)
        parts[prefix + name] = {"etag": result["etag"], "size": len(data)}
    return backup_id, parts


def _blob_created(blob: str, etag: str, size: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
        "subject": f"/blobServices/default/containers/{BACKUPS}/blobs/{blob}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": datetime.now(UTC).isoformat(),
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {"api": "PutBlob", "url": f"http://127.0.0.1/devstoreaccount1/{BACKUPS}/{blob}", "eTag": etag,
                 "contentLength": size, "contentType": "application/octet-stream", "blobType": "BlockBlob",
                 "sequencer": "0" * 32},
    }


def _catalog(host: Host, tenant: str) -> list[CatalogEntry]:
    items, cursor = PgCatalogStore(host.dsn).list_backups(tenant=tenant, limit=500)
    assert cursor is None
    return items


def _evidence(host: Host, blob_store: BlobStore) -> EvidenceStore:
    return EvidenceStore(host.dsn, blob_store, container=EVIDENCE)


def _available(host: Host, tenant: str, backup_id: str) -> CatalogEntry | None:
    return next((e for e in _catalog(host, tenant) if e.backup_id == backup_id
                 and e.status is BackupStatus.AVAILABLE), None)


def catalog_backup(host: Host, blobs: BlobStore, tenant: str, created: datetime) -> str:
    """A synthetic backup of ``tenant``, delivered as BlobCreated and waited for until it is available."""
    backup_id, parts = _put_backup(blobs, tenant, created)
    assert host.deliver("catalog_blob_created", [_blob_created(n, f["etag"], f["size"])
                                                 for n, f in parts.items()]) in (200, 202)
    wait_until(lambda: _available(host, tenant, backup_id), timeout=PATIENCE_SECONDS,
               what=f"{tenant}'s backup {backup_id} available in the catalog", interval=0.25)
    return backup_id


def test_a_real_backup_appears_in_the_catalog_through_blob_created_within_seconds(
        host: Host, blob_store: BlobStore) -> None:
    from continuity.adapters.postgres.demo_seed import seed_tenant
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.kernel.settings import configured_registry

    registry = configured_registry()
    seed_tenant(registry, registry.get_tenant("globex"), 1)
    stored = take_backup(registry, "globex", store=blob_store)
    assert stored.container == BACKUPS
    # Nobody delivers an event here: the devhost's blob watcher must see the backup and raise BlobCreated.
    entry = wait_until(lambda: _available(host, "globex", stored.backup_id), timeout=PATIENCE_SECONDS,
                       what="the backup available in the catalog", interval=0.25)
    assert entry.dump_sha256 == stored.sha256
    # The lag from the manifest landing in storage (the backup is complete) to the catalog entry turning
    # available, by storage's and the catalog's clocks, not by how long this test happened to poll.
    written = blob_store.container(BACKUPS).get_blob_client(stored.manifest).get_blob_properties().last_modified
    assert entry.updated_at is not None
    lag = (entry.updated_at - written).total_seconds()
    assert 0 <= lag < CATALOG_LAG_BOUND_SECONDS, f"cataloged {lag:.1f}s after the manifest was written"

    published = wait_until(lambda: [e for e in host.events_log() if e.get("source") == "topic"
                                    and e["event"].get("type") == "continuity.backup.cataloged"
                                    and e["event"]["data"].get("backup_id") == stored.backup_id],
                           timeout=PATIENCE_SECONDS, what="continuity.backup.cataloged published", interval=0.25)
    [ingested] = [r for r in _evidence(host, blob_store).records(subject=f"backup globex/{stored.backup_id}")
                  if r.action == "catalog.ingested"]
    assert published[0]["event"]["data"]["evidence_chain_head"]["seq"] >= ingested.seq


def test_a_thousand_deliveries_with_duplicates_in_shuffled_order_give_exactly_the_right_catalog(
        host: Host, blob_store: BlobStore) -> None:
    # The blob watcher sees these blobs too: the orchestration instance id (blob + etag) makes its copy one more
    # duplicate. No other test of this module writes the bulk tenants' backups.
    rng = random.Random(20261124)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    expected: dict[str, set[str]] = {t: set() for t in BULK_TENANTS}
    unique: list[dict[str, Any]] = []
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda i: (BULK_TENANTS[i % 2], *_put_backup(blob_store, BULK_TENANTS[i % 2],
                                                                            base + timedelta(hours=i))), range(350)))
    for tenant, backup_id, parts in made:
        expected[tenant].add(backup_id)
        unique.extend(_blob_created(name, facts["etag"], facts["size"]) for name, facts in parts.items())
    duplicates = [dict(rng.choice(unique)) for _ in range(300)]
    deliveries = unique + duplicates
    rng.shuffle(deliveries)
    assert len(deliveries) == 1000
    for start in range(0, len(deliveries), 50):
        assert host.deliver("catalog_blob_created", deliveries[start:start + 50]) in (200, 202)

    def settled() -> bool:
        return all({e.backup_id for e in _catalog(host, t) if e.status is BackupStatus.AVAILABLE} == expected[t]
                   for t in BULK_TENANTS)

    wait_until(settled, timeout=600, what="all 350 backups available", interval=0.5)
    for tenant in BULK_TENANTS:
        entries = _catalog(host, tenant)
        assert len(entries) == len(expected[tenant])
        assert {e.status for e in entries} == {BackupStatus.AVAILABLE}
    evidence = _evidence(host, blob_store).records(limit=100000)
    ingested = [r.subject for r in evidence if r.action == "catalog.ingested" and r.subject.startswith("backup bulk-")]
    assert len(ingested) == len(set(ingested)) == 350


@pytest.mark.parametrize("event, reason", [
    ({"eventType": "Microsoft.Storage.BlobCreated", "subject": "/blobServices/default/containers/other/blobs/x",
      "data": {"url": "u", "eTag": "e"}}, f"not a Microsoft.Storage.BlobCreated event for container '{BACKUPS}'"),
    ({"eventType": "Microsoft.Storage.BlobDeleted",
      "subject": f"/blobServices/default/containers/{BACKUPS}/blobs/globex/x"}, "type 'Microsoft.Storage.BlobDeleted'"),
    ({"eventType": "Microsoft.Storage.BlobCreated",
      "subject": f"/blobServices/default/containers/{BACKUPS}/blobs/globex/2026/01/01/x/db.dump",
      "data": {"url": 42}}, "malformed BlobCreated data"),
], ids=["other-container", "blob-deleted", "malformed-data"])
def test_malformed_blob_created_events_are_recorded_as_rejected_and_nothing_is_cataloged(
        host: Host, event: dict[str, Any], reason: str) -> None:
    before = {e.backup_id: e.status for e in _catalog(host, "globex")}
    full = {"id": str(uuid.uuid4()), "eventTime": datetime.now(UTC).isoformat(), "dataVersion": "1",
            "metadataVersion": "1", "topic": "t", "data": {}, **event}
    assert host.deliver("catalog_blob_created", [full]) in (200, 202)
    rejections = wait_until(lambda: [r for r in PgCatalogStore(host.dsn).rejections()
                                     if r.get("event_id") == full["id"]], timeout=PATIENCE_SECONDS,
                            what="the rejection recorded", interval=0.25)
    assert reason in rejections[0]["reason"]
    assert {e.backup_id: e.status for e in _catalog(host, "globex")} == before
    assert host.request("GET", "/api/health")[0] == 200


def test_backup_failure_beyond_rpo_retries_and_publishes_rpo_breached_when_the_retry_fails(
        host: Host, blob_store: BlobStore) -> None:
    # ghost's newest good backup is two hours old (gold tier: RPO 15 min) and its database does not exist,
    # so every on-demand retry fails.
    catalog_backup(host, blob_store, "ghost", datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2))

    event_id = str(uuid.uuid4())
    failure = {"id": event_id, "eventType": "Continuity.Backup.Failed", "subject": "tenants/ghost/backups",
               "eventTime": datetime.now(UTC).isoformat(), "dataVersion": "1", "metadataVersion": "1", "topic": "t",
               "data": {"tenant": "ghost", "job_id": "nightly-dump-17", "failed_at": datetime.now(UTC).isoformat(),
                        "reason": "pg_dump: connection to server failed"}}
    assert host.deliver("backup_failed", [failure, failure]) in (200, 202)  # a duplicate delivery starts nothing new

    def breached() -> list[dict[str, Any]]:
        found = [e for e in host.events_log() if e.get("source") == "topic"
                 and e["event"].get("type") == "continuity.rpo.breached"
                 and e["event"]["data"].get("incident") == event_id]
        return found if len(found) >= 2 else []

    events = wait_until(breached, timeout=PATIENCE_SECONDS, what="continuity.rpo.breached", interval=0.25)
    stages = sorted(e["event"]["data"]["stage"] for e in events)
    assert stages == ["detected", "escalated"]
    escalated = next(e["event"]["data"] for e in events if e["event"]["data"]["stage"] == "escalated")
    assert escalated["tenant"] == "ghost"
    assert escalated["exposure"]["level"] == "BREACHED"
    # The outcome is recorded after the escalation is published: wait for it, not for the event.
    records = wait_until(lambda: (found := _evidence(host, blob_store).records(subject=f"incident/{event_id}"))
                         and found[-1].action == "incident.breached" and found,
                         timeout=PATIENCE_SECONDS, what="the incident's outcome recorded", interval=0.25)
    assert [r.action for r in records] == ["incident.backup_failed", "incident.rpo_breached",
                                           "incident.rpo_breached", "incident.breached"]
    assert records[2].data["stage"] == "escalated"
    assert escalated["evidence_chain_head"] == records[2].head.to_json()  # the event names its own record
    retries = [e for e in records if e.action == "incident.breached"][0].data["attempts"]
    assert [a["ok"] for a in retries] == [False, False]
    assert "odoo_ghost_does_not_exist" in retries[0]["error"]


def test_backup_failure_event_for_an_unknown_tenant_is_rejected_and_starts_nothing(host: Host,
                                                                                   blob_store: BlobStore) -> None:
    event_id = str(uuid.uuid4())
    failure = {"id": event_id, "eventType": "Continuity.Backup.Failed", "subject": "tenants/nobody/backups",
               "eventTime": datetime.now(UTC).isoformat(), "dataVersion": "1", "metadataVersion": "1", "topic": "t",
               "data": {"tenant": "nobody", "job_id": "j1", "failed_at": datetime.now(UTC).isoformat(),
                        "reason": "disk full"}}
    assert host.deliver("backup_failed", [failure]) in (200, 202)
    records = wait_until(lambda: _evidence(host, blob_store).records(subject=f"incident/{event_id}"),
                         timeout=PATIENCE_SECONDS, what="the rejection in evidence", interval=0.25)
    assert records[0].action == "incident.event_rejected"
    assert "unknown tenant nobody" in records[0].data["reason"]
    status, _ = host.request("GET", f"/runtime/webhooks/durabletask/instances/incident-{event_id}"
                                    f"?code={host.keys['masterKey']}")
    assert status == 404


def test_a_caller_scoped_to_one_tenant_cannot_see_another_tenants_backups(
        host: Host, stack: LocalStack, blob_store: BlobStore) -> None:
    from continuity.adapters.local.identity_store import IdentityStore
    from continuity.kernel.identity import Role

    now = datetime.now(UTC).replace(microsecond=0)
    own = catalog_backup(host, blob_store, "globex", now - timedelta(minutes=5))
    other = catalog_backup(host, blob_store, "acme-finance", now - timedelta(minutes=4))
    identities = IdentityStore(stack.base)
    globex_key = identities.add_user("globex-auditor", [Role.READER], replace=True, save_key=False,
                                     tenants=["globex"])
    code = host.keys["functionKey"]

    status, page = host.request("GET", f"/api/tenants/globex/backups?code={code}&limit=50",
                                headers={"X-Continuity-Key": globex_key})
    assert status == 200
    assert {i["tenant"] for i in page["items"]} == {"globex"} and own in {i["backup_id"] for i in page["items"]}
    status, one = host.request("GET", f"/api/tenants/globex/backups/{own}?code={code}",
                               headers={"X-Continuity-Key": globex_key})
    assert status == 200 and one["backup_id"] == own

    for path in ("/api/tenants/acme-finance/backups", f"/api/tenants/acme-finance/backups/{other}"):
        status, body = host.request("GET", f"{path}?code={code}", headers={"X-Continuity-Key": globex_key})
        assert status == 403
        assert body["error"]["message"] == ("globex-auditor is scoped to other tenants and may not read "
                                            "tenant acme-finance")
    status, body = host.request("GET", f"/api/tenants/globex/backups?code={code}")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    # A backup id of another tenant is not found under this tenant: ids never cross tenants.
    status, _ = host.request("GET", f"/api/tenants/globex/backups/{other}?code={code}",
                             headers={"X-Continuity-Key": globex_key})
    assert status == 404
