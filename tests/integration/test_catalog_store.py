"""The catalog tables against a real control database: migrations, queries, pagination, plans."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.catalog_store import PgCatalogStore
from continuity.adapters.postgres.connection import connect, ensure_database
from continuity.adapters.postgres.control_db import MIGRATIONS, migrate
from continuity.catalog.model import BackupStatus, CatalogEntry, InvalidTransition
from continuity.kernel.errors import BackupNotFound, ConfigError, InvalidRequest

pytestmark = pytest.mark.stack
S = BackupStatus
T0 = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def dsn(stack: LocalStack) -> Iterator[str]:
    dbname = f"cat_{uuid.uuid4().hex[:10]}"
    ensure_database(stack.dsn("control"), dbname)
    dsn = stack.dsn("control", dbname)
    migrate(dsn)
    yield dsn
    with connect(stack.dsn("control")) as conn:
        conn.execute(f"drop database if exists {dbname} with (force)")


def make_entry(tenant: str = "acme-finance", n: int = 0, status: BackupStatus = S.AVAILABLE,
               at: datetime | None = None) -> CatalogEntry:
    at = at or T0 + timedelta(days=n)
    backup_id = f"{at:%Y%m%dT%H%M%SZ}-{n:06x}"
    return CatalogEntry(tenant=tenant, backup_id=backup_id, status=status, created_at=at, container="backups",
                        prefix=f"{tenant}/{at:%Y/%m/%d}/{backup_id}/", dump_size=100 + n, dump_sha256="a" * 64,
                        manifest={"backup_id": backup_id}, manifest_sha256="b" * 64, source_server="weu-primary",
                        source_region="westeurope", source_database="odoo", pg_version="16.4", storage_tier="Hot")


def put(store: PgCatalogStore, *entries: CatalogEntry) -> None:
    with store.session() as session:
        for e in entries:
            session.upsert_entry(e)


def test_migrations_are_recorded_and_running_them_again_is_a_no_op(dsn: str) -> None:
    assert migrate(dsn) == []
    with connect(dsn) as conn:
        versions = [r[0] for r in conn.execute("select version from catalog.schema_migrations order by version")]
    assert versions == [m[0] for m in MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))  # numbered, append-only


def test_migrate_refuses_a_database_newer_than_the_code(dsn: str) -> None:
    with connect(dsn) as conn:
        conn.execute("insert into catalog.schema_migrations (version, name) values (999, 'from the future')")
    with pytest.raises(ConfigError, match="schema version 999 but this code knows up to"):
        migrate(dsn)


def test_get_backup_returns_the_entry(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    e = make_entry()
    put(store, e)
    got = store.get_backup(e.tenant, e.backup_id)
    assert got.storage_view() == e.storage_view()
    assert got.first_seen_at is not None


def test_backup_of_another_tenant_is_not_found_for_this_tenant(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    e = make_entry(tenant="globex")
    put(store, e)
    with pytest.raises(BackupNotFound, match="tenant acme-finance has no backup"):
        store.get_backup("acme-finance", e.backup_id)


def test_list_backups_is_newest_first_and_empty_for_a_tenant_without_backups(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    put(store, *(make_entry(n=n) for n in range(5)), make_entry(tenant="globex", n=9))
    items, cursor = store.list_backups("acme-finance")
    assert [e.dump_size for e in items] == [104, 103, 102, 101, 100]
    assert cursor is None
    assert store.list_backups("initech") == ([], None)


def test_keyset_pagination_returns_every_backup_once(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    same_instant = [make_entry(n=100 + i, at=T0) for i in range(4)]  # ties on created_at
    put(store, *(make_entry(n=n) for n in range(23)), *same_instant)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        items, cursor = store.list_backups("acme-finance", limit=5, cursor=cursor)
        seen += [e.backup_id for e in items]
        pages += 1
        if cursor is None:
            break
    assert pages == 6
    assert len(seen) == len(set(seen)) == 27
    full, _ = store.list_backups("acme-finance", limit=100)
    assert seen == [e.backup_id for e in full]


def test_all_tenant_listing_paginates_across_tenants(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    put(store, *(make_entry(tenant=t, n=n) for t in ("acme-finance", "globex") for n in range(3)))
    first, cursor = store.list_backups(limit=4)
    rest, end = store.list_backups(limit=4, cursor=cursor)
    assert end is None
    assert len({(e.tenant, e.backup_id) for e in first + rest}) == 6


def test_list_filters_by_status_kind_and_time_window(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    put(store, *(make_entry(n=n, status=S.VALIDATED if n % 2 else S.AVAILABLE) for n in range(10)))
    validated, _ = store.list_backups("acme-finance", status=S.VALIDATED)
    assert {e.status for e in validated} == {S.VALIDATED} and len(validated) == 5
    window, _ = store.list_backups("acme-finance", since=T0 + timedelta(days=2), before=T0 + timedelta(days=5))
    assert [e.created_at.day for e in window] == [5, 4, 3]
    assert store.list_backups("acme-finance", kind="incremental") == ([], None)


def test_list_refuses_bad_limit_naive_datetime_and_foreign_cursor(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    with pytest.raises(InvalidRequest, match="limit must be between 1 and 1000"):
        store.list_backups("acme-finance", limit=0)
    with pytest.raises(InvalidRequest, match="since must carry a timezone"):
        store.list_backups("acme-finance", since=datetime(2025, 1, 1))
    with pytest.raises(InvalidRequest, match="cursor is not one this API issued"):
        store.list_backups("acme-finance", cursor="not-a-cursor")


def test_record_validation_moves_status_and_is_idempotent_per_run(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    e = make_entry()
    put(store, e)
    kwargs = dict(tenant=e.tenant, backup_id=e.backup_id, run_id="validate-acme-1", started_at=T0,
                  finished_at=T0 + timedelta(minutes=3), passed=True, checks=[{"id": "row_counts", "status": "pass"}],
                  durations={"restore": 120.5}, summary={"outcome": "passed", "run_id": "validate-acme-1"})
    store.record_validation(**kwargs)  # type: ignore[arg-type]
    updated = store.record_validation(**kwargs)  # type: ignore[arg-type]
    assert updated.status is S.VALIDATED
    assert updated.last_validation == {"outcome": "passed", "run_id": "validate-acme-1"}
    with connect(dsn) as conn:
        assert conn.execute("select count(*) from catalog.validations").fetchone() == (1,)


def test_set_status_refuses_a_transition_the_table_forbids(dsn: str) -> None:
    store = PgCatalogStore(dsn)
    e = make_entry(status=S.PENDING)
    put(store, e)
    with pytest.raises(InvalidTransition, match="status pending cannot become validated"):
        store.set_status(e.tenant, e.backup_id, S.VALIDATED, "nope")
    assert store.set_status(e.tenant, e.backup_id, S.REJECTED, "bad").status is S.REJECTED
    with pytest.raises(BackupNotFound):
        store.set_status(e.tenant, "20250101T000000Z-ffffff", S.MISSING, "gone")


def _plan(dsn: str, sql: str, params: tuple[object, ...]) -> str:
    with connect(dsn) as conn:
        conn.execute("set plan_cache_mode = force_custom_plan")
        rows = conn.execute("explain (format json) " + sql, params).fetchone()
    return json.dumps(rows[0])  # type: ignore[index]


def test_tenant_queries_use_their_indexes_not_a_table_scan(dsn: str) -> None:
    with connect(dsn) as conn:
        conn.execute("""
            insert into catalog.backups (tenant, backup_id, status, container, prefix, created_at)
            select 't' || (g % 500), to_char(ts, 'YYYYMMDD"T"HH24MISS"Z"') || '-' || lpad(to_hex(g), 6, '0'),
                   (array['available','validated','failed_validation','deleted'])[1 + (g / 500) % 4],
                   'backups', 'p/', ts
            from generate_series(1, 100000) g, lateral (select timestamptz '2024-01-01' + g * interval '5 min') t(ts)
        """)
        conn.execute("analyze catalog.backups")
    store_sql = ("select * from catalog.backups where tenant = %s and (created_at, backup_id) < (%s, %s) "
                 "order by created_at desc, backup_id desc limit 51")
    plan = _plan(dsn, store_sql, ("t7", T0, "20250101T000000Z-000000"))
    assert "backups_tenant_created" in plan and '"Sort"' not in plan
    status_sql = ("select * from catalog.backups where tenant = %s and status = %s "
                  "order by created_at desc, backup_id desc limit 51")
    plan = _plan(dsn, status_sql, ("t7", "validated"))
    # Few rows per (tenant, status) here, so the planner may sort them after the index lookup: fine,
    # as long as it never scans the table.
    assert "backups_tenant_status_created" in plan and "Seq Scan" not in plan
