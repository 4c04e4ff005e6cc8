"""The control database (catalog, evidence index): connection and schema migrations.

Migrations are numbered and append-only: never edit one that has shipped, add the next number.
:func:`migrate` runs at start, under an advisory lock so that concurrent workers apply each
migration exactly once, and records what it applied in ``catalog.schema_migrations``.
"""

from __future__ import annotations

import logging

from continuity.adapters.postgres.connection import connect, control_dsn, ensure_database
from continuity.kernel import settings
from continuity.kernel.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEMA = "catalog"
# pg_advisory_xact_lock key for migrations: an arbitrary constant ("cont" "migr" in ASCII).
MIGRATION_LOCK = 0x636F6E74_6D696772

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "backups, validations, rejections, processed events, retention actions", """
create table catalog.backups (
    tenant            text        not null,
    backup_id         text        not null,
    kind              text        not null default 'full',
    status            text        not null check (status in ('pending', 'available', 'validated',
                                     'failed_validation', 'rejected', 'missing', 'deleted')),
    status_reason     text        not null default '',
    container         text        not null,
    prefix            text        not null,
    created_at        timestamptz not null,
    completed_at      timestamptz,
    dump_size         bigint,
    dump_sha256       text,
    manifest          jsonb,
    manifest_sha256   text,
    source_server     text,
    source_region     text,
    source_database   text,
    pg_version        text,
    storage_tier      text,
    immutable_until   timestamptz,
    legal_hold        boolean     not null default false,
    last_validation   jsonb,
    first_seen_at     timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    primary key (tenant, backup_id)
);
-- The tenant query: newest first with keyset pagination on (created_at, backup_id), with or
-- without a status filter; both scanned backwards.
create index backups_tenant_created on catalog.backups (tenant, created_at, backup_id);
create index backups_tenant_status_created on catalog.backups (tenant, status, created_at, backup_id);
-- The all-tenants listing (CLI) and reconcile's "what should be in storage".
create index backups_created on catalog.backups (created_at, backup_id, tenant);

create table catalog.validations (
    id            bigserial   primary key,
    tenant        text        not null,
    backup_id     text        not null,
    run_id        text        not null,
    started_at    timestamptz not null,
    finished_at   timestamptz,
    outcome       text        not null check (outcome in ('running', 'passed', 'failed', 'error')),
    checks        jsonb       not null default '[]'::jsonb,
    durations     jsonb       not null default '{}'::jsonb,
    unique (run_id, tenant, backup_id),
    foreign key (tenant, backup_id) references catalog.backups (tenant, backup_id)
);
create index validations_backup on catalog.validations (tenant, backup_id, started_at desc);

create table catalog.rejections (
    id            bigserial   primary key,
    container     text        not null,
    blob          text        not null,
    etag          text        not null default '',
    tenant        text,
    backup_id     text,
    code          text        not null,
    reason        text        not null,
    event_id      text,
    rejected_at   timestamptz not null default now(),
    unique (container, blob, etag, code)
);
create index rejections_backup on catalog.rejections (tenant, backup_id);
create index rejections_at on catalog.rejections (rejected_at desc);

create table catalog.processed_events (
    event_id      text        primary key,
    processed_at  timestamptz not null default now(),
    outcome       text        not null
);

create table catalog.retention_actions (
    id            bigserial   primary key,
    run_id        text        not null,
    tenant        text        not null,
    backup_id     text        not null,
    action        text        not null,
    reason        text        not null,
    planned_at    timestamptz not null,
    applied_at    timestamptz,
    unique (run_id, tenant, backup_id, action)
);
create index retention_actions_backup on catalog.retention_actions (tenant, backup_id);
"""),
    (2, "evidence index and chain head", """
create table catalog.evidence_head (
    id    int    primary key check (id = 1),
    seq   bigint not null,
    hash  text   not null
);
insert into catalog.evidence_head (id, seq, hash) values (1, 0, repeat('0', 64));

create table catalog.evidence_records (
    seq              bigint      primary key,
    prev_hash        text        not null,
    hash             text        not null unique,
    at               timestamptz not null,
    actor            text        not null,
    action           text        not null,
    subject          text        not null,
    blob_name        text        not null,
    record           text        not null,
    idempotency_key  text        unique
);
create index evidence_records_subject on catalog.evidence_records (subject, seq);
create index evidence_records_action on catalog.evidence_records (action, seq);
"""),
    (3, "legal holds, retention runs, retention action outcomes", """
create table catalog.legal_holds (
    id            bigserial   primary key,
    tenant        text        not null,
    backup_id     text,
    reason        text        not null,
    set_by        text        not null,
    set_at        timestamptz not null default now(),
    cleared_by    text,
    cleared_at    timestamptz,
    clear_reason  text
);
-- At most one active hold per tenant (backup_id null) and per backup.
create unique index legal_holds_active on catalog.legal_holds (tenant, coalesce(backup_id, ''))
    where cleared_at is null;

create table catalog.retention_runs (
    run_id        text        primary key,
    as_of         timestamptz not null,
    requested_by  text        not null,
    state         text        not null check (state in ('running', 'completed', 'failed')),
    started_at    timestamptz not null default now(),
    finished_at   timestamptz,
    lease_until   timestamptz,
    plan          jsonb,
    plan_sha256   text,
    summary       jsonb       not null default '{}'::jsonb
);
-- One apply at a time: a second running row is refused by the database too.
create unique index retention_runs_one_running on catalog.retention_runs ((true)) where state = 'running';

alter table catalog.retention_actions
    add column status   text,
    add column detail   text not null default '',
    add column target   text,
    add column batch    int,
    add column attempts int  not null default 0;
"""),
    (4, "unverified backups: a validation attempt that errored", """
alter table catalog.backups drop constraint backups_status_check;
alter table catalog.backups add constraint backups_status_check check (status in ('pending', 'available',
    'validated', 'failed_validation', 'unverified', 'rejected', 'missing', 'deleted'));
"""),
    (5, "the WAL archive of each server we run: base backups and the recovery window, as storage last showed", """
create table catalog.archive_windows (
    server         text primary key,
    archive_name   text not null,
    earliest       timestamptz,
    latest         timestamptz,
    newest_segment text,
    gap            text,
    segments       int not null default 0,
    base_backups   jsonb not null default '[]'::jsonb,
    refreshed_at   timestamptz not null
);
"""),
)


def latest_version() -> int:
    return MIGRATIONS[-1][0]


def migrate(dsn: str) -> list[int]:
    """Apply the migrations this database lacks, in order, each in its own transaction.

    :returns: the versions applied now (empty when up to date).
    :raises ConfigError: the database is newer than this code (a rollback of the app, not of the schema).
    """
    applied: list[int] = []
    with connect(dsn) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(f"create schema if not exists {SCHEMA}")
        conn.execute(f"""create table if not exists {SCHEMA}.schema_migrations (
                version int primary key, name text not null, applied_at timestamptz not null default now())""")
        done = {row[0] for row in conn.execute(f"select version from {SCHEMA}.schema_migrations")}
        unknown = sorted(v for v in done if v > latest_version())
        if unknown:
            raise ConfigError(f"control database has schema version {unknown[-1]} but this code knows up to "
                              f"{latest_version()}: deploy the newer code instead of rolling back")
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            with conn.transaction():
                conn.execute(sql)
                conn.execute(f"insert into {SCHEMA}.schema_migrations (version, name) values (%s, %s)",
                             (version, name))
            applied.append(version)
            logger.info("control database migrated", extra={"version": version, "migration": name})
    return applied


def prepare(dsn: str | None = None) -> str:
    """The control database's DSN, created (on the local stack) and migrated; call once at start."""
    if dsn is None:
        dsn = control_dsn()
        if not settings.get("CONTINUITY_CONTROL_DSN"):
            from continuity.adapters.local.local_stack import LocalStack

            ensure_database(LocalStack().dsn("control"), "continuity")
    migrate(dsn)
    return dsn
