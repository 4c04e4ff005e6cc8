"""The isolated restore target: scratch databases on the sandbox server, and the guard that keeps it isolated.

Before anything is restored, :meth:`Sandbox.verify_isolated` proves the target is not a production
server of the tenant registry (same host and port, same unix socket port, or the same PostgreSQL
system identifier, which a streaming replica shares with its primary) and that it accepts no TCP
connections; otherwise it raises :class:`SandboxNotIsolated` naming what to change. Scratch databases
are named ``scratch_{tenant_}_{yyyymmddHHMMSS}_{rand}`` so that a sweeper can drop the ones a crash
left behind, by age, without touching anything else.

A dump is untrusted input, so the restore never runs as the superuser: each scratch database gets
its own login role of the same name (``NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
NOBYPASSRLS``, a member of no role, so not of ``pg_execute_server_program``,
``pg_read_server_files`` or ``pg_write_server_files``), which owns that database and nothing else.
``COPY ... TO PROGRAM``, untrusted languages, event triggers, foreign servers and server files are
then refused by PostgreSQL itself. One role per run, not one shared role, so that a hostile dump
cannot reach another tenant's scratch database restored at the same time. Its password is random,
sent to the server only as a SCRAM-SHA-256 verifier (the mechanism the clusters use), and handed
to ``pg_restore`` in a mode-600 passfile that is deleted with the database.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from continuity.adapters.postgres.connection import server_dsn
from continuity.kernel.errors import ContinuityError, SandboxNotIsolated, ServerUnavailable
from continuity.kernel.tenants import Registry
from continuity.validation.naming import scratch_created_at, scratch_database_name

logger = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", ""})
SCRAM_ITERATIONS = 4096
# Predefined roles that turn SQL into machine access; the restore role must be a member of none.
SERVER_ACCESS_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
# A restore runs pg_restore --jobs connections plus its main one, and the row checks during it up to six more
# (one each, two for the ledger); a few more leave room for a retry. Over the limit, a row check could not
# connect and would only run after the restore.
RESTORE_CONNECTION_LIMIT = 16
# Where the sandbox installs amcheck in a scratch database: a schema the restored dump does not own.
AMCHECK_SCHEMA = "continuity_amcheck"


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677), computed here so
    that the password itself never reaches the server, its logs or ``pg_stat_activity``."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:"
            f"{b64(server_key).decode()}")


@dataclass(frozen=True)
class Endpoint:
    """Where a libpq connection string points: a TCP host or a unix socket directory, and a port."""

    host: str
    port: int

    @property
    def is_socket(self) -> bool:
        return self.host.startswith("/")

    @property
    def is_local(self) -> bool:
        return self.is_socket or self.host in LOOPBACK

    @classmethod
    def of(cls, dsn: str) -> Endpoint:
        params = conninfo_to_dict(dsn)
        return cls(host=str(params.get("host") or ""), port=int(params.get("port") or 5432))


@dataclass(frozen=True)
class ProductionServer:
    name: str
    endpoint: Endpoint
    system_identifier: str | None  # None when it could not be asked (unreachable)


def isolation_refusal(target: Endpoint, target_system_identifier: str, listen_addresses: str,
                      production: list[ProductionServer]) -> str | None:
    """Why this restore target must not be used, or None when it is an isolated sandbox."""
    for server in production:
        same_host = target.host == server.endpoint.host or (target.is_local and server.endpoint.is_local)
        if same_host and target.port == server.endpoint.port:
            return (f"restore target {target.host!r} port {target.port} is production server {server.name!r} of the "
                    "registry; point the sandbox connection at the isolated restore server")
    for server in production:
        if server.system_identifier and server.system_identifier == target_system_identifier:
            return (f"restore target {target.host!r} port {target.port} has the system identifier of production "
                    f"server {server.name!r} ({target_system_identifier}): it is that server or a copy of it; "
                    "point the sandbox connection at the isolated restore server")
    if not target.is_socket:
        return (f"restore target {target.host!r} is reached over TCP; connect to the sandbox through its unix "
                "socket directory and set listen_addresses='' on the sandbox cluster")
    if listen_addresses.strip():
        return (f"restore target {target.host!r} accepts TCP (listen_addresses={listen_addresses!r}); "
                "set listen_addresses='' on the sandbox cluster")
    return None


def _system_identifier(conn: psycopg.Connection) -> str:
    row = conn.execute("select system_identifier::text from pg_control_system()").fetchone()
    return str(row[0]) if row else ""


class Sandbox:
    """Scratch databases on the isolated restore server.

    Every method connects with a short timeout; connection failures raise :class:`ServerUnavailable`
    naming the sandbox, so a run against a stopped sandbox fails clearly and marks nothing.
    """

    def __init__(self, admin_dsn: str, production_dsns: Mapping[str, str] | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.endpoint = Endpoint.of(admin_dsn)
        self.production_dsns = dict(production_dsns or {})
        self._verified: str | None = None
        self._passfile_dir = Path(tempfile.gettempdir())

    @classmethod
    def local(cls, registry: Registry) -> Sandbox:
        """The local stack's sandbox cluster, guarded against every server of the registry."""
        from continuity.adapters.local.local_stack import LocalStack

        return cls(LocalStack().dsn("sandbox"), production_dsns_of(registry))

    def scratch_dsn(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        return make_conninfo("", **{k: v for k, v in params.items() if v is not None})

    def _connect(self, dsn: str | None = None) -> psycopg.Connection:
        try:
            return psycopg.connect(dsn or self.admin_dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ServerUnavailable(
                f"the sandbox at {self.endpoint.host!r} port {self.endpoint.port} is unreachable ({message}); "
                "start it (`continuity local up`) or fix the sandbox connection; nothing was validated") from exc

    # ---- the guard ------------------------------------------------------------------------
    def verify_isolated(self) -> str:
        """Prove the target is the isolated sandbox; returns the reason as a sentence.

        :raises SandboxNotIsolated: the target is a production server or accepts TCP.
        :raises ServerUnavailable: the sandbox cannot be reached.
        """
        if self._verified is not None:
            return self._verified
        # Refuse a TCP target before even connecting to it: it might be production.
        if not self.endpoint.is_socket:
            refusal = isolation_refusal(self.endpoint, "", "", self._production(with_identity=False))
            raise SandboxNotIsolated(refusal or "")
        with self._connect() as conn:
            listen = str((conn.execute("show listen_addresses").fetchone() or ("",))[0])
            identity = _system_identifier(conn)
        refusal = isolation_refusal(self.endpoint, identity, listen, self._production(with_identity=True))
        if refusal:
            raise SandboxNotIsolated(refusal)
        self._verified = (f"sandbox {self.endpoint.host!r} port {self.endpoint.port} is isolated: unix socket only, "
                          f"system identifier {identity} matches no production server")
        return self._verified

    def _production(self, with_identity: bool) -> list[ProductionServer]:
        servers = []
        for name, dsn in sorted(self.production_dsns.items()):
            identity: str | None = None
            if with_identity:
                try:
                    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
                        identity = _system_identifier(conn)
                except psycopg.Error:
                    # An unreachable production server cannot be compared by identity; host/port still are.
                    identity = None
            servers.append(ProductionServer(name, Endpoint.of(dsn), identity))
        return servers

    # ---- scratch databases ----------------------------------------------------------------
    def create_scratch_database(self, tenant_id: str, now: datetime | None = None, name: str | None = None) -> str:
        """Create an empty scratch database on the verified sandbox; returns its name.

        :param name: a name chosen ahead (an orchestrator picks it so that it can always drop it);
            it must be a scratch name, else a fresh unique one is made.
        """
        self.verify_isolated()
        name = name or scratch_database_name(tenant_id, now or datetime.now(UTC), secrets.token_hex(3))
        if scratch_created_at(name) is None:
            raise ContinuityError(f"refusing to create {name!r}: not a scratch database name")
        password = secrets.token_urlsafe(32)
        role = sql.Identifier(name)
        with self._connect() as conn:
            # At-least-once delivery: the name is unique to one validation run (the orchestrator draws it from
            # its replay-safe uuid), so a database or role of this name can only be an earlier attempt of this
            # same step that a host crash interrupted, holding a partial restore. Start it over.
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("drop role if exists {}").format(role))
            conn.execute(sql.SQL(
                "create role {} login nosuperuser nocreatedb nocreaterole noreplication nobypassrls "
                "connection limit {} password {}").format(role, sql.Literal(RESTORE_CONNECTION_LIMIT),
                                                          sql.Literal(scram_verifier(password))))
            conn.execute(sql.SQL("create database {} owner {} template template0").format(sql.Identifier(name),
                                                                                       role))
            # Only its own role (and the superuser) may connect: not a concurrent run's role.
            conn.execute(sql.SQL("revoke all on database {} from public").format(sql.Identifier(name)))
            granted = [r for r in SERVER_ACCESS_ROLES
                       if (conn.execute("select pg_has_role(%s, %s, 'member')", (name, r)).fetchone() or (False,))[0]]
        if granted:  # cannot happen for a role made above; refuse rather than restore with machine access
            self.drop_scratch_database(name)
            raise ContinuityError(f"restore role {name!r} is a member of {', '.join(granted)}; "
                                  "nothing was restored")
        self._write_passfile(name, password)
        logger.info("scratch database created", extra={"tenant": tenant_id, "database": name})
        return name

    def _passfile(self, name: str) -> Path:
        return self._passfile_dir / f"continuity-restore-{name}.pgpass"

    def _write_passfile(self, name: str, password: str) -> None:
        path = self._passfile(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"*:*:{name}:{name}:{password}\n")

    def restore_dsn(self, dbname: str) -> str:
        """Where ``pg_restore`` connects: the scratch database as its own non-superuser role.

        The password is in a passfile named by the connection string, never in the string itself.
        :raises ContinuityError: the scratch database was not created by this sandbox object.
        """
        passfile = self._passfile(dbname)
        if not passfile.exists():
            raise ContinuityError(f"no restore role for {dbname!r}: create the scratch database with "
                                  "create_scratch_database first")
        params = conninfo_to_dict(self.admin_dsn)
        params.update({"dbname": dbname, "user": dbname, "passfile": str(passfile)})
        return make_conninfo("", **{k: v for k, v in params.items() if v is not None})

    def rows_dsn(self, dbname: str) -> str:
        """Where the row checks connect while the restore goes on: the restore role as it is, reading ``public``.

        It owns every table it restores, which is all the row checks read; amcheck and the assertions' role
        (:meth:`checks_dsn`) are granted only once the restore is over, never while the dump's SQL runs.
        """
        return make_conninfo(self.restore_dsn(dbname), options="-c search_path=public")

    def checks_dsn(self, dbname: str, amcheck: bool) -> str:
        """Where the checks connect: the restore role again, never the superuser, after granting it what they need.

        A restored dump's views, defaults and functions run with the rights of whoever queries them;
        queried as the superuser they could do what the restore role was kept from doing. So the
        checks read as the restore role. What they need beyond owning the database is set up here,
        as the superuser, on objects the dump cannot reach: amcheck in a schema of its own (first on
        the search path, so a planted ``public.bt_index_check`` cannot fake a pass) with execute
        granted, and membership in the read-only role the tenant assertions run under.
        """
        from continuity.adapters.postgres.check_runner import ASSERTION_ROLE

        role = sql.Identifier(dbname)
        with self._connect(self.scratch_dsn(dbname)) as conn:
            if amcheck:
                conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(AMCHECK_SCHEMA)))
                conn.execute(sql.SQL("create extension if not exists amcheck schema {}").format(
                    sql.Identifier(AMCHECK_SCHEMA)))
                conn.execute(sql.SQL("grant usage on schema {} to {}").format(sql.Identifier(AMCHECK_SCHEMA), role))
                conn.execute(sql.SQL("grant execute on all functions in schema {} to {}").format(
                    sql.Identifier(AMCHECK_SCHEMA), role))
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (ASSERTION_ROLE,)).fetchone()
            if not exists:
                # Another validation may create it concurrently.
                with contextlib.suppress(psycopg.errors.DuplicateObject):
                    conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(ASSERTION_ROLE)))
            conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(ASSERTION_ROLE), role))
            if not self._passfile(dbname).exists():
                # The checks may run in another process than the restore (another activity): a new
                # password, set once the restore is over, so no connection of it can be cut off.
                password = secrets.token_urlsafe(32)
                conn.execute(sql.SQL("alter role {} password {}").format(role, sql.Literal(scram_verifier(password))))
                self._write_passfile(dbname, password)
        dsn = self.restore_dsn(dbname)
        return make_conninfo(dsn, options=f"-c search_path={AMCHECK_SCHEMA},public")

    def drop_scratch_database(self, name: str) -> None:
        """Drop a scratch database; succeeds if it is already gone. Refuses any non-scratch name."""
        if scratch_created_at(name) is None:
            raise ContinuityError(f"refusing to drop {name!r}: not a scratch database name")
        with self._connect() as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            # The role owns nothing outside its database (the restore runs with --no-owner into it).
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))
        self._passfile(name).unlink(missing_ok=True)
        logger.info("scratch database dropped", extra={"database": name})

    def list_scratch_databases(self) -> list[str]:
        """Scratch databases, and restore roles whose database is gone (a crash between the two)."""
        with self._connect() as conn:
            rows = conn.execute("select datname from pg_database where datname like 'scratch\\_%' "
                                "union select rolname from pg_roles where rolname like 'scratch\\_%' "
                                "order by 1").fetchall()
        return [str(r[0]) for r in rows if scratch_created_at(str(r[0])) is not None]

    def sweep_scratch_databases(self, older_than_minutes: int, now: datetime | None = None) -> list[str]:
        """Drop scratch databases older than ``older_than_minutes`` (left by a crash); returns their names."""
        self.verify_isolated()
        cutoff = (now or datetime.now(UTC)) - timedelta(minutes=older_than_minutes)
        dropped = []
        for name in self.list_scratch_databases():
            created = scratch_created_at(name)
            if created is not None and created < cutoff:
                self.drop_scratch_database(name)
                dropped.append(name)
        if dropped:
            logger.warning("swept %d stale scratch database(s)", len(dropped), extra={"databases": dropped})
        return dropped

    def database_size(self, name: str) -> int:
        with self._connect() as conn:
            row = conn.execute("select pg_database_size(%s)", (name,)).fetchone()
        return int(row[0]) if row else 0

    def has_amcheck(self) -> tuple[bool, str]:
        """Whether the sandbox server can install amcheck, and why not when it cannot."""
        with self._connect() as conn:
            row = conn.execute("select 1 from pg_available_extensions where name = 'amcheck'").fetchone()
        if row:
            return True, ""
        return False, "the amcheck extension is not installed on the sandbox server (contrib missing)"


def production_dsns_of(registry: Registry) -> dict[str, str]:
    """Connection strings of every server in the registry (primary and replicas)."""
    return {name: server_dsn(server) for name, server in registry.servers.items()}

