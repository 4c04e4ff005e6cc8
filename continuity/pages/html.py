"""HTML for the pages the Function App serves: the estate dashboard, open approvals, error pages (pure).

Every value that comes from data (tenant names, reasons, requesters, comments, details) goes through
:func:`esc` (``html.escape`` with quotes) where it is placed, in text and in attributes alike; nothing is
marked safe. Pages are self-contained: inline CSS, no fonts, images or CDN, so they work offline; the only
script (the approvals page's decision sender) is inline and runs under the response's CSP nonce. State is
never shown by colour alone: every badge carries its words and a symbol.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from continuity.approvals.pending import PendingApproval
from continuity.kernel.identity import Principal
from continuity.validation.estate import LABELS, WORST_FIRST, EstateRow, EstateState, SortKey

SYMBOLS: dict[EstateState, str] = {
    EstateState.NOT_RECOVERABLE: "\u2716",  # heavy multiplication x
    EstateState.NEVER_VALIDATED: "?",
    EstateState.OUTSIDE_OBJECTIVES: "\u26a0",  # warning sign
    EstateState.WITHIN_OBJECTIVES: "\u2714",  # heavy check mark
}
SORT_LABELS: dict[SortKey, str] = {
    SortKey.STATE: "state, worst first", SortKey.TENANT: "tenant", SortKey.BACKUP_AGE: "backup age, oldest first",
    SortKey.RPO_MARGIN: "RPO margin, least first",
}

CSS = """
:root{color-scheme:light;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--head:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0}
header{display:flex;gap:1.5rem;align-items:baseline;padding:.75rem 1.25rem;border-bottom:1px solid var(--line);
  background:var(--head)}
header h1{font-size:1.1rem;margin:0}
nav a{margin-right:1rem}
main{padding:1rem 1.25rem}
.who{margin-left:auto;color:var(--muted)}
a{color:#0550ae}
a:focus,button:focus,select:focus,textarea:focus,input:focus{outline:3px solid #0969da;outline-offset:1px}
table{border-collapse:collapse;width:100%}
caption{text-align:left;color:var(--muted);padding:.25rem 0}
th,td{border-bottom:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
thead th{background:var(--head);position:sticky;top:0}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.name{color:var(--muted);font-weight:normal}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:.6rem;border:1px solid;white-space:nowrap;
  font-weight:600}
.s-not_recoverable{background:#ffebe9;color:#82071e;border-color:#cf222e}
.s-never_validated{background:#eaeef2;color:#24292f;border-color:#57606a}
.s-outside_objectives{background:#fff8c5;color:#6b4500;border-color:#bf8700}
.s-within_objectives{background:#dafbe1;color:#0a4f1f;border-color:#1a7f37}
.missed{color:#82071e;font-weight:600}
.summary{list-style:none;display:flex;flex-wrap:wrap;gap:.5rem;padding:0;margin:.25rem 0 .75rem}
.filters{display:flex;gap:.5rem;align-items:center;flex-wrap:wrap;margin-bottom:.75rem}
.reason{min-width:28ch}
article.approval{border:1px solid var(--line);border-radius:.4rem;padding:.75rem 1rem;margin-bottom:1rem}
article.approval h2{font-size:1.05rem;margin:.1rem 0 .5rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.25rem 0 .75rem}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em;word-break:break-all}
form.decision textarea{width:100%;max-width:60ch;min-height:3rem;display:block}
form.decision button{margin-right:.5rem;padding:.3rem .9rem}
.outcome{font-weight:600}
.outcome.refused{color:#82071e}
.outcome.ok{color:#0a4f1f}
.f-fail{color:#82071e;font-weight:600}
.f-warn{color:#6b4500;font-weight:600}
.empty{color:var(--muted);font-style:italic}
.ok{color:#0a4f1f;font-weight:600}
.open{white-space:nowrap}
a.id{white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:1rem}
svg.chart{max-width:100%;height:auto}
ul.checks{margin:0;padding-left:1rem}
.legend{color:var(--muted);font-size:.9em}
"""

DECISION_SCRIPT = """
(function () {
  'use strict';
  var forms = document.querySelectorAll('form.decision');
  Array.prototype.forEach.call(forms, function (form) {
    var buttons = form.querySelectorAll('button');
    var out = form.querySelector('.outcome');
    function enable(on) { Array.prototype.forEach.call(buttons, function (b) { b.disabled = !on; }); }
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var verdict = ev.submitter && ev.submitter.value === 'reject' ? 'reject' : 'approve';
      var acks = Array.prototype.map.call(form.querySelectorAll('input[name=acknowledge]:checked'),
                                          function (b) { return b.value; });
      var body = {comment: form.elements.comment.value, acknowledge: acks, digest: form.elements.digest.value};
      enable(false);
      out.className = 'outcome';
      out.textContent = 'Sending ' + verdict + '\\u2026';
      fetch(form.getAttribute('data-' + verdict) + window.location.search, {
        method: 'POST', credentials: 'same-origin', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify(body)
      }).then(function (r) {
        return r.json().then(function (j) { return [r.status, j]; }, function () { return [r.status, {}]; });
      }).then(function (res) {
        var status = res[0], j = res[1] || {};
        if (status === 202) {
          out.className = 'outcome ok';
          out.textContent = (verdict === 'approve' ? 'Approved' : 'Rejected') + ' (state ' + j.state +
            '). Follow it at ' + j.status_url;
          form.setAttribute('data-decided', j.state || 'SUBMITTED');
        } else {
          out.className = 'outcome refused';
          out.textContent = 'Refused (' + status + '): ' + ((j.error && j.error.message) || 'no reason given');
          enable(true);
        }
      }, function (err) {
        out.className = 'outcome refused';
        out.textContent = 'Not sent: ' + err;
        enable(true);
      });
    });
  });
})();
"""


def esc(value: object) -> str:
    """Text or attribute value, escaped (``<``, ``>``, ``&``, both quotes)."""
    return html.escape(str(value), quote=True)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "\u2014"
    sign, s = ("-" if seconds < 0 else ""), abs(seconds)
    if s < 90:
        return f"{sign}{s:.0f} s"
    if s < 90 * 60:
        return f"{sign}{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{sign}{s / 3600:.1f} h"
    return f"{sign}{s / 86400:.1f} d"


def short_time(iso: str | None) -> str:
    """``2026-11-30T09:32:56.696+00:00`` as ``2026-11-30 09:32 UTC`` (the values are UTC)."""
    return f"{iso[:16].replace('T', ' ')} UTC" if iso else ""


def _viewer(principal: Principal) -> str:
    roles = ", ".join(sorted(str(r) for r in principal.roles)) or "no role"
    scope = "every tenant" if principal.tenants is None else ", ".join(sorted(principal.tenants)) or "no tenant"
    return f"{principal.name} ({roles}; {scope})"


def layout(title: str, body: str, *, principal: Principal | None = None, nonce: str | None = None,
           script: str = "") -> str:
    """A whole page. ``body`` is HTML built here from escaped values; ``script`` is one of this module's constants."""
    who = f'<span class="who">Signed in as {esc(_viewer(principal))}</span>' if principal else ""
    js = f'<script nonce="{esc(nonce)}">{script}</script>' if script and nonce else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} \u2014 continuity</title><style>{CSS}</style></head>"
        f'<body><header><h1>continuity</h1><nav aria-label="Pages"><a href="/api/dashboard">Estate</a>'
        f'<a href="/api/approvals">Approvals</a><a href="/api/evidence">Evidence</a></nav>{who}</header>'
        f'<main id="main">{body}</main>{js}</body></html>\n'
    )


def segment(value: str) -> str:
    """``value`` percent-encoded as one URL path segment (UTF-8; letters, digits and ``-._~`` kept)."""
    keep = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
    return "".join(ch if ch in keep else "".join(f"%{b:02X}" for b in ch.encode()) for ch in value)


def tenant_href(tenant: str) -> str:
    """The tenant page's path (absolute under the host's ``/api`` prefix, as the decision routes are)."""
    return f"/api/tenants/{segment(tenant)}/page"


def badge(state: EstateState) -> str:
    return (f'<span class="badge s-{esc(state)}"><span aria-hidden="true">{SYMBOLS[state]}</span> '
            f"{esc(LABELS[state])}</span>")


def _query(state: EstateState | None, sort: SortKey) -> str:
    parts = ([f"state={esc(state)}"] if state else []) + ([f"sort={esc(sort)}"] if sort is not SortKey.STATE else [])
    return "?" + "&amp;".join(parts) if parts else "dashboard"


@dataclass(frozen=True)
class OpenWork:
    """What is open for one tenant: running backup incidents and requests awaiting approval."""

    incidents: int = 0
    approvals: int = 0


def _open_cell(work: OpenWork | None) -> str:
    if work is None or (work.incidents == 0 and work.approvals == 0):
        return '<span class="empty">none</span>'
    parts = []
    if work.incidents:
        parts.append(f'<span class="missed">{work.incidents} incident{"s" if work.incidents > 1 else ""}</span>')
    if work.approvals:
        parts.append(f'<a href="/api/approvals">{work.approvals} awaiting approval</a>')
    return "<br>".join(parts)


def dashboard_page(rows: Sequence[EstateRow], *, counts: Mapping[EstateState, int], state: EstateState | None,
                   sort: SortKey, principal: Principal, at: datetime, open_work: Mapping[str, OpenWork] | None = None,
                   platform_approvals: int = 0) -> str:
    """The estate overview page: one row per tenant (``rows`` already filtered and sorted), counts of every state.

    :param open_work: open incidents and pending approvals by tenant (absent: none).
    :param platform_approvals: pending failovers of the whole platform (every tenant's row would carry them).
    """
    return layout("Estate", estate_overview(rows, counts=counts, state=state, sort=sort, at=at, open_work=open_work,
                                            platform_approvals=platform_approvals), principal=principal)


def estate_overview(rows: Sequence[EstateRow], *, counts: Mapping[EstateState, int], state: EstateState | None,
                    sort: SortKey, at: datetime, open_work: Mapping[str, OpenWork] | None = None,
                    platform_approvals: int = 0, static: bool = False) -> str:
    """The estate's heading, counts and table (HTML built from escaped values).

    :param static: for a file read offline (``continuity report --html``): no filter form, no links to the
        app's routes (each tenant links to its section of the same file, ``#tenant-{id}``), no open-work column.
    """
    work = open_work or {}
    total = sum(counts.values())
    summary = "".join(
        (f'<li>{badge(s)} <span class="count">{counts.get(s, 0)}</span></li>' if static else
         f'<li><a href="{_query(s, sort)}">{badge(s)} <span class="count">{counts.get(s, 0)}</span></a></li>')
        for s in WORST_FIRST)
    options = [f'<option value=""{"" if state else " selected"}>all states ({total})</option>']
    options += [f'<option value="{esc(s)}"{" selected" if s is state else ""}>{esc(LABELS[s])} '
                f"({counts.get(s, 0)})</option>" for s in WORST_FIRST]
    sorts = "".join(f'<option value="{esc(k)}"{" selected" if k is sort else ""}>{esc(v)}</option>'
                    for k, v in SORT_LABELS.items())
    form = ('<form class="filters" method="get" action="dashboard" aria-label="Filter and sort the tenants">'
            f'<label for="state">State</label><select id="state" name="state">{"".join(options)}</select>'
            f'<label for="sort">Sort by</label><select id="sort" name="sort">{sorts}</select>'
            '<button type="submit" id="apply">Apply</button></form>')

    def head(label: str, key: SortKey | None) -> str:
        if key is None or static:
            return f'<th scope="col">{esc(label)}</th>'
        current = ' aria-sort="ascending"' if key is sort else ""
        return f'<th scope="col"{current}><a href="{_query(state, key)}">{esc(label)}</a></th>'

    def href(tenant: str) -> str:
        return f"#tenant-{tenant}" if static else tenant_href(tenant)

    body_rows = []
    for r in rows:
        if r.newest_backup_id is None:
            age = '<span class="missed">no backup</span>'
        else:
            met = "within RPO" if r.rpo_met else '<span class="missed">RPO missed</span>'
            age = (f"{esc(duration(r.backup_age_s))} / {esc(r.rpo_minutes)} min<br>{met}, "
                   f"margin {esc(duration(r.rpo_margin_s))}")
        proof = (f'<code>{esc(r.validated_backup_id)}</code><br>{esc(short_time(r.validated_at))}'
                 if r.validated_backup_id else '<span class="empty">never validated</span>')
        failed = (f'<br>failed: {esc(", ".join(r.failed_checks))}' if r.failed_checks else "")
        body_rows.append(
            f'<tr data-tenant="{esc(r.tenant)}" data-state="{esc(r.state)}">'
            f'<th scope="row"><a class="id" href="{esc(href(r.tenant))}">{esc(r.tenant)}</a><br>'
            f'<span class="name">{esc(r.name)}</span></th>'
            f"<td>{esc(r.tier)}</td><td class=\"state\">{badge(r.state)}</td><td class=\"num\">{age}</td>"
            f'<td class="num">{esc(r.rto_minutes)} min</td><td>{proof}{failed}</td>'
            + ("" if static else f'<td class="open">{_open_cell(work.get(r.tenant))}</td>')
            + f'<td class="reason">{esc(r.reason)}</td></tr>')
    if not body_rows:
        body_rows.append(f'<tr><td colspan="{7 if static else 8}" class="empty">No tenant in this state.</td></tr>')
    shown = f"{len(rows)} of {total} tenants" + (f" ({esc(LABELS[state])})" if state else "")
    table = ('<table id="estate"><caption>' + shown + f", sorted by {esc(SORT_LABELS[sort])}; as of "
             f'{esc(at.isoformat(timespec="seconds"))}</caption><thead><tr>'
             + head("Tenant", SortKey.TENANT) + head("Tier", None) + head("State", SortKey.STATE)
             + head("Newest backup age / RPO", SortKey.BACKUP_AGE) + head("RTO", None)
             + head("Last validation", None) + ("" if static else head("Open", None)) + head("Reason", None)
             + "</tr></thead><tbody>" + "".join(body_rows) + "</tbody></table>")
    platform = (f'<p id="platform-approvals"><a href="/api/approvals">{platform_approvals} platform failover'
                f'{"s" if platform_approvals > 1 else ""} awaiting approval</a> (every tenant)</p>'
                if platform_approvals and not static else "")
    return (f'<h2>Estate: can each tenant be restored within its RTO and RPO?</h2>'
            f'<ul class="summary" aria-label="Tenants by state">{summary}</ul>{platform}'
            f'{"" if static else form}{table}')


def _finding_class(status: str) -> str:
    return {"fail": "f-fail", "warn": "f-warn"}.get(status.lower(), "")


def approvals_page(items: Sequence[PendingApproval], *, principal: Principal, now: datetime, nonce: str) -> str:
    """Open failover and recovery requests the caller may see, with decision forms where it may decide."""
    parts = [f'<h2>Awaiting approval ({len(items)})</h2>']
    if not items:
        parts.append('<p class="empty" id="none">Nothing awaits a decision in your scope.</p>')
    for item in items:
        req = item.request
        what = f"{item.kind.capitalize()}{' DRILL' if item.drill else ''} of {item.subject}"
        left = max(0.0, (req.expires_at - now).total_seconds())
        findings = "".join(
            f'<tr><td>{esc(f.check)}</td><td class="{_finding_class(f.status)}">{esc(f.status)}</td>'
            f"<td>{esc(f.detail)}</td></tr>" for f in item.findings) or \
            '<tr><td colspan="3" class="empty">no findings recorded</td></tr>'
        refusals = "".join(f"<li>{esc(r.get('by', ''))} ({esc(r.get('verdict', ''))}): {esc(r.get('reason', ''))}</li>"
                           for r in req.refusals)
        acks = "".join(
            f'<label><input type="checkbox" name="acknowledge" value="{esc(a)}"> I acknowledge '
            f"<code>{esc(a)}</code></label><br>" for a in sorted(req.required_acknowledgements))
        decide = ""
        if item.can_approve or item.can_reject:
            buttons = ""
            if item.can_approve:
                buttons += '<button type="submit" name="verdict" value="approve">Approve</button>'
            if item.can_reject:
                buttons += '<button type="submit" name="verdict" value="reject">Reject</button>'
            fieldset = (f"<fieldset><legend>Risks to acknowledge before approving</legend>{acks}</fieldset>"
                        if acks else "")
            decide = (
                f'<form class="decision" method="post" data-approve="{esc(item.decide_path("approve"))}" '
                f'data-reject="{esc(item.decide_path("reject"))}" aria-label="Decide {esc(item.instance_id)}">'
                f'<input type="hidden" name="digest" value="{esc(req.digest)}">{fieldset}'
                f'<label>Comment<textarea name="comment" maxlength="2000"></textarea></label>{buttons}'
                '<p class="outcome" role="status" aria-live="polite"></p>'
                "<noscript>Deciding sends JSON with a small script; without it use "
                f"<code>continuity {esc(item.kind)} approve|reject</code>.</noscript></form>")
        else:
            decide = ('<p class="empty">Approving needs the approver role (and not being the requester); '
                      "you can follow this request here.</p>")
        iid = esc(item.instance_id)
        asked_at, expires = (esc(t.isoformat(timespec="seconds")) for t in (req.requested_at, req.expires_at))
        parts.append(
            f'<article class="approval" data-instance="{iid}" aria-labelledby="h-{iid}">'
            f'<h2 id="h-{iid}">{esc(what)} <code>{iid}</code></h2>'
            '<dl class="facts">'
            f"<dt>Requested by</dt><dd>{esc(req.requested_by)} at {asked_at}</dd>"
            f"<dt>Reason</dt><dd>{esc(item.reason)}</dd>"
            f"<dt>Expires</dt><dd>{expires} (in {esc(duration(left))})</dd>"
            f'<dt>Preflight digest</dt><dd><code class="digest">{esc(req.digest)}</code></dd>'
            f"<dt>Run</dt><dd><code>{esc(req.run_id)}</code></dd></dl>"
            '<table class="findings"><caption>Preflight findings</caption><thead><tr><th scope="col">Check</th>'
            f'<th scope="col">Status</th><th scope="col">Detail</th></tr></thead><tbody>{findings}</tbody></table>'
            + (f"<h3>Refused decisions</h3><ul>{refusals}</ul>" if refusals else "")
            + decide + "</article>")
    return layout("Approvals", "".join(parts), principal=principal, nonce=nonce,
                  script=DECISION_SCRIPT if any(i.can_approve or i.can_reject for i in items) else "")


def error_page(status: int, title: str, message: str) -> str:
    hint = ""
    if status == 401:
        hint = ("<p>Send your key in the <code>X-Continuity-Key</code> header (local users: "
                "<code>continuity users add</code>), or sign in through App Service Authentication.</p>")
    body = f'<h2 id="error">{esc(status)} {esc(title)}</h2><p class="message">{esc(message)}</p>{hint}'
    return layout(f"{status} {title}", body)
