"""PostgreSQL and storage work of a tenant recovery, on the tenant's own production server.

* :class:`StagingTarget`: the restore target of a recovery, a NEW database beside the live one
  (``{db}_staging_{ts}``). It implements the validation's sandbox port, so the backup is restored and
  checked by exactly the code the nightly validation runs (:mod:`continuity.validation.service`), only the
  target differs. It refuses any name that is not this recovery's staging name: never the live one.
* :class:`TenantDatabases`: observes the three names of a recovery (live, staged, pre_recovery) and
  performs one cutover action at a time (:class:`continuity.recovery.rules.CutoverAction`); :meth:`drive`
  loops observe → decide (pure) → act until the target position, so every step is idempotent and a
  step killed anywhere resumes from what the server shows. Only the tenant's own database is fenced
  (``ALTER DATABASE … ALLOW_CONNECTIONS false`` + ``pg_terminate_backend`` of its sessions): every
  other database on the server is untouched.
* :func:`data_loss_facts`: what the live database has that the backup lacks, and the reverse.
* :func:`restore_missing_attachments`: attachment files the recovered database references but the
  tenant's attachment store lacks, brought back from blob versions or soft-deleted blobs when the
  store keeps them. Azurite keeps neither: that is detected and each missing file is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from continuity.adapters.local.fault_injection import pause_at
from continuity.adapters.local.run_folders import LeftoverNotOurs
from continuity.adapters.postgres.connection import connect
from continuity.kernel.errors import ContinuityError
from continuity.recovery.rules import (
    STAGED_NAME_RE,
    CutoverAction,
    CutoverObservation,
    CutoverPosition,
    DatabaseNames,
    DatabaseState,
    TableFacts,
    cutover_position,
    next_cutover_action,
)

logger = logging.getLogger(__name__)

TERMINATE_WAIT_SECONDS = 15.0
MAX_CUTOVER_ACTIONS = 8
# Restore into production keeps owners and grants (the application role must own its tables), unlike the
# sandbox restore; everything else as the validation does it.
RESTORE_OPTIONS = ("--no-tablespaces", "--no-security-labels", "--no-publications", "--no-subscriptions",
                   "--exit-on-error")
INVOICE_FILTER = "move_type in ('out_invoice', 'out_refund', 'in_invoice', 'in_refund')"
# (name in the report, table, extra filter): what the approver is told going back loses.
LOSS_TABLES = (("moves", "account_move", "true"), ("invoices", "account_move", INVOICE_FILTER),
               ("attachments", "ir_attachment", "true"))


class CutoverStuck(ContinuityError):
    code = "cutover_stuck"
    http_status = 409


def _dsn_with(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- the staging target ---------------------------------------------------------------------------


class StagingTarget:
    """A staging database beside the live one, shaped as :class:`continuity.validation.service.SandboxPort`."""

    def __init__(self, admin_dsn: str, names: DatabaseNames, marker: str) -> None:
        self.admin_dsn = admin_dsn
        self.names = names
        self.marker = marker

    def _guard(self, name: str) -> None:
        if name != self.names.staged or name == self.names.live or not STAGED_NAME_RE.match(name):
            raise ContinuityError(f"refusing to touch {name!r}: only this recovery's staging database "
                                  f"{self.names.staged!r} may be created or dropped")

    def verify_isolated(self) -> str:
        # Not a sandbox: a recovery restores onto the tenant's production server on purpose. What must
        # hold instead is that the restore never targets the live database.
        self._guard(self.names.staged)
        return f"staging database {self.names.staged} beside live {self.names.live}: the live database is not touched"

    def _claim(self, conn: psycopg.Connection, name: str) -> bool:
        """Whether ``name`` exists; it may only when it carries this recovery's marker.

        :raises LeftoverNotOurs: a database of that name without this recovery's comment: left untouched.
        """
        row = conn.execute("select coalesce(shobj_description(oid, 'pg_database'), '') from pg_database "
                           "where datname = %s", (name,)).fetchone()
        if row is None:
            return False
        if str(row[0]) != self.marker:
            raise LeftoverNotOurs(f"database {name} exists but is not this recovery's staging copy (its comment is "
                                  f"{str(row[0])[:120]!r}, not {self.marker!r}): left untouched; drop it yourself if "
                                  "it is a leftover, or request a new recovery")
        return True

    def create_scratch_database(self, tenant_id: str, now: datetime | None = None, name: str | None = None) -> str:
        """Create the staging database empty, owned like the live one, and mark it with this recovery's comment.

        A staging database of an earlier attempt of this recovery (a re-run after a crash: its comment is this
        recovery's marker) is dropped first; one without that marker is refused and left untouched.

        :raises LeftoverNotOurs: a database of the staging name that this recovery did not make.
        """
        name = name or self.names.staged
        self._guard(name)
        with connect(self.admin_dsn) as conn:
            row = conn.execute("select pg_get_userbyid(datdba) from pg_database where datname = %s",
                               (self.names.live,)).fetchone()
            owner = str(row[0]) if row else None
            if self._claim(conn, name):
                logger.warning("dropping the staging database of an earlier attempt",
                               extra={"tenant": tenant_id, "database": name})
                conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
            statement = sql.SQL("create database {} template template0").format(sql.Identifier(name))
            if owner:
                statement = sql.SQL("create database {} owner {} template template0").format(
                    sql.Identifier(name), sql.Identifier(owner))
            conn.execute(statement)
            conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(self.marker)))
        logger.info("staging database created", extra={"tenant": tenant_id, "database": name})
        return name

    def drop_scratch_database(self, name: str) -> None:
        """Drop the staging database; succeeds if it is gone. Refuses every other name, and a database of the
        staging name without this recovery's marker."""
        self._guard(name)
        with connect(self.admin_dsn) as conn:
            if self._claim(conn, name):
                conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))

    def scratch_dsn(self, dbname: str) -> str:
        return _dsn_with(self.admin_dsn, dbname)

    def remove_check_extensions(self, name: str) -> None:
        """Drop what the checks installed in the staging database: amcheck (the ``indexes`` check) and the read
        grants of the tenant-assertion role (``check_runner.prepare_assertion_role``), which must not follow
        the database into production.

        The staging database goes live: left there, amcheck would be in every later backup of the tenant,
        and the next nightly's ``archive_safe`` refuses a dump creating amcheck as hostile. A restored dump
        never holds amcheck itself (``archive_safe`` refused it before the restore), so dropping it removes
        only what the checks added. Idempotent: a re-run after a crash drops what is there.
        """
        from continuity.adapters.postgres.check_runner import revoke_assertion_role

        self._guard(name)
        with connect(self.scratch_dsn(name)) as conn:
            conn.execute("drop extension if exists amcheck")
            revoke_assertion_role(conn)

    def database_size(self, name: str) -> int:
        with connect(self.admin_dsn) as conn:
            row = conn.execute("select pg_database_size(%s)", (name,)).fetchone()
        return int(row[0]) if row else 0

    def has_amcheck(self) -> tuple[bool, str]:
        with connect(self.admin_dsn) as conn:
            row = conn.execute("select 1 from pg_available_extensions where name = 'amcheck'").fetchone()
        return (True, "") if row else (False, "the amcheck extension is not installed on the tenant's server")


def restore_keeping_owners(dump: Any, target_dsn: str, jobs: int, deadline_s: float,
                           on_finished: Callable[[int, str], None] | None = None) -> Any:
    """``pg_restore --jobs`` into the staging database, keeping owners and grants of the dump."""
    from continuity.adapters.postgres.connection import libpq_env
    from continuity.adapters.tools import restore_runner

    env = libpq_env()
    env["PGOPTIONS"] = restore_runner.RESTORE_PGOPTIONS
    args = restore_runner.restore_args(RESTORE_OPTIONS, dump, target_dsn, jobs, on_finished is not None)
    outcome = restore_runner._run(args, deadline_s, env, restore_runner.on_finished_items(on_finished))
    pause_at("recovery.restored")  # restored, the dump still on disk: a kill here leaves both behind
    return outcome


# ---- the cutover ----------------------------------------------------------------------------------


class TenantDatabases:
    """The tenant's databases on its server, reached through an admin connection to ``postgres``."""

    def __init__(self, admin_dsn: str, names: DatabaseNames, marker: str) -> None:
        self.admin_dsn = admin_dsn
        self.names = names
        self.marker = marker

    def dsn(self, dbname: str) -> str:
        return _dsn_with(self.admin_dsn, dbname)

    @contextlib.contextmanager
    def _admin(self) -> Iterator[psycopg.Connection]:
        with connect(self.admin_dsn) as conn:
            yield conn

    def _state(self, conn: psycopg.Connection, name: str) -> DatabaseState | None:
        row = conn.execute(
            "select d.datallowconn, coalesce(shobj_description(d.oid, 'pg_database'), ''), "
            "(select count(*) from pg_stat_activity a where a.datname = d.datname and a.pid <> pg_backend_pid()) "
            "from pg_database d where d.datname = %s", (name,)).fetchone()
        if row is None:
            return None
        return DatabaseState(name=name, allow_connections=bool(row[0]), marker=str(row[1]), sessions=int(row[2]))

    def observe(self) -> CutoverObservation:
        with self._admin() as conn:
            return CutoverObservation(self.names, self.marker, self._state(conn, self.names.live),
                                      self._state(conn, self.names.staged), self._state(conn, self.names.pre_recovery))

    def position(self) -> tuple[CutoverPosition, str]:
        return cutover_position(self.observe())

    # ---- actions ------------------------------------------------------------------------------
    def _terminate(self, conn: psycopg.Connection, names: Iterable[str]) -> int:
        """End every session on ``names`` and wait until none is left; returns how many were ended."""
        wanted = list(names)
        ended = 0
        deadline = time.monotonic() + TERMINATE_WAIT_SECONDS
        while True:
            rows = conn.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                                "where datname = any(%s) and pid <> pg_backend_pid()", (wanted,)).fetchall()
            ended += len(rows)
            left = conn.execute("select count(*) from pg_stat_activity where datname = any(%s) "
                                "and pid <> pg_backend_pid()", (wanted,)).fetchone()
            if not left or not left[0]:
                return ended
            if time.monotonic() > deadline:
                raise CutoverStuck(f"{left[0]} session(s) on {', '.join(wanted)} survive termination; "
                                   "end them (pg_terminate_backend) and retry the step")
            time.sleep(0.05)

    def _allow(self, conn: psycopg.Connection, name: str, allow: bool) -> None:
        conn.execute(sql.SQL("alter database {} allow_connections {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")))

    def _rename(self, conn: psycopg.Connection, old: str, new: str) -> None:
        conn.execute(sql.SQL("alter database {} rename to {}").format(sql.Identifier(old), sql.Identifier(new)))

    def act(self, action: CutoverAction) -> dict[str, Any]:
        """Perform one cutover action; returns what it did (sessions ended)."""
        n = self.names
        out: dict[str, Any] = {"action": str(action)}
        with self._admin() as conn:
            if action is CutoverAction.FENCE_LIVE:
                present = [d for d in (n.live, n.staged) if self._state(conn, d) is not None]
                for name in present:
                    self._allow(conn, name, False)
                out["sessions_ended"] = self._terminate(conn, present)
            elif action in (CutoverAction.UNFENCE_LIVE, CutoverAction.REOPEN_LIVE):
                self._allow(conn, n.live, True)
                if action is CutoverAction.UNFENCE_LIVE:
                    conn.execute(sql.SQL("alter database {} reset default_transaction_read_only").format(
                        sql.Identifier(n.live)))
            elif action is CutoverAction.SWAP:
                out["sessions_ended"] = self._terminate(conn, [n.live, n.staged])
                with conn.transaction():
                    self._rename(conn, n.live, n.pre_recovery)
                    pause_at("recovery.swap-mid")  # between the two renames: a kill here rolls both back
                    self._rename(conn, n.staged, n.live)
            elif action is CutoverAction.SWAP_BACK:
                for name in (n.live, n.pre_recovery):
                    self._allow(conn, name, False)
                out["sessions_ended"] = self._terminate(conn, [n.live, n.pre_recovery])
                with conn.transaction():
                    self._rename(conn, n.live, n.staged)
                    self._rename(conn, n.pre_recovery, n.live)
            elif action is CutoverAction.FINISH_SWAP:
                out["sessions_ended"] = self._terminate(conn, [n.staged])
                self._rename(conn, n.staged, n.live)
            elif action is CutoverAction.UNDO_SET_ASIDE:
                out["sessions_ended"] = self._terminate(conn, [n.pre_recovery])
                self._rename(conn, n.pre_recovery, n.live)
        logger.info("cutover action done", extra={"action": str(action), "database": n.live})
        return out

    def drive(self, target: CutoverPosition, forward_only: bool = True,
              on_action: Callable[[CutoverAction, str], None] | None = None) -> dict[str, Any]:
        """Act until the cutover stands at ``target`` (or, ``forward_only``, beyond it); idempotent.

        ``on_action(action, "before" | "after")`` is called around each action, so the caller can record
        durably when the tenant went unavailable (before a fence) and came back (after a reopen).

        :raises ContinuityError: the databases are in a state this recovery did not make (nothing changed).
        :raises CutoverStuck: sessions survive termination, or the target is not reached.
        """
        actions: list[dict[str, Any]] = []
        for _ in range(MAX_CUTOVER_ACTIONS):
            position, why = self.position()
            action = next_cutover_action(position, target, forward_only)
            if action is None:
                return {"position": str(position), "detail": why, "actions": actions,
                        "observation": self.observe().to_json()}
            if on_action is not None:
                on_action(action, "before")
            actions.append(self.act(action))
            if on_action is not None:
                on_action(action, "after")
        position, why = self.position()
        raise CutoverStuck(f"the cutover did not reach {target} after {MAX_CUTOVER_ACTIONS} actions: {why}")

    # ---- after the swap ----------------------------------------------------------------------
    def keep_pre_recovery(self) -> str:
        """The original, kept for forensics: readable, refusing writes by default. Idempotent."""
        name = self.names.pre_recovery
        with self._admin() as conn:
            if self._state(conn, name) is None:
                return f"{name} does not exist"
            conn.execute(sql.SQL("alter database {} set default_transaction_read_only = on").format(
                sql.Identifier(name)))
            self._allow(conn, name, True)
        return f"{name} kept for forensics (read-only by default)"

    def drop_staged(self) -> bool:
        """Drop the staged copy if it exists under its staging name; returns whether one was dropped.

        :raises LeftoverNotOurs: a database of the staging name without this recovery's marker: untouched.
        """
        target = StagingTarget(self.admin_dsn, self.names, self.marker)
        target._guard(self.names.staged)
        with self._admin() as conn:
            if not target._claim(conn, self.names.staged):
                return False
            conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(self.names.staged)))
        return True


# ---- the data-loss report -------------------------------------------------------------------------


def _table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (f"public.{table}",)).fetchone()
    return bool(row and row[0])


def data_loss_facts(live_dsn: str, staged_dsn: str, backup_created_at: datetime) -> list[TableFacts]:
    """Per reported table: rows created or changed on live since the backup, and rows live lost.

    Created after = id above the backup's highest id (ids are never reused); changed after = a row the
    backup also has with ``write_date`` after the backup was taken (Odoo stores UTC without a zone).
    """
    snapshot = backup_created_at.astimezone(UTC).replace(tzinfo=None)
    facts: list[TableFacts] = []
    with psycopg.connect(staged_dsn, autocommit=True) as staged, psycopg.connect(live_dsn, autocommit=True) as live:
        for label, table, where in LOSS_TABLES:
            backup_rows, max_id = 0, 0
            if _table_exists(staged, table):
                row = staged.execute(sql.SQL("select count(*), coalesce(max(id), 0) from {} where {}").format(
                    sql.Identifier(table), sql.SQL(where))).fetchone()
                backup_rows, max_id = (int(row[0]), int(row[1])) if row else (0, 0)
            live_rows = created = modified = kept = 0
            if _table_exists(live, table):
                row = live.execute(sql.SQL(
                    "select count(*), count(*) filter (where id > %s), "
                    "count(*) filter (where id <= %s and write_date > %s), count(*) filter (where id <= %s) "
                    "from {} where {}").format(sql.Identifier(table), sql.SQL(where)),
                    (max_id, max_id, snapshot, max_id)).fetchone()
                if row:
                    live_rows, created, modified, kept = (int(v) for v in row)
            facts.append(TableFacts(name=label, live_rows=live_rows, backup_rows=backup_rows, created_after=created,
                                    modified_after=modified, missing_from_live=max(0, backup_rows - kept)))
    return facts


# ---- verification ---------------------------------------------------------------------------------


def smoke(live_dsn: str, marker: str, manifest: Any, assertions: Iterable[Any]) -> dict[str, Any]:
    """Read-only smoke queries on the live database after the swap: it is the recovered copy (its marker),
    its schema is whole, the tenant's assertions hold; the ledger against the manifest is reported."""
    from continuity.adapters.postgres import check_runner
    from continuity.adapters.postgres.proofs import odoo_facts

    with psycopg.connect(live_dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("select coalesce(shobj_description(oid, 'pg_database'), '') from pg_database "
                           "where datname = current_database()").fetchone()
        is_recovered = bool(row and str(row[0]).startswith(marker))
        schema = check_runner.schema_present(conn, manifest, odoo_facts(conn))
        ledger = check_runner.ledger(conn, manifest)
        try:
            asserted = check_runner.assertions(conn, tuple(assertions))
        finally:
            check_runner.revoke_assertion_role(conn)  # live: the checks' role keeps no grant here
    checks = [schema, *asserted]
    failed = [c.id for c in checks if str(c.status) == "fail"]
    ok = is_recovered and not failed
    return {"ok": ok, "is_recovered_copy": is_recovered, "failed_checks": failed,
            "ledger_matches_manifest": str(ledger.status) == "pass", "ledger": ledger.to_json(),
            "checks": [c.to_json() for c in checks]}


# ---- attachments ----------------------------------------------------------------------------------


ATTACHMENTS_SQL = ("select store_fname, coalesce(checksum, '') from ir_attachment "
                   "where type = 'binary' and store_fname is not null and store_fname <> ''")


def referenced_attachments(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not _table_exists(conn, "ir_attachment"):
            return {}
        return {str(name): str(sha1) for name, sha1 in conn.execute(ATTACHMENTS_SQL)}


def _restore_kept(blobs: Any, container: str, keep_container: str, blob: str, sha1: str) -> bool:
    """Bring one file back from the product's own kept copy (stores without versions), only when its sha1 is
    the one the recovered database records: a kept copy is never trusted blindly."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        data = blobs.download(keep_container, blob)
    except (ResourceNotFoundError, AzureError, ContinuityError):
        return False
    if sha1 and hashlib.sha1(data, usedforsecurity=False).hexdigest() != sha1:
        logger.warning("kept attachment copy has another sha1; not restored", extra={"blob": blob})
        return False
    blobs.upload(container, blob, data, overwrite=True)
    return True


def restore_missing_attachments(blobs: Any, container: str, prefix: str, referenced: dict[str, str],
                                now: Callable[[], datetime] = lambda: datetime.now(UTC),
                                keep_container: str | None = None) -> dict[str, Any]:
    """Bring back files the recovered database references that the attachment store lacks.

    Looks for an older version (blob versioning) or a soft-deleted blob of each missing name; restores
    one whose sha1 matches the database's checksum. A store that keeps neither (Azurite) is detected:
    each missing file is then reported as not found, never pretended back.
    """
    from azure.core.exceptions import AzureError, HttpResponseError

    from continuity.adapters.storage.blob_store import unavailable

    present = {n.removeprefix(prefix) for n in blobs.list_names(container, prefix=prefix)}
    missing = sorted(n for n in referenced if n not in present)
    report: dict[str, Any] = {"referenced": len(referenced), "missing": len(missing), "restored": [],
                              "not_found": [], "store_keeps_versions": None, "note": ""}
    if not missing:
        report["note"] = "every referenced attachment is in the store"
        return report
    client = blobs.container(container)
    keeps_versions = True
    candidates: dict[str, list[Any]] = {}
    try:
        for item in client.list_blobs(name_starts_with=prefix, include=["versions", "deleted"]):
            name = str(item.name).removeprefix(prefix)
            if name in missing:
                candidates.setdefault(name, []).append(item)
    except HttpResponseError as exc:
        # Azurite answers listing with include=versions/deleted with an error or ignores it.
        keeps_versions = False
        logger.warning("attachment store does not list versions: %s", _first_line(exc))
    except AzureError as exc:
        raise unavailable(exc) from exc
    any_version = any(getattr(i, "version_id", None) or getattr(i, "deleted", False)
                      for items in candidates.values() for i in items)
    if keeps_versions and not any_version:
        # Nothing older than the live blobs is listed: versioning and soft delete are off (or unsupported).
        keeps_versions = bool(candidates)
    report["store_keeps_versions"] = keeps_versions
    for name in missing:
        restored = False
        for item in sorted(candidates.get(name, []), key=lambda i: str(getattr(i, "version_id", "") or ""),
                           reverse=True):
            blob = prefix + name
            try:
                if getattr(item, "deleted", False) and not getattr(item, "version_id", None):
                    client.get_blob_client(blob).undelete_blob()
                    data = blobs.download(container, blob)
                else:
                    data = bytes(client.get_blob_client(blob, version_id=item.version_id).download_blob().readall())
                    if referenced[name] and hashlib.sha1(data, usedforsecurity=False).hexdigest() != referenced[name]:
                        continue
                    blobs.upload(container, blob, data, overwrite=True)
            except AzureError as exc:
                logger.warning("attachment version not restorable: %s", _first_line(exc), extra={"blob": blob})
                continue
            restored = True
            break
        if not restored and keep_container:
            restored = _restore_kept(blobs, container, keep_container, prefix + name, referenced[name])
            if restored:
                report.setdefault("from_kept_copy", []).append(name)
        (report["restored"] if restored else report["not_found"]).append(name)
    if report["not_found"]:
        store = "the store keeps no blob versions or soft-deleted blobs" if not keeps_versions else \
            "no matching version was found"
        report["note"] = (f"{len(report['not_found'])} attachment file(s) could not be found ({store}): "
                          f"{', '.join(report['not_found'][:10])}")
    else:
        kept = len(report.get("from_kept_copy", []))
        report["note"] = (f"{len(report['restored'])} attachment file(s) restored "
                          + (f"({kept} from the product's kept copies, sha1 verified)" if kept else
                             "from older versions"))
    report["checked_at"] = now().isoformat()
    return report
