"""Pages served by the Function App: the estate, a tenant, the approvals and the evidence.

``GET /api/dashboard`` (the estate), ``GET /api/tenants/{tenant}/page``, ``GET /api/approvals`` and
``GET /api/evidence`` answer HTML; ``GET /api/evidence/bundles/{instance}/{run}`` a failover's bundle as JSON.

Same authentication and authorization as the JSON API (:func:`triggers.common.authorize`): a reader, and a
tenant-scoped caller sees only its tenants. Refusals and errors are HTML pages with the API's status codes
(401 without a usable credential, 403, 400 for a bad filter). Deciding from the approvals page posts JSON to
the existing approve/reject routes, which keep their own rule (:func:`triggers.approval_http.decide`).

Every page is sent with a Content-Security-Policy that allows inline CSS, one inline script by nonce, and
requests to this origin only; no caching, no referrer (a ``?code=`` key in the URL must not leak).
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from continuity.approvals.pending import KINDS, pending_approvals
from continuity.incidents.open import PREFIX as INCIDENT_PREFIX
from continuity.kernel.errors import ContinuityError, InvalidRequest
from continuity.kernel.identity import Role
from continuity.kernel.tenants import TENANT_ID_RE
from continuity.pages import html as pages
from continuity.pages import tenant as tenant_pages
from continuity.validation.estate import EstateState, SortKey, count_by_state, sort_rows
from triggers.api_docs import document
from triggers.common import authorize, handles_errors

logger = logging.getLogger(__name__)
bp = df.Blueprint()

RUNNING = [df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending]
_HTML = {"type": "string", "contentMediaType": "text/html"}

document("dashboard", "GET", "The estate overview page (HTML): every tenant in the caller's scope, worst first",
         "dashboardPage", responses={200: _HTML}, media="text/html",
         query={"state": {"type": "string", "enum": ["", *[str(s) for s in EstateState]]},
                "sort": {"type": "string", "enum": [str(k) for k in SortKey]}})
document("approvals", "GET", "Open failover and recovery requests awaiting approval (HTML), with decision forms",
         "approvalsPage", responses={200: _HTML}, media="text/html")
document("tenants/{tenant}/page", "GET", "One tenant's page (HTML): trends, last runs with their checks, backups",
         "tenantPage", responses={200: _HTML}, media="text/html",
         path_params={"tenant": {"type": "string", "pattern": TENANT_ID_RE.pattern}})
document("evidence", "GET", "The evidence page (HTML): chain head, last verification, failover bundles",
         "evidencePage", responses={200: _HTML}, media="text/html")
document("evidence/bundles/{instance}/{run}", "GET", "A failover's evidence bundle as stored (JSON)",
         "getEvidenceBundle", responses={200: {"type": "object"}},
         path_params={"instance": {"type": "string"}, "run": {"type": "string"}})


def _headers(nonce: str | None = None) -> dict[str, str]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (f"default-src 'none'; style-src 'unsafe-inline'; script-src {script}; "
                                    "connect-src 'self'; form-action 'self'; base-uri 'none'; "
                                    "frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
    }


def html_response(body: str, status: int = 200, nonce: str | None = None) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, headers=_headers(nonce), mimetype="text/html",
                             charset="utf-8")


def page_errors(fn: Callable[..., Any]) -> Callable[..., Awaitable[func.HttpResponse]]:
    """A :class:`ContinuityError` becomes its 4xx as an HTML page; anything else a 500 page (and a logged bug)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            assert isinstance(result, func.HttpResponse)
            return result
        except ContinuityError as exc:
            title = {401: "Sign in needed", 403: "Not allowed", 404: "Not found"}.get(exc.http_status, "Refused")
            return html_response(pages.error_page(exc.http_status, title, str(exc)), exc.http_status)
        except Exception:  # noqa: BLE001 - the boundary: a bug must still answer a page, never crash the host
            logger.exception("unhandled error in %s", fn.__name__)
            return html_response(pages.error_page(500, "Internal error", "the host log has the details"), 500)

    return wrapper


def _choice(req: func.HttpRequest, name: str, kind: type[EstateState] | type[SortKey]) -> Any:
    raw = (req.params.get(name) or "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(str(k) for k in kind)
        raise InvalidRequest(f"query {name}: {raw[:40]!r} is not one of {allowed}") from None


async def _running(client: df.DurableOrchestrationClient, prefixes: tuple[str, ...]) -> list[Any]:
    """Running instances of the given id prefixes: one listing of the running instances, filtered here."""
    from continuity.pages.service import statuses_of

    found = await client.get_status_by(runtime_status=RUNNING)
    return [s for s in statuses_of(found) if s[0].startswith(prefixes)]


WORKFLOW_PREFIXES = (*KINDS, INCIDENT_PREFIX)


@bp.route(route="dashboard", methods=["GET"])
@bp.durable_client_input(client_name="client")
@page_errors
async def dashboard(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from continuity.pages.service import estate

    principal = authorize(req, Role.READER, "read the estate dashboard")
    state: EstateState | None = _choice(req, "state", EstateState)
    sort: SortKey = _choice(req, "sort", SortKey) or SortKey.STATE
    now = datetime.now(UTC)
    found = estate(principal, await _running(client, WORKFLOW_PREFIXES), now)
    shown = sort_rows((r for r in found.rows if state is None or r.state is state), sort)
    return html_response(pages.dashboard_page(shown, counts=count_by_state(found.rows), state=state, sort=sort,
                                              principal=principal, at=now, open_work=found.open_work,
                                              platform_approvals=found.platform_approvals))


@bp.route(route="tenants/{tenant}/page", methods=["GET"])
@bp.durable_client_input(client_name="client")
@page_errors
async def tenant_page(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from continuity.pages.service import tenant_view

    raw = req.route_params.get("tenant", "")
    if not TENANT_ID_RE.match(raw):
        raise InvalidRequest("path tenant: must match ^[a-z][a-z0-9-]{1,39}$")
    principal = authorize(req, Role.READER, f"read the page of {raw}", raw)  # scope before the registry: 403
    now = datetime.now(UTC)
    view = tenant_view(raw, principal, await _running(client, WORKFLOW_PREFIXES), now)
    return html_response(tenant_pages.tenant_page(view, principal=principal, now=now))


@bp.route(route="evidence", methods=["GET"])
@page_errors
def evidence(req: func.HttpRequest) -> func.HttpResponse:
    from continuity.pages.service import evidence_view

    principal = authorize(req, Role.READER, "read the evidence page")
    return html_response(tenant_pages.evidence_page(evidence_view(principal), principal=principal))


@bp.route(route="evidence/bundles/{instance}/{run}", methods=["GET"])
@handles_errors
def evidence_bundle(req: func.HttpRequest) -> func.HttpResponse:
    from continuity.pages.service import bundle

    principal = authorize(req, Role.READER, "read an evidence bundle")
    body = bundle(req.route_params.get("instance", ""), req.route_params.get("run", ""), principal)
    return func.HttpResponse(body, status_code=200, mimetype="application/json",
                             headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


@bp.route(route="approvals", methods=["GET"])
@bp.durable_client_input(client_name="client")
@page_errors
async def approvals(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    principal = authorize(req, Role.READER, "read open approvals")
    instances: list[tuple[str, str | None, Any]] = []
    for prefix in KINDS:
        for status in await client.get_status_by(runtime_status=RUNNING, instance_id_prefix=prefix):
            instances.append((str(status.instance_id), getattr(status, "name", None), status.custom_status))
    nonce = secrets.token_urlsafe(16)
    items = pending_approvals(instances, principal, datetime.now(UTC))
    return html_response(pages.approvals_page(items, principal=principal, now=datetime.now(UTC), nonce=nonce),
                         nonce=nonce)
