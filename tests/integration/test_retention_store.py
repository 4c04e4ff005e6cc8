"""The retention applier against real Azurite: Blob Batch tiering and deletes, honest immutability."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import ContainerClient

from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.retention_store import BATCH_LIMIT, OutcomeStatus, RetentionStore, backup_blob_names
from continuity.kernel.tenants import RetentionPolicy, StorageTier
from continuity.retention.planner import (
    Delete,
    Holds,
    Keep,
    RetentionCandidate,
    SetImmutability,
    SetTier,
    plan_retention,
)

pytestmark = pytest.mark.stack

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@pytest.fixture
def container(blob_store: BlobStore) -> Iterator[ContainerClient]:
    name = f"retention-{uuid.uuid4().hex[:12]}"
    client = blob_store.container(name)
    client.create_container()
    yield client
    client.delete_container()


def upload_backup(container: ContainerClient, backup_id: str, created_at: datetime,
                  tenant: str = "acme-finance") -> list[str]:
    names = backup_blob_names(Keep(tenant=tenant, backup_id=backup_id, created_at=created_at, reason="kept"))
    for name in names:
        container.upload_blob(name, b"{}" if name.endswith(".json") else b"PGDMP", overwrite=True)
    return names


def tier_of(container: ContainerClient, name: str) -> str:
    return str(container.get_blob_client(name).get_blob_properties().blob_tier)


def set_tier(backup_id: str, to: StorageTier, created_at: datetime = NOW) -> SetTier:
    return SetTier(tenant="acme-finance", backup_id=backup_id, created_at=created_at, to=to,
                   reason=f"tier {to.value}: test")


def test_batch_sets_cool_cold_and_archive_tiers_and_the_store_reads_them_back(container: ContainerClient) -> None:
    created = NOW - timedelta(days=200)
    names = {bid: upload_backup(container, bid, created) for bid in ("b-cool", "b-cold", "b-archive")}
    store = RetentionStore(container)
    outcomes = store.apply([set_tier("b-cool", StorageTier.COOL, created),
                            set_tier("b-cold", StorageTier.COLD, created),
                            set_tier("b-archive", StorageTier.ARCHIVE, created)])
    assert [o.status for o in outcomes] == [OutcomeStatus.APPLIED] * 3
    assert outcomes[2].detail == "tier archive set on 2 blob(s)"
    assert store.batches_sent == 1
    for bid, expected in (("b-cool", "Cool"), ("b-cold", "Cold"), ("b-archive", "Archive")):
        assert {tier_of(container, n) for n in names[bid]} == {expected}


def test_batch_delete_removes_backup_and_counts_already_gone_blobs_as_done(container: ContainerClient) -> None:
    whole = upload_backup(container, "whole", NOW)
    half = upload_backup(container, "half", NOW)
    container.delete_blob(half[1])  # an earlier run stopped after deleting the dump
    actions = [Delete(tenant="acme-finance", backup_id=b, created_at=NOW, reason="deleted: outside every keep rule")
               for b in ("whole", "half")]
    outcomes = RetentionStore(container).apply(actions)
    assert [(o.status, o.detail) for o in outcomes] == [
        (OutcomeStatus.APPLIED, "deleted 2 blob(s)"), (OutcomeStatus.APPLIED, "deleted 1 blob(s), 1 already gone")]
    assert [b.status_code for b in outcomes[1].blobs] == [202, 404]
    assert not list(container.list_blobs())
    again = RetentionStore(container).apply(actions)
    assert {o.status for o in again} == {OutcomeStatus.APPLIED}
    assert again[0].detail == "deleted 0 blob(s), 2 already gone"
    assert whole  # uploaded, then deleted above


def test_apply_splits_more_than_256_subrequests_into_batches(container: ContainerClient) -> None:
    backup_ids = [f"b{i:03d}" for i in range(150)]  # 300 blobs
    for bid in backup_ids:
        upload_backup(container, bid, NOW)
    store = RetentionStore(container)
    outcomes = store.apply([set_tier(bid, StorageTier.COOL) for bid in backup_ids])
    assert store.batches_sent == 2  # 256 + 44 sub-requests
    assert {o.status for o in outcomes} == {OutcomeStatus.APPLIED}
    assert {str(b.blob_tier) for b in container.list_blobs()} == {"Cool"}


def test_tier_change_of_a_missing_backup_is_refused_with_the_store_code(container: ContainerClient) -> None:
    upload_backup(container, "present", NOW)
    outcomes = RetentionStore(container).apply([set_tier("present", StorageTier.COOL),
                                                set_tier("absent", StorageTier.COOL)])
    assert outcomes[0].status is OutcomeStatus.APPLIED
    assert outcomes[1].status is OutcomeStatus.REFUSED
    assert {b.error_code for b in outcomes[1].blobs} == {"BlobNotFound"}
    assert outcomes[1].detail.startswith("store refused SET_TIER of acme-finance/")
    assert "404 BlobNotFound" in outcomes[1].detail


def test_immutability_on_azurite_is_reported_not_enforced_never_as_a_lock(container: ContainerClient) -> None:
    names = upload_backup(container, "b1", NOW)
    upload_backup(container, "b2", NOW)
    store = RetentionStore(container)
    actions = [SetImmutability(tenant="acme-finance", backup_id=b, created_at=NOW, until=NOW + timedelta(days=7),
                               reason="immutable until: test") for b in ("b1", "b2")]
    outcomes = store.apply(actions)
    assert [o.status for o in outcomes] == [OutcomeStatus.NOT_ENFORCED] * 2
    assert outcomes[0].detail == "not enforced by this store: the store answered 501 APINotImplemented"
    assert outcomes[0].blobs[0].status_code == 501
    # After the first answer the store is known not to enforce locks: no further calls are made.
    assert outcomes[1].blobs[0].status_code is None
    assert store.enforces_immutability is False
    locks = list(store.read_locks(names))
    assert [(lock.immutable_until, lock.legal_hold, lock.enforced) for lock in locks] == [(None, False, False)] * 2


def test_legal_hold_on_azurite_is_reported_not_enforced(container: ContainerClient) -> None:
    names = upload_backup(container, "b1", NOW)
    outcome = RetentionStore(container).set_legal_hold(names, True)
    assert outcome.status is OutcomeStatus.NOT_ENFORCED
    assert outcome.detail == "not enforced by this store: the store answered 501 APINotImplemented"


def test_keep_actions_do_not_touch_storage(container: ContainerClient) -> None:
    names = upload_backup(container, "b1", NOW)
    before = [container.get_blob_client(n).get_blob_properties().etag for n in names]
    store = RetentionStore(container)
    outcomes = store.apply([Keep(tenant="acme-finance", backup_id="b1", created_at=NOW, reason="kept: test")])
    assert outcomes[0].status is OutcomeStatus.NOTHING_TO_DO
    assert store.batches_sent == 0
    assert [container.get_blob_client(n).get_blob_properties().etag for n in names] == before


def test_plan_applied_to_azurite_leaves_only_the_kept_backups(container: ContainerClient) -> None:
    policy = RetentionPolicy(daily=3, weekly=0, monthly=0, yearly=0, cool_after_days=2, cold_after_days=4,
                             archive_after_days=6, immutable_days=1, min_copies=2, validate_before_archive=True)
    candidates = []
    for day in range(8):
        created = NOW - timedelta(days=day, hours=1)
        upload_backup(container, f"d{day}", created)
        candidates.append(RetentionCandidate("acme-finance", f"d{day}", created, "VALIDATED"))
    plan = plan_retention(candidates, {"acme-finance": policy}, Holds(), NOW)
    outcomes = RetentionStore(container).apply(plan.changes)
    by_kind = {(o.action.kind.value, o.action.backup_id): o.status for o in outcomes}
    assert by_kind[("SET_IMMUTABILITY", "d0")] is OutcomeStatus.NOT_ENFORCED
    assert {s for (k, _), s in by_kind.items() if k != "SET_IMMUTABILITY"} == {OutcomeStatus.APPLIED}
    remaining = sorted({b.name.split("/")[4] for b in container.list_blobs()})
    assert remaining == ["d0", "d1", "d2"]
    tiers = {b.name.split("/")[4]: str(b.blob_tier) for b in container.list_blobs()}
    assert tiers == {"d0": "Hot", "d1": "Hot", "d2": "Cool"}


def test_unreachable_store_fails_the_batch_in_flight_and_leaves_the_rest_not_attempted() -> None:
    # A port nobody listens on (this test stack's base + 98): the connection is refused.
    from tests.conftest import PORT_BASE

    dead = ContainerClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + _azurite_key()
        + f";BlobEndpoint=http://127.0.0.1:{PORT_BASE + 98}/devstoreaccount1;", "backups",
        retry_total=0, connection_timeout=2)
    actions = [set_tier(f"b{i}", StorageTier.COOL) for i in range(200)]  # 400 blobs: two batches
    outcomes = RetentionStore(dead, batch_concurrency=1).apply(actions)
    statuses = [o.status for o in outcomes]
    assert statuses[:128] == [OutcomeStatus.FAILED] * 128  # the first batch: 256 blobs
    assert statuses[128:] == [OutcomeStatus.NOT_ATTEMPTED] * 72
    assert outcomes[-1].detail.startswith("not attempted: store unreachable during a SET_TIER batch")


def _azurite_key() -> str:
    from continuity.kernel.settings import AZURITE_KEY

    return AZURITE_KEY


def test_applier_refuses_a_batch_size_above_the_blob_batch_limit() -> None:
    with pytest.raises(ValueError, match="batch_size must be between 1 and 256"):
        RetentionStore(ContainerClient("http://127.0.0.1:1/devstoreaccount1", "backups"), batch_size=BATCH_LIMIT + 1)


def test_applier_refuses_a_batch_concurrency_outside_1_to_16() -> None:
    with pytest.raises(ValueError, match="batch_concurrency must be between 1 and 16"):
        RetentionStore(ContainerClient("http://127.0.0.1:1/devstoreaccount1", "backups"), batch_concurrency=0)


def test_concurrent_batches_tier_every_blob_and_report_every_action(container: ContainerClient) -> None:
    backup_ids = [f"b{i:03d}" for i in range(400)]  # 800 blobs: 4 batches in one wave
    for bid in backup_ids:
        upload_backup(container, bid, NOW)
    store = RetentionStore(container, batch_concurrency=4)
    outcomes = store.apply([set_tier(bid, StorageTier.COLD) for bid in backup_ids])
    assert store.batches_sent == 4
    assert [o.action.backup_id for o in outcomes] == backup_ids
    assert {o.status for o in outcomes} == {OutcomeStatus.APPLIED}
    assert {str(b.blob_tier) for b in container.list_blobs()} == {"Cold"}
