"""The timed steps of an approval-gated workflow (regional failover, tenant recovery) and their timings.

It lives in the kernel, not in ``continuity.approvals.rules``: a step's record is not an approval matter,
and every rules module already imports the kernel while the kernel imports none of them, so both
``continuity.failover.rules`` and ``continuity.recovery.rules`` use it without a new dependency (and
``continuity.recovery.rules`` does not have to start depending on approvals). Pure: times come in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StepTiming:
    """One step as it ran: when, whether it did what it promised, and what it says about it.

    ``step`` is the workflow's own step name (its ``StepName``, a ``StrEnum``, so it equals its text).
    """

    step: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {"step": str(self.step), "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat(), "seconds": round(self.seconds, 3), "ok": self.ok,
                "detail": self.detail, "data": self.data}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> StepTiming:
        return cls(step=str(raw["step"]), started_at=datetime.fromisoformat(raw["started_at"]),
                   finished_at=datetime.fromisoformat(raw["finished_at"]), ok=bool(raw["ok"]),
                   detail=str(raw["detail"]), data=dict(raw.get("data", {})))


@dataclass(frozen=True)
class Milestones:
    """Which steps mark a workflow's service being back, and the keys its timings name them by.

    ``live_step``: the first successful step of that name puts the service back (reported as
    ``live_key``, seconds from approval). ``outage_from``: the step whose start takes it away (reported
    as ``outage_key``, seconds until ``live_step`` finished); None when the workflow reports no outage.
    """

    live_key: str
    live_step: str
    outage_key: str | None = None
    outage_from: str | None = None


def timings(requested_at: datetime, approved_at: datetime | None, steps: Sequence[StepTiming],
            finished_at: datetime | None, milestones: Milestones) -> dict[str, float | None]:
    """Seconds per phase: request→approval wait, each step (summed when it ran more than once), approval→live
    again (``milestones.live_key``), the outage (``milestones.outage_key``, when named), and the total."""
    out: dict[str, float | None] = {
        "approval_wait": round((approved_at - requested_at).total_seconds(), 3) if approved_at else None}
    for s in steps:
        out[str(s.step)] = round((out.get(str(s.step)) or 0.0) + s.seconds, 3)
    live = next((s for s in steps if s.step == milestones.live_step and s.ok), None)
    out[milestones.live_key] = (round((live.finished_at - approved_at).total_seconds(), 3)
                                if live and approved_at else None)
    if milestones.outage_key is not None:
        down = next((s for s in steps if s.step == milestones.outage_from), None)
        out[milestones.outage_key] = (round((live.finished_at - down.started_at).total_seconds(), 3)
                                      if live and down else None)
    out["total"] = round((finished_at - requested_at).total_seconds(), 3) if finished_at else None
    return out
