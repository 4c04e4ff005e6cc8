"""Read-only catalog queries the pages need beyond the catalog store's own: a tenant's runs with their checks.

``catalog.validations`` keeps every attempt with its checks (id, status, detail); the backup row keeps the
summary (objectives, verdict) of its last attempt. One query joins both, newest attempt first, walking
``validations_backup`` per backup of the tenant.
"""

from __future__ import annotations

import json
from typing import Any

from continuity.adapters.postgres.connection import connect


def tenant_runs(dsn: str, tenant: str, limit: int = 30) -> list[dict[str, Any]]:
    """The tenant's newest ``limit`` validation attempts, newest first, each with its checks and its backup's
    creation time and last summary (keys: run_id, backup_id, started_at, finished_at, outcome, checks,
    backup_created_at, summary)."""
    sql = """
        select v.run_id, v.backup_id, v.started_at, v.finished_at, v.outcome, v.checks, b.created_at,
               b.last_validation
        from catalog.validations v join catalog.backups b using (tenant, backup_id)
        where v.tenant = %s
        order by v.started_at desc, v.id desc
        limit %s"""
    with connect(dsn) as conn:
        rows = conn.execute(sql, (tenant, limit)).fetchall()
    out = []
    for run_id, backup_id, started_at, finished_at, outcome, checks, created_at, summary in rows:
        out.append({"run_id": str(run_id), "backup_id": str(backup_id), "started_at": started_at,
                    "finished_at": finished_at, "outcome": str(outcome),
                    "checks": json.loads(checks) if isinstance(checks, str) else checks or [],
                    "backup_created_at": created_at,
                    "summary": json.loads(summary) if isinstance(summary, str) else summary})
    return out
