"""Connections to the PostgreSQL servers of the registry and the local stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from continuity.kernel.errors import DatabaseMissing, ServerUnavailable
from continuity.kernel.tenants import Server, ServerKind


def server_dsn(server: Server, dbname: str = "postgres") -> str:
    """libpq connection string for a registry server; passwords come from a passfile or the secret source."""
    if server.kind is ServerKind.LOCAL_CLUSTER:
        from continuity.adapters.local.local_stack import LocalStack

        assert server.cluster is not None
        return LocalStack().dsn(server.cluster, dbname)
    user = os.environ.get("CONTINUITY_PG_SUPERUSER", "continuity")
    return f"host={server.host} port={server.port} user={user} dbname={dbname} sslmode=require connect_timeout=10"


def control_dsn(dbname: str = "continuity") -> str:
    """The control database (catalog, evidence index, task hub)."""
    explicit = os.environ.get("CONTINUITY_CONTROL_DSN", "")
    if explicit:
        return explicit
    from continuity.adapters.local.local_stack import LocalStack

    return LocalStack().dsn("control", dbname)


def libpq_env() -> dict[str, str]:
    """Environment for pg_dump/pg_restore: the local passfile, C locale, UTC, no inherited PG* surprises.

    UTC because a custom-format archive stores its creation time as local wall-clock fields without a zone:
    pg_dump and pg_restore both in UTC make ``Archive created at`` a UTC time the identity check can compare.
    """
    from continuity.adapters.local.local_stack import LocalStack

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") or k == "PG_BIN"}
    env.update({"PGPASSFILE": str(LocalStack().pgpass), "LC_ALL": "C", "TZ": "UTC"})
    return env


@contextmanager
def connect(dsn: str, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    """A connection, with connection failures turned into actionable errors.

    :raises DatabaseMissing: the database does not exist on the server.
    :raises ServerUnavailable: the server cannot be reached.
    """
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        if "does not exist" in message and "database" in message:
            raise DatabaseMissing(f"{message}; create it or fix the tenant's database in the registry") from exc
        raise ServerUnavailable(f"cannot connect to PostgreSQL: {message}; is the server up "
                                "(`continuity local status`)?") from exc
    try:
        yield conn
    finally:
        conn.close()


def ensure_database(admin_dsn: str, dbname: str) -> bool:
    """Create ``dbname`` if missing; returns whether it was created."""
    with connect(admin_dsn) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(dbname)))
        return True
