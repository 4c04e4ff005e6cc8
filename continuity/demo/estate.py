"""A synthetic estate of many tenants as catalog rows, for the pages' browser tests and benchmark (pure).

No database dump is taken: each tenant gets registry entries, cataloged backups and recorded validation
attempts shaped as the real pipeline records them, in every estate state. The same ``(count, now, seed)``
always gives the same estate. The caller writes the rows through the catalog store
(``insert_missing`` then ``record_validation``), the real write path.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from continuity.catalog.manifest import backup_prefix
from continuity.catalog.model import BackupStatus, CatalogEntry

TIERS = {"gold": (60, 15), "silver": (240, 60), "bronze": (1440, 1440)}  # rto, rpo minutes (config/tenants.yaml)
CHECKS = ("file_checksum", "archive_safe", "schema_present", "tenant_fingerprint", "row_counts", "ledger",
          "invoice_numbering", "attachments", "indexes")


@dataclass(frozen=True)
class SyntheticEstate:
    tenants: list[dict[str, Any]]  # registry entries (config/tenants.yaml's shape)
    entries: list[CatalogEntry]  # cataloged backups, AVAILABLE until their validation is recorded
    validations: list[dict[str, Any]]  # keyword arguments of the catalog's record_validation, oldest first


def _validation(tenant: str, tier: str, backup_id: str, created: datetime, failed: bool,
                rng: random.Random, now: datetime) -> dict[str, Any]:
    rto, rpo = TIERS[tier]
    measured = rng.uniform(20, 400)
    # a few minutes after the backup, and finished before ``now`` (a recent backup was validated just now)
    latest = now - timedelta(seconds=measured + 30)
    started = max(created, min(created + timedelta(minutes=rng.randint(2, 20)), latest))
    restored = rng.randint(5, 900) * 1_000_000
    finished = started + timedelta(seconds=measured)
    run_id = f"validate-{tenant}-{backup_id}-1"
    checks: list[dict[str, Any]] = [{"id": c, "status": "fail" if failed and c == "ledger" else "pass",
               "detail": ("posted move 4711 is unbalanced by 0.01 EUR" if failed and c == "ledger" else "ok"),
               "duration_s": round(rng.uniform(0.1, 30), 3), "data": {}} for c in CHECKS]
    objectives = {"rto_s": rto * 60.0, "rpo_s": rpo * 60.0, "measured_s": round(measured, 3),
                  "restored_bytes": restored, "production_size_bytes": restored * 2,
                  "projected_s": round(measured * 2, 3), "backup_age_s": (started - created).total_seconds(),
                  "rto_met": measured * 2 <= rto * 60, "rpo_met": (started - created).total_seconds() <= rpo * 60}
    within = not failed and bool(objectives["rto_met"]) and bool(objectives["rpo_met"])
    verdict = "not_recoverable" if failed else "recoverable" if within else "recoverable_outside_objectives"
    summary = {"run_id": run_id, "tenant": tenant, "backup_id": backup_id, "outcome": "failed" if failed else "passed",
               "verdict": verdict,
               "reason": ("ledger: posted move 4711 is unbalanced by 0.01 EUR" if failed
                          else "every check passed; restore projected within RTO" if within
                          else "every check passed; restore projected outside RTO"),
               "within_objectives": within, "failed_checks": ["ledger"] if failed else [],
               "checks": {c["id"]: c["status"] for c in checks}, "objectives": objectives,
               "started_at": started.isoformat(), "finished_at": finished.isoformat()}
    return {"tenant": tenant, "backup_id": backup_id, "run_id": run_id, "started_at": started,
            "finished_at": finished, "passed": not failed, "checks": checks,
            "durations": {c["id"]: c["duration_s"] for c in checks}, "summary": summary}


def synthetic_estate(count: int, now: datetime, *, prefix: str = "t", server: str = "weu-primary",
                     backups: int = 3, seed: int = 19, mix: Sequence[int] | None = None) -> SyntheticEstate:
    """``count`` tenants ``{prefix}0000-{tier}``, ``backups`` daily backups each, in a mix of states.

    By default (``mix`` 0-9, tenant ``i`` is of kind ``mix[i % len(mix)]``) one tenant in ten has no backup
    (kind 0: never validated), one backups never validated (1), one a failed ledger (2), one a newest backup
    older than its RPO (3); the rest are validated within their objectives (4-9).
    """
    kinds = tuple(mix) if mix else tuple(range(10))
    rng = random.Random(seed)
    tenants: list[dict[str, Any]] = []
    entries: list[CatalogEntry] = []
    validations: list[dict[str, Any]] = []
    for i in range(count):
        tier = ("gold", "silver", "bronze")[i % 3]
        tid = f"{prefix}{i:04d}-{tier}"
        tenants.append({"id": tid, "name": f"Synthetic {i:04d} {tier.title()} BV", "tier": tier, "server": server,
                        "database": tid.replace("-", "_"), "primary_region": "westeurope",
                        "secondary_region": "northeurope"})
        kind = kinds[i % len(kinds)]
        if kind == 0:
            continue
        rpo = TIERS[tier][1]
        newest_age = timedelta(minutes=rpo * 3 if kind == 3 else rng.uniform(1, rpo * 0.6))
        for n in range(backups):
            created = (now - newest_age - timedelta(days=backups - 1 - n)).replace(microsecond=0)
            backup_id = f"{created:%Y%m%dT%H%M%SZ}-{rng.getrandbits(24):06x}"
            newest = n == backups - 1
            entries.append(CatalogEntry(
                tenant=tid, backup_id=backup_id, status=BackupStatus.AVAILABLE, created_at=created,
                container="backups", prefix=backup_prefix(tid, backup_id, created), completed_at=created,
                dump_size=rng.randint(1, 900) * 1_000_000, storage_tier="hot" if newest else "cool",
                immutable_until=created + timedelta(days=7 if tier != "gold" else 30)))
            if kind == 1:
                continue  # backups that await their first validation
            validations.append(_validation(tid, tier, backup_id, created, failed=kind == 2 and newest, rng=rng,
                                           now=now))
    return SyntheticEstate(tenants, entries, validations)
