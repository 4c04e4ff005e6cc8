"""The task hub in PostgreSQL: instances, history, messages (with due times) and activity work items.

Every state change is one transaction, so a crash (``kill -9``) never leaves half a step:

- an episode commits its new history, the instance row, the work it schedules (work items, timer
  messages, child instances) and the deletion of the messages it consumed together;
- an activity result is committed as a message together with the deletion of its work item, so a
  result is recorded at most once, and an activity whose result was not committed runs again;
- timers are messages whose ``visible_at`` is their due time.

One engine owns a task hub at a time (``taskhub.hosts``); a restarted devhost takes over from a dead one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import queue
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from continuity.adapters.postgres.connection import connect, ensure_database
from continuity.kernel.errors import ContinuityError, DatabaseMissing
from devhost.durable import history as h
from devhost.durable.replay import Episode, InstanceView, Message

logger = logging.getLogger(__name__)

TERMINAL = ("Completed", "Failed", "Terminated")
ACTIVE = ("Pending", "Running")

SCHEMA = """
create schema if not exists taskhub;
create table if not exists taskhub.instances (
    hub text not null,
    instance_id text not null,
    name text not null,
    execution_id text not null,
    status text not null,
    input text,
    output text,
    custom_status text,
    failure_details text,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    completed_at timestamptz,
    parent_instance_id text,
    parent_execution_id text,
    parent_task_id integer,
    engine_state jsonb not null default '{}'::jsonb,
    primary key (hub, instance_id)
);
create index if not exists instances_status on taskhub.instances (hub, status);
create table if not exists taskhub.history (
    hub text not null,
    instance_id text not null,
    idx integer not null,
    execution_id text not null,
    event text not null,
    primary key (hub, instance_id, idx)
);
create table if not exists taskhub.messages (
    id bigserial primary key,
    hub text not null,
    instance_id text not null,
    execution_id text,
    task_id integer,
    event text not null,
    visible_at timestamptz not null
);
create index if not exists messages_due on taskhub.messages (hub, visible_at);
create index if not exists messages_instance on taskhub.messages (hub, instance_id);
create table if not exists taskhub.work_items (
    id bigserial primary key,
    hub text not null,
    instance_id text not null,
    execution_id text not null,
    task_id integer not null,
    name text not null,
    input text,
    claimed_by text,
    created_at timestamptz not null default now()
);
create index if not exists work_items_hub on taskhub.work_items (hub, claimed_by, id);
create table if not exists taskhub.outcomes (
    hub text not null,
    instance_id text not null,
    execution_id text not null,
    status text not null,
    at timestamptz not null
);
create table if not exists taskhub.hosts (
    hub text primary key,
    owner text not null,
    pid integer not null,
    hostname text not null,
    started_at timestamptz not null
);
"""


class InstanceExists(ContinuityError):
    code = "instance_exists"
    http_status = 409


class InstanceNotFound(ContinuityError):
    code = "instance_not_found"
    http_status = 404


class InstanceNotActive(ContinuityError):
    code = "instance_not_active"
    http_status = 410


class InstanceStillActive(ContinuityError):
    code = "instance_still_active"
    http_status = 412


class TaskHubInUse(ContinuityError):
    code = "task_hub_in_use"
    http_status = 409


@dataclass
class WorkItem:
    id: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input_text: str | None


@dataclass
class InstanceRow:
    instance_id: str
    name: str
    execution_id: str
    status: str
    input_text: str | None
    output_text: str | None
    custom_status_text: str | None
    failure_details: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    parent_instance_id: str | None
    parent_execution_id: str | None
    parent_task_id: int | None
    engine_state: dict[str, Any]


INSTANCE_COLUMNS = ("instance_id, name, execution_id, status, input, output, custom_status, failure_details, "
                    "created_at, updated_at, parent_instance_id, parent_execution_id, parent_task_id, engine_state")


def _row(values: Any) -> InstanceRow:
    return InstanceRow(*values)


class ConnectionPool:
    """A few reusable connections; broken ones are dropped."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue(maxsize=size)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(self.dsn, autocommit=True)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def prepare_database(dsn: str) -> None:
    """Create the database if it is missing (the ``control`` cluster's ``continuity`` database), then the schema."""
    try:
        with connect(dsn) as conn:
            conn.execute(SCHEMA)
    except DatabaseMissing:
        dbname = conninfo_to_dict(dsn).get("dbname")
        if not dbname:
            raise
        ensure_database(make_conninfo(dsn, dbname="postgres"), str(dbname))
        with connect(dsn) as conn:
            conn.execute(SCHEMA)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TaskHubStore:
    """All reads and writes of one task hub."""

    def __init__(self, dsn: str, hub: str, pool_size: int = 8) -> None:
        self.hub = hub
        self.pool = ConnectionPool(dsn, pool_size)
        self.owner = uuid.uuid4().hex

    # ---- ownership -------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the task hub; a dead owner's claims are released so its activities run again.

        :raises TaskHubInUse: another live process on this machine serves the hub.
        """
        host = socket.gethostname()
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute("select owner, pid, hostname from taskhub.hosts where hub = %s for update",
                               (self.hub,)).fetchone()
            if row and row[2] == host and row[1] != os.getpid() and _pid_alive(int(row[1])):
                raise TaskHubInUse(f"task hub {self.hub!r} is served by process {row[1]}; stop that devhost "
                                   "or use another task hub")
            conn.execute(
                "insert into taskhub.hosts (hub, owner, pid, hostname, started_at) values (%s, %s, %s, %s, now()) "
                "on conflict (hub) do update set owner = excluded.owner, pid = excluded.pid, "
                "hostname = excluded.hostname, started_at = excluded.started_at",
                (self.hub, self.owner, os.getpid(), host))
            conn.execute("update taskhub.work_items set claimed_by = null where hub = %s and claimed_by is not null",
                         (self.hub,))

    def release(self) -> None:
        with contextlib.suppress(psycopg.Error), self.pool.connection() as conn:
            conn.execute("delete from taskhub.hosts where hub = %s and owner = %s", (self.hub, self.owner))
        self.pool.close()

    # ---- dispatch queries ------------------------------------------------------------------
    def ready_instances(self, now: dt.datetime, limit: int = 64) -> list[str]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "select instance_id from taskhub.messages where hub = %s and visible_at <= %s "
                "group by instance_id order by min(id) limit %s", (self.hub, now, limit)).fetchall()
        return [r[0] for r in rows]

    def next_due(self) -> dt.datetime | None:
        with self.pool.connection() as conn:
            row = conn.execute("select min(visible_at) from taskhub.messages where hub = %s", (self.hub,)).fetchone()
        return row[0] if row else None

    def run_episode(self, instance_id: str, now: dt.datetime,
                    decide: Callable[[InstanceView, list[str], list[Message]], Episode | None]) -> bool:
        """Deliver the due messages of one instance through ``decide`` and commit its decision atomically."""
        with self.pool.connection() as conn, conn.transaction():
            found = conn.execute(f"select {INSTANCE_COLUMNS} from taskhub.instances where hub = %s and "
                                 "instance_id = %s for update", (self.hub, instance_id)).fetchone()
            messages = conn.execute(
                "select id, execution_id, event from taskhub.messages where hub = %s and instance_id = %s and "
                "visible_at <= %s order by id", (self.hub, instance_id, now)).fetchall()
            if not messages:
                return False
            conn.execute("delete from taskhub.messages where id = any(%s)", ([m[0] for m in messages],))
            if found is None:
                return True
            row = _row(found)
            if row.status in TERMINAL:
                return True
            current = [Message(m[0], json.loads(m[2])) for m in messages if m[1] is None or m[1] == row.execution_id]
            past = [r[0] for r in conn.execute(
                "select event from taskhub.history where hub = %s and instance_id = %s order by idx",
                (self.hub, instance_id))]
            view = InstanceView(row.instance_id, row.name, row.execution_id, row.input_text,
                                row.parent_instance_id, row.engine_state)
            episode = decide(view, past, current)
            if episode is not None:
                self._apply(conn, row, episode, len(past), now)
        return True

    # ---- applying an episode ---------------------------------------------------------------
    def _apply(self, conn: psycopg.Connection, row: InstanceRow, episode: Episode, start_idx: int,
               now: dt.datetime) -> None:
        if episode.continue_as_new:
            self._continue_as_new(conn, row, episode, now)
            return
        self._append_history(conn, row.instance_id, row.execution_id, start_idx, episode.new_events)
        terminal = episode.runtime_status in TERMINAL
        conn.execute(
            "update taskhub.instances set status = %s, output = %s, custom_status = %s, failure_details = %s, "
            "engine_state = %s, updated_at = %s, completed_at = %s where hub = %s and instance_id = %s",
            (episode.runtime_status, episode.output_text, episode.custom_status_text, episode.failure_details,
             json.dumps(episode.state), now, now if terminal else None, self.hub, row.instance_id))
        if episode.activities:
            with conn.cursor().copy("copy taskhub.work_items (hub, instance_id, execution_id, task_id, name, input) "
                                    "from stdin") as copy:
                for work in episode.activities:
                    copy.write_row((self.hub, row.instance_id, row.execution_id, work.task_id, work.name,
                                    work.input_text))
        for timer in episode.timers:
            self._insert_message(conn, row.instance_id, row.execution_id,
                                 h.timer_fired(timer.fire_at, timer.timer_id, timer.fire_at), timer.fire_at,
                                 task_id=timer.timer_id)
        if episode.cancelled_timers:
            conn.execute("delete from taskhub.messages where hub = %s and instance_id = %s and execution_id = %s "
                         "and task_id = any(%s)", (self.hub, row.instance_id, row.execution_id,
                                                  episode.cancelled_timers))
        for child in episode.sub_orchestrations:
            try:
                self._create_instance(conn, child.name, child.instance_id, child.input_text, now,
                                      parent=(row.instance_id, row.execution_id, child.task_id))
            except InstanceExists as exc:
                self._insert_message(conn, row.instance_id, row.execution_id,
                                     h.sub_orchestration_failed(now, child.task_id, str(exc), ""), now)
        if terminal:
            self._finish(conn, row, episode.runtime_status, episode.output_text, episode.failure_details, now)

    def _append_history(self, conn: psycopg.Connection, instance_id: str, execution_id: str, start_idx: int,
                        events: list[dict[str, Any]]) -> None:
        with conn.cursor().copy("copy taskhub.history (hub, instance_id, idx, execution_id, event) from stdin") as copy:
            for offset, event in enumerate(events):
                copy.write_row((self.hub, instance_id, start_idx + offset, execution_id,
                                json.dumps({**event, "IsPlayed": True})))

    def _insert_message(self, conn: psycopg.Connection, instance_id: str, execution_id: str | None,
                        event: dict[str, Any], visible_at: dt.datetime, task_id: int | None = None) -> None:
        conn.execute("insert into taskhub.messages (hub, instance_id, execution_id, task_id, event, visible_at) "
                     "values (%s, %s, %s, %s, %s, %s)",
                     (self.hub, instance_id, execution_id, task_id, json.dumps(event), visible_at))

    def _finish(self, conn: psycopg.Connection, row: InstanceRow, status: str, output_text: str | None,
                details: str | None, now: dt.datetime) -> None:
        """Record the outcome once and tell a parent orchestration, in the completing transaction."""
        conn.execute("insert into taskhub.outcomes (hub, instance_id, execution_id, status, at) "
                     "values (%s, %s, %s, %s, %s)", (self.hub, row.instance_id, row.execution_id, status, now))
        conn.execute("delete from taskhub.work_items where hub = %s and instance_id = %s", (self.hub, row.instance_id))
        conn.execute("delete from taskhub.messages where hub = %s and instance_id = %s and execution_id = %s",
                     (self.hub, row.instance_id, row.execution_id))
        if row.parent_instance_id is None or row.parent_task_id is None:
            return
        if status == "Completed":
            notice = h.sub_orchestration_completed(now, row.parent_task_id, output_text)
        else:
            reason = json.loads(output_text) if output_text else status
            if status == "Terminated":
                reason = f"Sub-orchestration '{row.instance_id}' was terminated: {reason}"
            notice = h.sub_orchestration_failed(now, row.parent_task_id, str(reason), details or "")
        self._insert_message(conn, row.parent_instance_id, row.parent_execution_id, notice, now)

    def _continue_as_new(self, conn: psycopg.Connection, row: InstanceRow, episode: Episode, now: dt.datetime) -> None:
        """A fresh execution with a fresh history; unconsumed external events carry over, as in DTFx."""
        execution_id = uuid.uuid4().hex
        conn.execute("delete from taskhub.history where hub = %s and instance_id = %s", (self.hub, row.instance_id))
        conn.execute("delete from taskhub.messages where hub = %s and instance_id = %s and execution_id is not null",
                     (self.hub, row.instance_id))
        conn.execute("delete from taskhub.work_items where hub = %s and instance_id = %s and claimed_by is null",
                     (self.hub, row.instance_id))
        conn.execute(
            "update taskhub.instances set execution_id = %s, status = 'Running', input = %s, output = null, "
            "custom_status = %s, engine_state = '{}'::jsonb, updated_at = %s where hub = %s and instance_id = %s",
            (execution_id, episode.continue_as_new_input, episode.custom_status_text, now, self.hub,
             row.instance_id))
        parent = self._parent_instance(row)
        self._insert_message(conn, row.instance_id, execution_id,
                             h.execution_started(now, row.name, row.instance_id, execution_id,
                                                 episode.continue_as_new_input, parent), now)

    @staticmethod
    def _parent_instance(row: InstanceRow) -> dict[str, Any] | None:
        if row.parent_instance_id is None:
            return None
        return {"OrchestrationInstance": {"InstanceId": row.parent_instance_id,
                                          "ExecutionId": row.parent_execution_id},
                "TaskScheduleId": row.parent_task_id}

    # ---- instances -------------------------------------------------------------------------
    def _create_instance(self, conn: psycopg.Connection, name: str, instance_id: str, input_text: str | None,
                         now: dt.datetime, parent: tuple[str, str, int] | None = None) -> None:
        existing = conn.execute("select status from taskhub.instances where hub = %s and instance_id = %s for update",
                                (self.hub, instance_id)).fetchone()
        if existing and existing[0] not in TERMINAL:
            raise InstanceExists(f"An Orchestration instance with the status {existing[0]} already exists.")
        if existing:
            for table in ("history", "messages", "work_items"):
                conn.execute(f"delete from taskhub.{table} where hub = %s and instance_id = %s",  # noqa: S608
                             (self.hub, instance_id))
            conn.execute("delete from taskhub.instances where hub = %s and instance_id = %s", (self.hub, instance_id))
        execution_id = uuid.uuid4().hex
        conn.execute(
            "insert into taskhub.instances (hub, instance_id, name, execution_id, status, input, created_at, "
            "updated_at, parent_instance_id, parent_execution_id, parent_task_id) "
            "values (%s, %s, %s, %s, 'Pending', %s, %s, %s, %s, %s, %s)",
            (self.hub, instance_id, name, execution_id, input_text, now, now,
             *(parent if parent else (None, None, None))))
        parent_json = None
        if parent:
            parent_json = {"OrchestrationInstance": {"InstanceId": parent[0], "ExecutionId": parent[1]},
                           "TaskScheduleId": parent[2]}
        self._insert_message(conn, instance_id, execution_id,
                             h.execution_started(now, name, instance_id, execution_id, input_text, parent_json), now)

    def start(self, name: str, instance_id: str, input_text: str | None) -> None:
        """:raises InstanceExists: the id belongs to a pending or running instance (Azure refuses it too)."""
        now = _now()
        try:
            with self.pool.connection() as conn, conn.transaction():
                self._create_instance(conn, name, instance_id, input_text, now)
        except psycopg.errors.UniqueViolation as exc:
            raise InstanceExists("An Orchestration instance with the status Pending already exists.") from exc

    def get(self, instance_id: str) -> InstanceRow | None:
        with self.pool.connection() as conn:
            found = conn.execute(f"select {INSTANCE_COLUMNS} from taskhub.instances where hub = %s and "
                                 "instance_id = %s", (self.hub, instance_id)).fetchone()
        return _row(found) if found else None

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            rows = conn.execute("select event from taskhub.history where hub = %s and instance_id = %s order by idx",
                                (self.hub, instance_id)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def list_instances(self, statuses: list[str] | None = None, created_from: dt.datetime | None = None,
             created_to: dt.datetime | None = None, prefix: str | None = None, limit: int | None = None,
             offset: int = 0) -> list[InstanceRow]:
        clauses = ["hub = %s"]
        params: list[Any] = [self.hub]
        if statuses:
            clauses.append("status = any(%s)")
            params.append(statuses)
        if created_from:
            clauses.append("created_at >= %s")
            params.append(created_from)
        if created_to:
            clauses.append("created_at <= %s")
            params.append(created_to)
        if prefix:
            clauses.append("starts_with(instance_id, %s)")
            params.append(prefix)
        sql = (f"select {INSTANCE_COLUMNS} from taskhub.instances where {' and '.join(clauses)} "
               "order by created_at, instance_id offset %s")
        params.append(offset)
        if limit:
            sql += " limit %s"
            params.append(limit)
        with self.pool.connection() as conn:
            return [_row(r) for r in conn.execute(sql, params).fetchall()]

    def raise_event(self, instance_id: str, name: str, input_text: str | None) -> None:
        """Queue an external event; one raised before the orchestration waits for it is kept in its history.

        :raises InstanceNotFound: no such instance.
        :raises InstanceNotActive: the instance completed, failed or was terminated.
        """
        now = _now()
        with self.pool.connection() as conn, conn.transaction():
            found = conn.execute("select status from taskhub.instances where hub = %s and instance_id = %s for share",
                                 (self.hub, instance_id)).fetchone()
            if found is None:
                raise InstanceNotFound(f"No instance with ID {instance_id} found.")
            if found[0] in TERMINAL:
                raise InstanceNotActive(f"Instance with ID {instance_id} is gone: it is {found[0]}")
            self._insert_message(conn, instance_id, None, h.event_raised(now, name, input_text), now)

    def terminate(self, instance_id: str, reason: str | None) -> None:
        """:raises InstanceNotFound: no such instance. :raises InstanceNotActive: it already ended."""
        now = _now()
        with self.pool.connection() as conn, conn.transaction():
            found = conn.execute(f"select {INSTANCE_COLUMNS} from taskhub.instances where hub = %s and "
                                 "instance_id = %s for update", (self.hub, instance_id)).fetchone()
            if found is None:
                raise InstanceNotFound(f"No instance with ID '{instance_id}' found.")
            row = _row(found)
            if row.status in TERMINAL:
                raise InstanceNotActive(f"Instance with ID {instance_id} already ended: it is {row.status}")
            count = conn.execute("select count(*) from taskhub.history where hub = %s and instance_id = %s",
                                 (self.hub, instance_id)).fetchone()
            self._append_history(conn, instance_id, row.execution_id, int(count[0]) if count else 0,
                                 [h.execution_terminated(now, reason)])
            output = json.dumps(reason)
            conn.execute("update taskhub.instances set status = 'Terminated', output = %s, updated_at = %s, "
                         "completed_at = %s where hub = %s and instance_id = %s",
                         (output, now, now, self.hub, instance_id))
            conn.execute("delete from taskhub.messages where hub = %s and instance_id = %s", (self.hub, instance_id))
            self._finish(conn, row, "Terminated", output, None, now)

    def purge(self, instance_id: str) -> int:
        """:raises InstanceStillActive: only ended instances can be purged (the extension answers 412)."""
        with self.pool.connection() as conn, conn.transaction():
            found = conn.execute("select status from taskhub.instances where hub = %s and instance_id = %s for update",
                                 (self.hub, instance_id)).fetchone()
            if found is None:
                return 0
            if found[0] not in TERMINAL:
                raise InstanceStillActive(f"Only orchestrations in a terminal state can be purged, but the "
                                          f"orchestration with instance ID {instance_id} has status {found[0]}")
            self._delete_instance(conn, instance_id)
        return 1

    def purge_by(self, created_from: dt.datetime, created_to: dt.datetime | None, statuses: list[str] | None) -> int:
        wanted = [s for s in (statuses or TERMINAL) if s in TERMINAL]
        deleted = 0
        with self.pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                "select instance_id from taskhub.instances where hub = %s and created_at >= %s and created_at <= %s "
                "and status = any(%s) for update", (self.hub, created_from, created_to or _now(), wanted)).fetchall()
            for (instance_id,) in rows:
                self._delete_instance(conn, instance_id)
                deleted += 1
        return deleted

    def _delete_instance(self, conn: psycopg.Connection, instance_id: str) -> None:
        for table in ("history", "messages", "work_items", "instances"):
            conn.execute(f"delete from taskhub.{table} where hub = %s and instance_id = %s",  # noqa: S608
                         (self.hub, instance_id))

    # ---- activities ------------------------------------------------------------------------
    def claim_work(self, limit: int) -> list[WorkItem]:
        # A claim lost in a crash costs nothing (acquire() releases every claim), so it need not wait for fsync.
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("set local synchronous_commit = off")
            rows = conn.execute(
                "update taskhub.work_items set claimed_by = %s where id in (select id from taskhub.work_items "
                "where hub = %s and claimed_by is null order by id limit %s for update skip locked) "
                "returning id, instance_id, execution_id, task_id, name, input",
                (self.owner, self.hub, limit)).fetchall()
        return sorted((WorkItem(*r) for r in rows), key=lambda w: w.id)

    def complete_work(self, results: list[tuple[WorkItem, dict[str, Any]]]) -> int:
        """Commit activity results as messages, each with the deletion of its work item, in one transaction.

        A result whose work item is gone (its instance ended or continued as new) is dropped.
        :returns: how many results were recorded.
        """
        now = _now()
        with self.pool.connection() as conn, conn.transaction():
            deleted = {r[0] for r in conn.execute(
                "delete from taskhub.work_items where id = any(%s) and claimed_by = %s returning id",
                ([item.id for item, _ in results], self.owner)).fetchall()}
            kept = [(item, event) for item, event in results if item.id in deleted]
            if kept:
                with conn.cursor().copy("copy taskhub.messages (hub, instance_id, execution_id, event, visible_at) "
                                        "from stdin") as copy:
                    for item, event in kept:
                        copy.write_row((self.hub, item.instance_id, item.execution_id, json.dumps(event), now))
        return len(kept)

    def outcomes(self, instance_id: str) -> list[tuple[str, str]]:
        """Every recorded ending of an instance (execution id, status): one per completed execution."""
        with self.pool.connection() as conn:
            rows = conn.execute("select execution_id, status from taskhub.outcomes where hub = %s and "
                                "instance_id = %s order by at", (self.hub, instance_id)).fetchall()
        return [(r[0], r[1]) for r in rows]
