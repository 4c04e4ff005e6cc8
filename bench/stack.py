"""What the benchmarks share: the settings of a bench's own stack, and percentiles."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stack_env(name: str, port_base: int, **extra: str) -> dict[str, str]:
    """Settings of a bench's own stack (``.local/bench-{name}-{port_base}``, ports from ``port_base``); explicit
    where a developer's environment could leak in (the devhost defaults the Event Grid topic to its own)."""
    return {
        "CONTINUITY_LOCAL_DIR": str(ROOT / ".local" / f"bench-{name}-{port_base}"),
        "CONTINUITY_AZURITE_BLOB_PORT": str(port_base),
        "CONTINUITY_AZURITE_QUEUE_PORT": str(port_base + 1),
        "CONTINUITY_AZURITE_TABLE_PORT": str(port_base + 2),
        "CONTINUITY_PRIMARY_PORT": str(port_base + 10),
        "CONTINUITY_REPLICA_PORT": str(port_base + 11),
        "CONTINUITY_CONTROL_PORT": str(port_base + 12),
        "CONTINUITY_SANDBOX_PORT": str(port_base + 13),
        "CONTINUITY_DEVHOST_PORT": str(port_base + 20),
        "CONTINUITY_STORAGE_CONNECTION": "",
        "CONTINUITY_CONTROL_DSN": "",
        "CONTINUITY_EVENTGRID_TOPIC_ENDPOINT": "",
        "CONTINUITY_EVENTGRID_TOPIC_KEY": "",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
        **extra,
    }


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def restore_env(saved: Mapping[str, str | None]) -> None:
    """Put back the environment a bench changed (``python -m bench`` runs the next one in this process)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
