"""Shared by the failover integration, end-to-end tests and the bench: a dedicated throwaway stack and a
writer that commits numbered rows, so lost commits can be counted after a failover."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import psycopg

from continuity.adapters.local_stack import LocalStack
from continuity.settings import LocalStackSettings


def dedicated_settings(port_base: int, name: str = "failover", offset: int = 40) -> LocalStackSettings:
    """Settings for a stack of its own: promoting its replica harms no other test."""
    base = LocalStackSettings.from_env()
    port_base += offset - 40
    return replace(base, base_dir=base.base_dir.parent / f"{base.base_dir.name}-{name}",
                   primary_port=port_base + 40, replica_port=port_base + 41, control_port=port_base + 42,
                   sandbox_port=port_base + 43, azurite_blob_port=base.azurite_blob_port,
                   azurite_queue_port=base.azurite_queue_port, azurite_table_port=base.azurite_table_port)


@contextlib.contextmanager
def dedicated_stack(port_base: int, name: str = "failover", offset: int = 40,
                    keep: bool = False) -> Iterator[LocalStack]:
    """Clusters only (Azurite stays the shared one): up at entry, down and deleted at exit."""
    stack = LocalStack(dedicated_settings(port_base, name, offset))
    stack.up_clusters()
    try:
        yield stack
    finally:
        if not keep:
            stack.down_clusters()
            shutil.rmtree(stack.base, ignore_errors=True)


class Writer(threading.Thread):
    """Commits ``insert into ledger(n)`` with n = 1, 2, 3 ... as fast as it can; remembers every n whose
    commit was acknowledged. Connection errors (fence, termination) are counted and retried."""

    def __init__(self, dsn: str, table: str = "failover_ledger") -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.table = table
        self.acked: list[int] = []
        self.errors = 0
        self.refused = 0
        self._stop_event = threading.Event()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"create table if not exists {table} (n bigint primary key, at timestamptz default now())")
            row = conn.execute(f"select coalesce(max(n), 0) from {table}").fetchone()
        self.next_n = int(row[0]) + 1 if row else 1

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop_event.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                n = self.next_n
                conn.execute(f"insert into {self.table} (n) values (%s)", (n,))
                self.acked.append(n)
                self.next_n += 1
            except psycopg.errors.ReadOnlySqlTransaction:
                self.refused += 1
                time.sleep(0.01)
            except psycopg.Error:
                self.errors += 1
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def lost_on(self, dsn: str) -> list[int]:
        """Acknowledged commits missing from the server at ``dsn``."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            present = {r[0] for r in conn.execute(f"select n from {self.table}")}
        return [n for n in self.acked if n not in present]
