"""Names a validation run gives things, decided without I/O: its instance id and its scratch database.

The orchestrations need them (deterministically, from the Durable context's clock and uuid), the sandbox
adapter needs them to recognise a crashed run's leftovers, so they live here and not in either.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Scratch databases older than this are a crashed run's leftovers; the nightly run sweeps them.
SWEEP_AFTER_MINUTES = 360
SCRATCH_PREFIX = "scratch_"
SCRATCH_RE = re.compile(r"^scratch_([a-z0-9_]+)_([0-9]{14})_([0-9a-f]{6})$")
_MAX_IDENTIFIER = 63


def run_id_for(tenant_id: str, backup_id: str, attempt: int = 1) -> str:
    """The tenant validation's instance id, one per attempt: ``validate-{tenant}-{backup_id}-{attempt}``.

    Per attempt, not per backup: a re-validation (after an error, or forced) is a run of its own, with its
    own evidence record, so the catalog and the chain always list the same attempts.
    """
    return f"validate-{tenant_id}-{backup_id}-{max(1, attempt)}"


def next_attempt(recorded_run_ids: list[str] | set[str], tenant_id: str, backup_id: str) -> int:
    """The attempt number after those recorded (the highest recorded number + 1; 1 when none)."""
    prefix = f"validate-{tenant_id}-{backup_id}-"
    numbers = [int(r[len(prefix):]) for r in recorded_run_ids
               if r.startswith(prefix) and r[len(prefix):].isdigit()]
    return max(numbers, default=0) + 1


def scratch_database_name(tenant_id: str, now: datetime, rand: str) -> str:
    """``scratch_{tenant_}_{ts}_{rand}``, at most 63 bytes (PostgreSQL's identifier limit).

    :param rand: six hex digits that keep two runs in the same second apart.
    """
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    room = _MAX_IDENTIFIER - len(SCRATCH_PREFIX) - len(stamp) - len(rand) - 2
    tenant_part = tenant_id.replace("-", "_")[:room].rstrip("_") or "t"
    return f"{SCRATCH_PREFIX}{tenant_part}_{stamp}_{rand}"


def scratch_created_at(name: str) -> datetime | None:
    """When a scratch database was created, from its name; None for any other database."""
    match = SCRATCH_RE.match(name)
    if not match:
        return None
    return datetime.strptime(match.group(2), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
