"""Which backup incidents are still open, per tenant, as the estate page shows them (pure).

A backup incident runs as ``incident-{event id}`` (:mod:`orchestrations.backup_incident`); while it runs,
its custom status says its stage and, once measured, its RPO exposure (which names the tenant). The input
names the tenant from the start, when the host shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "incident-"
ORCHESTRATION = "backup_incident"


@dataclass(frozen=True)
class OpenIncident:
    instance_id: str
    tenant: str
    stage: str  # "measured", "retrying", ... or "started" before the first status
    level: str  # the RPO exposure level ("WITHIN", "AT_RISK", "BREACHED"), "" before it is measured


def _tenant(custom: Mapping[str, Any], given: Any) -> str:
    exposure = custom.get("exposure")
    if isinstance(exposure, Mapping) and exposure.get("tenant"):
        return str(exposure["tenant"])
    if isinstance(given, Mapping) and given.get("tenant"):
        return str(given["tenant"])
    return ""


def open_incidents(instances: Iterable[tuple[str, str | None, Any, Any]]) -> dict[str, list[OpenIncident]]:
    """Running incidents by tenant; one whose tenant cannot be read yet is listed under ``""``.

    :param instances: ``(instance id, orchestration name, custom status, input)`` of running instances.
    """
    found: dict[str, list[OpenIncident]] = {}
    for instance_id, name, custom, given in instances:
        if not instance_id.startswith(PREFIX) or name not in (None, ORCHESTRATION):
            continue
        status = custom if isinstance(custom, Mapping) else {}
        if status.get("stage") == "done":
            continue
        exposure = status.get("exposure")
        level = str(exposure.get("level", "")) if isinstance(exposure, Mapping) else ""
        tenant = _tenant(status, given)
        found.setdefault(tenant, []).append(
            OpenIncident(instance_id, tenant, str(status.get("stage") or "started"), level))
    for incidents in found.values():
        incidents.sort(key=lambda i: i.instance_id)
    return found
