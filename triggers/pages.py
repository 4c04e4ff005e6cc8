"""Pages served by the Function App: ``GET /api/dashboard`` (the estate) and ``GET /api/approvals``.

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
from continuity.kernel.errors import ContinuityError, InvalidRequest
from continuity.kernel.identity import Role
from continuity.pages import html as pages
from continuity.validation.estate import EstateState, SortKey, count_by_state, sort_rows
from triggers.api_docs import document
from triggers.common import authorize

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


@bp.route(route="dashboard", methods=["GET"])
@page_errors
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    from continuity.validation.wiring import estate

    principal = authorize(req, Role.READER, "read the estate dashboard")
    state: EstateState | None = _choice(req, "state", EstateState)
    sort: SortKey = _choice(req, "sort", SortKey) or SortKey.STATE
    rows = estate(principal.tenants)
    shown = sort_rows((r for r in rows if state is None or r.state is state), sort)
    return html_response(pages.dashboard_page(shown, counts=count_by_state(rows), state=state, sort=sort,
                                              principal=principal, at=datetime.now(UTC)))


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
