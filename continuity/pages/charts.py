"""Inline SVG charts for the pages (pure): a bar per run, an optional limit line, every label escaped.

A chart is an ``<svg role="img">`` with a ``<title>`` naming what it shows, so a screen reader reads the
title and the per-bar ``<title>`` values; a bar over its limit is drawn in the "missed" colour *and* has
"over" in its text, never colour alone. No script, no external asset: the CSP of the pages allows it.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 420, 170, 58, 10, 14, 30
BAR, OVER, SECOND, LIMIT = "#2e6fbd", "#b3261e", "#6f42c1", "#b3261e"


@dataclass(frozen=True)
class Point:
    """One bar: its label (a backup id or a date), its value (None: not measured) and an optional second value."""

    label: str
    value: float | None
    second: float | None = None


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def short_label(label: str) -> str:
    """``20261124T020000Z-a1b2c3`` as ``11-24 02:00``; other labels as they are (cut to 12 characters)."""
    if len(label) >= 15 and label[8] == "T" and label[:8].isdigit():
        return f"{label[4:6]}-{label[6:8]} {label[9:11]}:{label[11:13]}"
    return label[:12]


def bar_chart(title: str, points: Sequence[Point], fmt: Callable[[float], str], *, limit: float | None = None,
              limit_label: str = "", second_label: str = "", chart_id: str = "") -> str:
    """Bars in order (oldest left), a dashed limit line when ``limit`` is given, circles for ``second`` values.

    :param fmt: how a value reads (``12 min``, ``4.2 MB``): axis ticks, bar labels and tooltips use it.
    """
    values = [p.value for p in points if p.value is not None] + [p.second for p in points if p.second is not None]
    top = max([(limit or 0.0) * 1.15, *values, 1e-9]) * 1.05
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    step = plot_w / max(1, len(points))
    bar_w = max(2.0, min(26.0, step * 0.6))

    def y(v: float) -> float:
        return PAD_T + plot_h - (v / top) * plot_h

    ident = f' id="{_esc(chart_id)}"' if chart_id else ""
    parts = [f'<svg{ident} class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{_esc(title)}"><title>{_esc(title)}</title>',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" stroke="#d0d7de"/>']
    for frac in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{PAD_L - 4}" y="{y(top * frac) + 4:.1f}" font-size="10" text-anchor="end">'
                     f"{_esc(fmt(top * frac))}</text>")
    if not points:
        parts.append(f'<text x="{PAD_L + plot_w / 2:.1f}" y="{PAD_T + plot_h / 2:.1f}" font-size="12" '
                     'text-anchor="middle" fill="#57606a">no runs yet</text>')
    for i, p in enumerate(points):
        x = PAD_L + step * i + (step - bar_w) / 2
        mid = x + bar_w / 2
        if p.value is None:
            parts.append(f'<text x="{mid:.1f}" y="{PAD_T + plot_h - 4}" font-size="9" text-anchor="middle" '
                         f'fill="#57606a"><title>{_esc(p.label)}: not measured</title>n/a</text>')
        else:
            over = limit is not None and p.value > limit
            height = max(2.0, PAD_T + plot_h - y(p.value))  # a tiny value stays visible
            note = f" (over {limit_label})" if over else ""
            parts.append(f'<rect class="{"over" if over else "bar"}" x="{x:.1f}" y="{PAD_T + plot_h - height:.1f}" '
                         f'width="{bar_w:.1f}" height="{height:.1f}" fill="{OVER if over else BAR}">'
                         f"<title>{_esc(p.label)}: {_esc(fmt(p.value))}{_esc(note)}</title></rect>")
        if p.second is not None:
            parts.append(f'<circle cx="{mid:.1f}" cy="{y(p.second):.1f}" r="3.5" fill="none" stroke="{SECOND}" '
                         f'stroke-width="2"><title>{_esc(p.label)} {_esc(second_label)}: {_esc(fmt(p.second))}'
                         "</title></circle>")
    if len(points) <= 10:
        for i, p in enumerate(points):
            parts.append(f'<text x="{PAD_L + step * i + step / 2:.1f}" y="{HEIGHT - 16}" font-size="9" '
                         f'text-anchor="middle">{_esc(short_label(p.label))}</text>')
    if limit is not None:
        parts.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                     f'stroke="{LIMIT}" stroke-dasharray="5,3"/>'
                     f'<text x="{PAD_L + plot_w - 2}" y="{y(limit) - 3:.1f}" font-size="10" text-anchor="end" '
                     f'fill="{LIMIT}">{_esc(limit_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def size(n: float) -> str:
    """Bytes as ``512 B``, ``4.2 MB``, ``1.1 GB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"
