"""The routing record clients resolve to find a tenant's writer: a table in the control database.

``routing(scope, writer_host, writer_port, region, version, changed_at)``: one row per tenant (the
scope). Repointing is idempotent: pointing a scope where it already points changes nothing and
reports ``changed=False``, so a retried activity does not bump the version or publish twice. Every
real change bumps ``version``; the caller publishes ``continuity.routing.changed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from continuity.adapters.postgres.connection import connect

DDL = """
create table if not exists routing (
    scope        text        primary key,
    writer_host  text        not null,
    writer_port  int         not null check (writer_port between 1 and 65535),
    region       text        not null,
    version      bigint      not null default 1,
    changed_at   timestamptz not null default now()
)
"""


@dataclass(frozen=True)
class Route:
    scope: str
    writer_host: str
    writer_port: int
    region: str
    version: int
    changed_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "writer_host": self.writer_host, "writer_port": self.writer_port,
                "region": self.region, "version": self.version, "changed_at": self.changed_at.isoformat()}


class RoutingTable:
    """Reads and moves routes in the control database."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        with connect(dsn) as conn:
            conn.execute(DDL)

    def get_route(self, scope: str) -> Route | None:
        """The route of ``scope``, or None when it was never set (clients fall back to the registry)."""
        with connect(self.dsn) as conn:
            row = conn.execute("select scope, writer_host, writer_port, region, version, changed_at from routing "
                               "where scope = %s", (scope,)).fetchone()
        return Route(*row) if row else None

    def list_routes(self) -> list[Route]:
        with connect(self.dsn) as conn:
            rows = conn.execute("select scope, writer_host, writer_port, region, version, changed_at from routing "
                                "order by scope").fetchall()
        return [Route(*r) for r in rows]

    def repoint(self, scope: str, *, writer_host: str, writer_port: int, region: str) -> tuple[Route, bool]:
        """Point ``scope`` at a writer; returns the route and whether it changed (False: already there)."""
        with connect(self.dsn) as conn, conn.transaction():
            row = conn.execute(
                """insert into routing as r (scope, writer_host, writer_port, region)
                   values (%s, %s, %s, %s)
                   on conflict (scope) do update
                      set writer_host = excluded.writer_host, writer_port = excluded.writer_port,
                          region = excluded.region, version = r.version + 1, changed_at = now()
                    where (r.writer_host, r.writer_port, r.region)
                          is distinct from (excluded.writer_host, excluded.writer_port, excluded.region)
                   returning scope, writer_host, writer_port, region, version, changed_at""",
                (scope, writer_host, writer_port, region)).fetchone()
            if row is not None:
                return Route(*row), True
            current = conn.execute("select scope, writer_host, writer_port, region, version, changed_at "
                                   "from routing where scope = %s", (scope,)).fetchone()
        assert current is not None
        return Route(*current), False
