"""The recoverability report: one self-contained HTML page (inline CSS and SVG, no external assets).

Per tenant: the latest verdict, a chart of restore+validation time per run against the RTO (measured
and, when scaled to production size, projected), and a chart of backup age at run time against the
RPO. Pure: it renders the rows it is given; the CLI gathers them from the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 560, 180, 56, 12, 14, 28


@dataclass(frozen=True)
class Run:
    """One validation run as the report needs it (from the catalog's summary of the run)."""

    backup_id: str
    started_at: datetime
    outcome: str
    verdict: str
    reason: str
    measured_s: float | None
    projected_s: float | None
    backup_age_s: float | None
    failed_checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class TenantSection:
    tenant: str
    name: str
    tier: str
    rto_minutes: int
    rpo_minutes: int
    runs: tuple[Run, ...] = ()
    standing: Mapping[str, Any] = field(default_factory=dict)


def run_from_history(row: Mapping[str, Any]) -> Run:
    summary = row.get("summary") or {}
    objectives = summary.get("objectives") or {}
    started = row["started_at"]
    if isinstance(started, str):
        started = datetime.fromisoformat(started)
    return Run(backup_id=str(row["backup_id"]), started_at=started, outcome=str(row.get("outcome", "")),
               verdict=str(summary.get("verdict", row.get("outcome", ""))), reason=str(summary.get("reason", "")),
               measured_s=objectives.get("measured_s"), projected_s=objectives.get("projected_s"),
               backup_age_s=objectives.get("backup_age_s"), failed_checks=tuple(summary.get("failed_checks") or ()))


def _fmt_minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def line_chart(title: str, points: Sequence[tuple[str, float | None]], limit_s: float, limit_label: str,
               second: Sequence[float | None] | None = None, second_label: str = "") -> str:
    """An inline SVG: a bar per run (red over the limit), an optional second series as circles, the limit as a line."""
    values = [v for _, v in points if v is not None] + [v for v in (second or []) if v is not None]
    top = max([limit_s * 1.15, *values, 1.0])
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    n = max(1, len(points))
    step = plot_w / n
    bar_w = max(2.0, min(28.0, step * 0.6))

    def y(v: float) -> float:
        return PAD_T + plot_h - (v / top) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for frac in (0.0, 0.5, 1.0):
        v = top * frac
        parts.append(f'<text x="{PAD_L - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">'
                     f'{_fmt_minutes(v)}</text>')
    for i, (label, value) in enumerate(points):
        x = PAD_L + step * i + (step - bar_w) / 2
        if value is None:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{PAD_T + plot_h - 4}" font-size="9" '
                         f'text-anchor="middle" fill="#999">n/a</text>')
            continue
        v = float(value)
        colour = "#c0392b" if v > limit_s else "#2e86c1"
        # A run far inside its limit would be an invisible sliver: keep 2 px, and print the value above it.
        height = max(2.0, PAD_T + plot_h - y(v))
        parts.append(f'<rect x="{x:.1f}" y="{PAD_T + plot_h - height:.1f}" width="{bar_w:.1f}" height="{height:.1f}" '
                     f'fill="{colour}"><title>{escape(label)}: {_fmt_minutes(v)}</title></rect>')
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{PAD_T + plot_h - height - 3:.1f}" font-size="9" '
                     f'text-anchor="middle" fill="{colour}">{escape(_fmt_minutes(v))}</text>')
        if second is not None and i < len(second) and second[i] is not None and second[i] != v:
            s = float(second[i] or 0.0)
            parts.append(f'<circle cx="{x + bar_w / 2:.1f}" cy="{y(s):.1f}" r="3.5" fill="none" stroke="#8e44ad" '
                         f'stroke-width="2"><title>{escape(label)} {escape(second_label)}: {_fmt_minutes(s)}'
                         f'</title></circle>')
    if n <= 12:
        for i, (label, _) in enumerate(points):
            short = f"{label[4:8]}-{label[9:13]}" if len(label) > 13 else label  # MMDD-HHMM of a backup id
            parts.append(f'<text x="{PAD_L + step * i + step / 2:.1f}" y="{HEIGHT - 14}" font-size="9" '
                         f'text-anchor="middle">{escape(short)}</text>')
    parts.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y(limit_s):.1f}" y2="{y(limit_s):.1f}" '
                 f'stroke="#c0392b" stroke-dasharray="5,3"/>')
    parts.append(f'<text x="{PAD_L + plot_w - 2}" y="{y(limit_s) - 3:.1f}" font-size="10" text-anchor="end" '
                 f'fill="#c0392b">{escape(limit_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _tenant_html(section: TenantSection) -> str:
    runs = list(section.runs)
    labels = [r.backup_id for r in runs]
    rto_s, rpo_s = section.rto_minutes * 60.0, section.rpo_minutes * 60.0
    restore_chart = line_chart(f"{section.tenant}: restore + validation time per run against RTO",
                               list(zip(labels, [r.measured_s for r in runs], strict=True)), rto_s,
                               f"RTO {section.rto_minutes} min", [r.projected_s for r in runs],
                               "projected at production size")
    age_chart = line_chart(f"{section.tenant}: backup age at run time against RPO",
                           list(zip(labels, [r.backup_age_s for r in runs], strict=True)), rpo_s,
                           f"RPO {section.rpo_minutes} min")
    standing = section.standing
    ok = bool(standing.get("recoverable_within_objectives"))
    badge = ('<span class="ok">recoverable within objectives</span>' if ok
             else '<span class="bad">not proven within objectives</span>')
    rows = "".join(
        f"<tr><td>{escape(r.started_at.strftime('%Y-%m-%d %H:%M'))}</td><td><code>{escape(r.backup_id)}</code></td>"
        f"<td class=\"{'ok' if r.outcome == 'passed' else 'bad'}\">{escape(r.outcome)}</td>"
        f"<td>{escape(r.verdict)}</td><td>{escape(', '.join(r.failed_checks) or '-')}</td>"
        f"<td>{escape(r.reason)}</td></tr>" for r in reversed(runs[-20:]))
    return (f'<section id="tenant-{escape(section.tenant)}">'
            f'<h2>{escape(section.tenant)} <small>{escape(section.name)} · tier {escape(section.tier)} · '
            f'RTO {section.rto_minutes} min · RPO {section.rpo_minutes} min</small></h2>'
            f'<p>{badge} — {escape(str(standing.get("reason", "no validation recorded")))}</p>'
            f'<div class="charts">{restore_chart}{age_chart}</div>'
            f'<p class="legend">Bars: measured restore + validation time (red when over the limit); circles: '
            f'projected at production size, <code>measured × production_size / restored_size</code>.</p>'
            f'<table><tr><th>run</th><th>backup</th><th>outcome</th><th>verdict</th><th>failed checks</th>'
            f'<th>reason</th></tr>{rows or "<tr><td colspan=6>no validation runs yet</td></tr>"}</table></section>')


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{margin-bottom:0}small{color:#666;font-weight:normal;font-size:60%}
.ok{color:#1e8449;font-weight:600}.bad{color:#c0392b;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px}table{border-collapse:collapse;font-size:13px;margin-top:8px}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}.legend{font-size:12px;color:#555}
section{border-top:2px solid #eee;margin-top:1.5em;padding-top:.5em}
"""


def render_html(sections: Sequence[TenantSection], generated_at: datetime,
                chain_head: Mapping[str, Any] | None, overview: str = "", overview_css: str = "") -> str:
    """The whole report; every byte inline (an auditor can archive the file alone).

    :param overview: HTML placed first, before the tenants' sections: the estate overview of the live page
        (:func:`continuity.pages.html.estate_overview`, static), with its stylesheet ``overview_css``.
    """
    within = sum(1 for s in sections if s.standing.get("recoverable_within_objectives"))
    head = (f"evidence chain head: seq {chain_head.get('seq')}, hash <code>{escape(str(chain_head.get('hash')))}</code>"
            if chain_head else "evidence chain head: unavailable")
    body = "".join(_tenant_html(s) for s in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Recoverability report</title>"
            f"<style>{overview_css}{CSS}</style></head><body><h1>Recoverability report</h1>"
            f"<p>Generated {escape(generated_at.isoformat(timespec='seconds'))} · {within} of {len(sections)} "
            f"tenant(s) recoverable within objectives · {head}</p>{overview}{body}</body></html>")
