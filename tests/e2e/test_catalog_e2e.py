"""The catalog and incident workflows end to end: function_app.py on the devhost, real Azurite and PostgreSQL.

Events arrive the way Azure delivers them: the devhost's blob watcher (BlobCreated for new blobs) or
POSTs to ``/runtime/webhooks/eventgrid?functionName=...``. The devhost runs with a test registry that
adds tenants no other test touches (``bulk-*``, ``ghost`` whose database does not exist).
"""

from __future__ import annotations

import http.client
import json
import random
import time
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
from continuity.adapters.postgres.control_db import prepare
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.catalog.model import BackupStatus
from devhost import process
from tests.unit.test_catalog import make_manifest

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

ROOT = Path(__file__).resolve().parents[2]
BULK_TENANTS = ("bulk-a", "bulk-b")


class Host:
    def __init__(self, stack: LocalStack) -> None:
        self.port = stack.settings.devhost_port
        self.keys_path = stack.base / "devhost" / "keys.json"

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


def _restart(env: dict[str, str] | None) -> None:
    process.stop()
    process.start("function_app:app", env=env or {}, timeout=60)


@pytest.fixture(scope="module")
def host(stack: LocalStack, blob_store: BlobStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
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
    _restart(env)
    yield Host(stack)
    _restart(None)


def _put_backup(blobs: BlobStore, tenant: str, created: datetime) -> tuple[str, dict[str, Any]]:
    """A small synthetic backup (valid manifest, matching checksum); returns its id and both blobs' facts."""
    backup_id = f"{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    prefix = f"{tenant}/{created:%Y/%m/%d}/{backup_id}/"
    dump = b"PGDMP" + uuid.uuid4().bytes * 64
    parts = {}
    for name, data in (("db.dump", dump), ("manifest.json", json.dumps(make_manifest(tenant, backup_id, dump=dump))
                                            .encode())):
        result = blobs.container("backups").get_blob_client(prefix + name).upload_blob(data, overwrite=True)
        parts[prefix + name] = {"etag": result["etag"], "size": len(data)}
    return backup_id, parts


def _blob_created(blob: str, etag: str, size: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
        "subject": f"/blobServices/default/containers/backups/blobs/{blob}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": datetime.now(UTC).isoformat(),
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {"api": "PutBlob", "url": f"http://127.0.0.1/devstoreaccount1/backups/{blob}", "eTag": etag,
                 "contentLength": size, "contentType": "application/octet-stream", "blobType": "BlockBlob",
                 "sequencer": "0" * 32},
    }


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout}s")


def _catalog(tenant: str) -> list[Any]:
    items, cursor = PgCatalogStore(prepare()).list_backups(tenant=tenant, limit=500)
    assert cursor is None
    return items


def test_a_real_backup_appears_in_the_catalog_through_blob_created_within_seconds(host: Host) -> None:
    from continuity.adapters.postgres.demo_seed import seed_tenant
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.kernel.settings import configured_registry

    registry = configured_registry()
    seed_tenant(registry, registry.get_tenant("globex"), 1)
    stored = take_backup(registry, "globex")
    started = time.monotonic()
    entry = _wait(lambda: next((e for e in _catalog("globex") if e.backup_id == stored.backup_id
                                and e.status is BackupStatus.AVAILABLE), None), 30, "the backup in the catalog")
    assert entry.dump_sha256 == stored.sha256
    assert time.monotonic() - started < 30
    published = _wait(lambda: [e for e in host.events_log() if e.get("source") == "topic"
                               and e["event"].get("type") == "continuity.backup.cataloged"
                               and e["event"]["data"].get("backup_id") == stored.backup_id], 30,
                      "continuity.backup.cataloged published")
    assert published[0]["event"]["data"]["evidence_chain_head"]["seq"] >= 1


def test_a_thousand_deliveries_with_duplicates_in_shuffled_order_give_exactly_the_right_catalog(
        host: Host, blob_store: BlobStore) -> None:
    # Pause the blob watcher's events from mattering: every blob here is also delivered by us, and the
    # orchestration instance id (blob + etag) makes the watcher's copy one more duplicate.
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
        return all({e.backup_id for e in _catalog(t) if e.status is BackupStatus.AVAILABLE} == expected[t]
                   for t in BULK_TENANTS)

    _wait(settled, 240, "all 350 backups available")
    for tenant in BULK_TENANTS:
        entries = _catalog(tenant)
        assert len(entries) == len(expected[tenant])
        assert {e.status for e in entries} == {BackupStatus.AVAILABLE}
    evidence = EvidenceStore(prepare(), blob_store).records(limit=100000)
    ingested = [r.subject for r in evidence if r.action == "catalog.ingested" and r.subject.startswith("backup bulk-")]
    assert len(ingested) == len(set(ingested)) == 350


@pytest.mark.parametrize("event, reason", [
    ({"eventType": "Microsoft.Storage.BlobCreated", "subject": "/blobServices/default/containers/other/blobs/x",
      "data": {"url": "u", "eTag": "e"}}, "not a Microsoft.Storage.BlobCreated event for container 'backups'"),
    ({"eventType": "Microsoft.Storage.BlobDeleted",
      "subject": "/blobServices/default/containers/backups/blobs/globex/x"}, "type 'Microsoft.Storage.BlobDeleted'"),
    ({"eventType": "Microsoft.Storage.BlobCreated",
      "subject": "/blobServices/default/containers/backups/blobs/globex/2026/01/01/x/db.dump",
      "data": {"url": 42}}, "malformed BlobCreated data"),
])
def test_malformed_blob_created_events_are_recorded_as_rejected_and_nothing_is_cataloged(
        host: Host, blob_store: BlobStore, event: dict[str, Any], reason: str) -> None:
    before = len(_catalog("globex"))
    full = {"id": str(uuid.uuid4()), "eventTime": datetime.now(UTC).isoformat(), "dataVersion": "1",
            "metadataVersion": "1", "topic": "t", "data": {}, **event}
    assert host.deliver("catalog_blob_created", [full]) in (200, 202)
    rejections = _wait(lambda: [r for r in PgCatalogStore(prepare()).rejections()
                                if r.get("event_id") == full["id"]], 20, "the rejection recorded")
    assert reason in rejections[0]["reason"]
    assert len(_catalog("globex")) == before
    assert host.request("GET", "/api/health")[0] == 200


def test_backup_failure_beyond_rpo_retries_and_publishes_rpo_breached_when_the_retry_fails(
        host: Host, blob_store: BlobStore) -> None:
    # ghost's newest good backup is two hours old (gold tier: RPO 15 min) and its database does not exist,
    # so every on-demand retry fails.
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    backup_id, parts = _put_backup(blob_store, "ghost", old)
    host.deliver("catalog_blob_created", [_blob_created(n, f["etag"], f["size"]) for n, f in parts.items()])
    _wait(lambda: [e for e in _catalog("ghost") if e.status is BackupStatus.AVAILABLE], 30, "ghost's old backup")

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

    events = _wait(breached, 120, "continuity.rpo.breached")
    stages = sorted(e["event"]["data"]["stage"] for e in events)
    assert stages == ["detected", "escalated"]
    escalated = next(e["event"]["data"] for e in events if e["event"]["data"]["stage"] == "escalated")
    assert escalated["tenant"] == "ghost"
    assert escalated["exposure"]["level"] == "BREACHED"
    assert escalated["evidence_chain_head"]["seq"] >= 1
    records = [r for r in EvidenceStore(prepare(), blob_store).records(limit=100000)
               if r.subject == f"incident/{event_id}"]
    assert [r.action for r in records] == ["incident.backup_failed", "incident.rpo_breached",
                                           "incident.rpo_breached", "incident.breached"]
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
    records = _wait(lambda: [r for r in EvidenceStore(prepare(), blob_store).records(limit=100000)
                             if r.subject == f"incident/{event_id}"], 20, "the rejection in evidence")
    assert records[0].action == "incident.event_rejected"
    assert "unknown tenant nobody" in records[0].data["reason"]
    status, _ = host.request("GET", f"/runtime/webhooks/durabletask/instances/incident-{event_id}"
                                    f"?code={host.keys['masterKey']}")
    assert status == 404


def test_a_caller_scoped_to_one_tenant_cannot_see_another_tenants_backups(host: Host, stack: LocalStack) -> None:
    from continuity.adapters.local.identity_store import IdentityStore
    from continuity.kernel.identity import Role

    identities = IdentityStore(stack.base)
    globex_key = identities.add_user("globex-auditor", [Role.READER], replace=True, save_key=False,
                                     tenants=["globex"])
    code = host.keys["functionKey"]
    own = _catalog("globex")
    assert own, "the first test of this module catalogs a globex backup"

    status, page = host.request("GET", f"/api/tenants/globex/backups?code={code}&limit=5",
                                headers={"X-Continuity-Key": globex_key})
    assert status == 200
    assert {i["tenant"] for i in page["items"]} == {"globex"}
    status, one = host.request("GET", f"/api/tenants/globex/backups/{own[0].backup_id}?code={code}",
                               headers={"X-Continuity-Key": globex_key})
    assert status == 200 and one["backup_id"] == own[0].backup_id

    for path in ("/api/tenants/acme-finance/backups", f"/api/tenants/acme-finance/backups/{own[0].backup_id}"):
        status, body = host.request("GET", f"{path}?code={code}", headers={"X-Continuity-Key": globex_key})
        assert status == 403
        assert body["error"]["message"] == ("globex-auditor is scoped to other tenants and may not read "
                                            "tenant acme-finance")
    status, body = host.request("GET", f"/api/tenants/globex/backups?code={code}")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    # A backup id of another tenant is not found under this tenant: ids never cross tenants.
    other = _catalog("bulk-a")
    assert other, "the bulk test of this module catalogs bulk-a backups"
    status, _ = host.request("GET", f"/api/tenants/globex/backups/{other[0].backup_id}?code={code}",
                             headers={"X-Continuity-Key": globex_key})
    assert status == 404
