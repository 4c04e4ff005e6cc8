"""The tenant page and the evidence page (pure HTML from the facts the page service gathers).

Tenant: its state as the estate shows it, open incidents and pending approvals, trends of restore time
against the RTO, backup age against the RPO and restore size (inline SVG, :mod:`continuity.pages.charts`),
the last runs with every check and its reason, and the backups with status, storage tier and immutability.
Evidence: the chain head, the newest checkpoint (the last clean verification, or the record cadence) and
links to the failover bundles. Every value goes through :func:`continuity.pages.html.esc` where it is placed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from continuity.approvals.pending import PendingApproval
from continuity.catalog.model import CatalogEntry
from continuity.incidents.open import OpenIncident
from continuity.kernel.identity import Principal
from continuity.pages.charts import Point, bar_chart, size
from continuity.pages.html import badge, duration, esc, layout, segment, short_time
from continuity.validation.estate import EstateRow

TREND_RUNS = 30  # runs on the charts (oldest left)
LISTED_RUNS = 10  # runs listed with their checks
FAILING = ("fail", "failed", "error")


@dataclass(frozen=True)
class CheckLine:
    id: str
    status: str
    detail: str


@dataclass(frozen=True)
class RunLine:
    """One validation attempt as the tenant page shows it."""

    run_id: str
    backup_id: str
    started_at: datetime
    outcome: str  # passed, failed, error, running
    verdict: str
    reason: str
    measured_s: float | None
    projected_s: float | None
    backup_age_s: float | None
    restored_bytes: float | None
    checks: tuple[CheckLine, ...]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def run_line(row: Mapping[str, Any]) -> RunLine:
    """A run from the catalog's row: the validation attempt, its checks, and its backup's summary.

    The backup keeps the summary (objectives, verdict) of its *last* run only: an earlier attempt of the same
    backup shows its checks, and its backup age from the two times, but no restore time.
    """
    raw_summary = row.get("summary")
    summary: Mapping[str, Any] = raw_summary if isinstance(raw_summary, Mapping) else {}
    if summary.get("run_id") != row.get("run_id"):
        summary = {}
    raw_objectives = summary.get("objectives")
    objectives: Mapping[str, Any] = raw_objectives if isinstance(raw_objectives, Mapping) else {}
    checks = tuple(CheckLine(str(c.get("id", "")), str(c.get("status", "")), str(c.get("detail", "")))
                   for c in (row.get("checks") or []) if isinstance(c, Mapping))
    started: datetime = row["started_at"]
    created = row.get("backup_created_at")
    age = _float(objectives.get("backup_age_s"))
    if age is None and isinstance(created, datetime):
        age = (started - created).total_seconds()
    failing = [c for c in checks if c.status.lower() in FAILING]
    reason = str(summary.get("reason") or (f"{failing[0].id}: {failing[0].detail}" if failing else ""))
    return RunLine(run_id=str(row.get("run_id", "")), backup_id=str(row.get("backup_id", "")), started_at=started,
                   outcome=str(row.get("outcome", "")), verdict=str(summary.get("verdict") or row.get("outcome", "")),
                   reason=reason, measured_s=_float(objectives.get("measured_s")),
                   projected_s=_float(objectives.get("projected_s")), backup_age_s=age,
                   restored_bytes=_float(objectives.get("restored_bytes")), checks=checks)


def immutability(entry: CatalogEntry, now: datetime) -> str:
    """What the catalog records of a backup's immutability at ``now``, in words."""
    hold = "; legal hold" if entry.legal_hold else ""
    if entry.immutable_until is None:
        return "not immutable" + hold
    when = entry.immutable_until.strftime("%Y-%m-%d")
    return (f"immutable until {when}" if entry.immutable_until > now else f"immutability ended {when}") + hold


@dataclass(frozen=True)
class TenantView:
    row: EstateRow
    runs: tuple[RunLine, ...]  # newest first
    backups: tuple[CatalogEntry, ...]  # newest first
    incidents: tuple[OpenIncident, ...] = ()
    approvals: tuple[PendingApproval, ...] = ()
    # The server's WAL archive as the catalog last recorded it (servers we run); None: no archive.
    archive: dict[str, Any] | None = None


def _minutes(seconds: float) -> str:
    return duration(seconds)


def _open_items(incidents: Sequence[OpenIncident], approvals: Sequence[PendingApproval]) -> str:
    items = [f'<li class="incident">Backup incident <code>{esc(i.instance_id)}</code>: {esc(i.stage)}'
             + (f", RPO {esc(i.level.lower().replace('_', ' '))}" if i.level else "") + "</li>" for i in incidents]
    items += [f'<li class="approval">{esc(a.kind.capitalize())}{" DRILL" if a.drill else ""} awaiting approval: '
              f'<a href="/api/approvals">{esc(a.instance_id)}</a>, expires '
              f"{esc(a.request.expires_at.isoformat(timespec='seconds'))}</li>" for a in approvals]
    if not items:
        return '<p class="empty" id="open-none">No open incident and no pending approval.</p>'
    return f'<ul id="open-items">{"".join(items)}</ul>'


def _archive(archive: dict[str, Any] | None, rpo_s: float, now: datetime) -> str:
    """The point-in-time window of the tenant's server: what `recover --to` can reach, and the exposure."""
    if archive is None:
        return ('<p class="empty" id="archive-none">Its server keeps no WAL archive of ours: recovery goes back to '
                "a backup.</p>")
    earliest, latest = archive.get("earliest"), archive.get("latest")
    if earliest is None or latest is None:
        why = f"segment {archive.get('gap')} is missing" if archive.get("gap") else "no base backup yet"
        return f'<p class="f-fail" id="archive-broken">Not restorable to a point in time: {esc(why)}.</p>'
    exposure = max(0.0, (now - latest).total_seconds())
    over = exposure > rpo_s
    gap = (f'<dt>Gap</dt><dd class="f-fail">segment <code>{esc(archive["gap"])}</code> missing: older base '
           "backups cannot replay past it</dd>") if archive.get("gap") else ""
    return ('<dl class="facts" id="archive">'
            f"<dt>Any second from</dt><dd>{esc(earliest.isoformat(timespec='seconds'))}</dd>"
            f"<dt>to</dt><dd>{esc(latest.isoformat(timespec='seconds'))} (newest segment "
            f"<code>{esc(archive.get('newest_segment') or '')}</code>)</dd>"
            f'<dt>Exposure</dt><dd class="{"f-fail" if over else "ok"}">{esc(duration(exposure))} of writes not yet '
            f"archived{' — over the RPO' if over else ''}</dd>"
            f"<dt>Base backups</dt><dd>{esc(len(archive.get('base_backups') or []))}</dd>{gap}"
            f"<dt>Recorded</dt><dd>{esc(archive['refreshed_at'].isoformat(timespec='seconds'))}</dd></dl>")


def _checks(run: RunLine) -> str:
    if not run.checks:
        return '<span class="empty">no checks recorded</span>'
    lines = []
    for c in run.checks:
        cls = "f-fail" if c.status.lower() in FAILING else "f-warn" if c.status.lower() == "warn" else ""
        lines.append(f'<li data-check="{esc(c.id)}"><code>{esc(c.id)}</code> '
                     f'<span class="{cls}">{esc(c.status)}</span>: {esc(c.detail)}</li>')
    return f'<ul class="checks">{"".join(lines)}</ul>'


def tenant_page(view: TenantView, *, principal: Principal, now: datetime) -> str:
    r = view.row
    trend = list(reversed(view.runs[:TREND_RUNS]))
    rto_s, rpo_s = r.rto_minutes * 60.0, r.rpo_minutes * 60.0
    charts = (
        bar_chart(f"{r.tenant}: restore and validation time per run against the RTO",
                  [Point(x.backup_id, x.measured_s, x.projected_s) for x in trend], _minutes, limit=rto_s,
                  limit_label=f"RTO {r.rto_minutes} min", second_label="projected at production size",
                  chart_id="chart-rto"),
        bar_chart(f"{r.tenant}: backup age at run time against the RPO",
                  [Point(x.backup_id, x.backup_age_s) for x in trend], _minutes, limit=rpo_s,
                  limit_label=f"RPO {r.rpo_minutes} min", chart_id="chart-rpo"),
        bar_chart(f"{r.tenant}: restored size per run", [Point(x.backup_id, x.restored_bytes) for x in trend],
                  size, chart_id="chart-size"),
    )
    runs = []
    for x in view.runs[:LISTED_RUNS]:
        cls = "ok" if x.outcome == "passed" else "f-fail"
        runs.append(f'<tr data-run="{esc(x.run_id)}"><td class="num">{esc(short_time(x.started_at.isoformat()))}</td>'
                    f"<td><code>{esc(x.backup_id)}</code></td><td class=\"{cls}\">{esc(x.outcome)}</td>"
                    f'<td class="reason">{esc(x.verdict)}: {esc(x.reason)}</td><td>{_checks(x)}</td></tr>')
    backups = []
    for b in view.backups:
        reason = f'<br><span class="name">{esc(b.status_reason)}</span>' if b.status_reason else ""
        backups.append(
            f'<tr data-backup="{esc(b.backup_id)}"><td><code>{esc(b.backup_id)}</code></td>'
            f"<td class=\"num\">{esc(short_time(b.created_at.isoformat()))}</td><td>{esc(b.kind)}</td>"
            f'<td class="status">{esc(b.status)}{reason}</td><td>{esc(b.storage_tier or "hot")}</td>'
            f'<td class="immutability">{esc(immutability(b, now))}</td>'
            f'<td class="num">{esc(size(b.dump_size) if b.dump_size is not None else "—")}</td></tr>')
    body = (
        f'<p><a href="/api/dashboard">\u2190 Estate</a></p>'
        f'<h2 id="tenant" data-tenant="{esc(r.tenant)}">{esc(r.tenant)} <span class="name">{esc(r.name)}</span></h2>'
        '<dl class="facts">'
        f'<dt>State</dt><dd id="state">{badge(r.state)}</dd><dt>Reason</dt><dd class="reason">{esc(r.reason)}</dd>'
        f"<dt>Tier</dt><dd>{esc(r.tier)}: RTO {esc(r.rto_minutes)} min, RPO {esc(r.rpo_minutes)} min</dd>"
        f"<dt>RPO margin</dt><dd>{esc(duration(r.rpo_margin_s))}</dd></dl>"
        f'<h3>Open incidents and approvals</h3>{_open_items(view.incidents, view.approvals)}'
        f'<h3>Point-in-time window</h3>{_archive(view.archive, rpo_s, now)}'
        f'<h3>Trends (last {len(trend)} runs, oldest left)</h3><div class="charts">{"".join(charts)}</div>'
        '<p class="legend">Bars: measured; a bar over its limit is drawn red and says "over" in its tooltip; '
        "circles: the restore time projected at production size.</p>"
        f'<h3>Last runs</h3><table id="runs"><thead><tr><th scope="col">Started</th><th scope="col">Backup</th>'
        '<th scope="col">Outcome</th><th scope="col">Verdict and reason</th><th scope="col">Checks</th></tr></thead>'
        f'<tbody>{"".join(runs) or "<tr><td colspan=5 class=empty>No validation run yet.</td></tr>"}</tbody></table>'
        f'<h3>Backups (newest {len(view.backups)})</h3><table id="backups"><thead><tr><th scope="col">Backup</th>'
        '<th scope="col">Created</th><th scope="col">Kind</th><th scope="col">Status</th>'
        '<th scope="col">Storage tier</th><th scope="col">Immutability</th><th scope="col">Dump size</th></tr></thead>'
        f'<tbody>{"".join(backups) or "<tr><td colspan=7 class=empty>No backup cataloged.</td></tr>"}</tbody></table>')
    return layout(f"Tenant {r.tenant}", body, principal=principal)


# ---- evidence ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A failover's evidence bundle: ``bundles/failover/{instance}/{run}.json`` in the evidence container."""

    instance_id: str
    run_id: str
    blob: str

    @property
    def href(self) -> str:
        return f"/api/evidence/bundles/{segment(self.instance_id)}/{segment(self.run_id)}"


@dataclass(frozen=True)
class EvidenceView:
    head_seq: int
    head_hash: str
    checkpoint_seq: int | None
    checkpoint_hash: str | None
    checkpoint_at: datetime | None
    immutability: str  # what the store enforces, in words
    bundles: tuple[Bundle, ...]


def evidence_page(view: EvidenceView, *, principal: Principal) -> str:
    if view.checkpoint_seq is None:
        checkpoint = '<span class="empty">no checkpoint yet: run <code>continuity evidence verify</code></span>'
    else:
        behind = view.head_seq - view.checkpoint_seq
        checkpoint = (f'seq <span id="checkpoint-seq">{esc(view.checkpoint_seq)}</span> at '
                      f"{esc(view.checkpoint_at.isoformat(timespec='seconds') if view.checkpoint_at else '')}, "
                      f"hash <code>{esc(view.checkpoint_hash)}</code> ({esc(behind)} record(s) since)")
    bundles = "".join(f'<li><a href="{esc(b.href)}">{esc(b.instance_id)} / {esc(b.run_id)}</a> '
                      f"<code>{esc(b.blob)}</code></li>" for b in view.bundles)
    body = (
        "<h2>Evidence</h2>"
        '<dl class="facts">'
        f'<dt>Chain head</dt><dd>seq <span id="head-seq">{esc(view.head_seq)}</span>, hash '
        f'<code id="head-hash">{esc(view.head_hash)}</code></dd>'
        f"<dt>Last verification</dt><dd>{checkpoint}</dd>"
        f"<dt>Immutability</dt><dd>{esc(view.immutability)}</dd></dl>"
        '<p class="legend">A checkpoint is written by every clean <code>continuity evidence verify</code> and every '
        "100th record. An auditor verifies from storage alone: <code>continuity evidence verify --storage-only "
        "--expect-head SEQ:HASH</code>.</p>"
        f'<h3>Failover bundles ({len(view.bundles)})</h3>'
        + (f'<ul id="bundles">{bundles}</ul>' if bundles else '<p class="empty" id="no-bundles">No bundle in your '
           "scope yet.</p>"))
    return layout("Evidence", body, principal=principal)
