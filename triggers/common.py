"""What every trigger shares: JSON in and out, the error shape, size limits, parsing into pydantic models.

Triggers stay thin: parse, authorise, start or signal an orchestration. A :class:`ContinuityError` becomes a
4xx ``{"error": {"code", "message"}}``; anything else is a 5xx and a bug (logged with its traceback).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import azure.functions as func
from pydantic import BaseModel, ValidationError

from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError, Forbidden, InvalidRequest, Unauthorized
from continuity.kernel.identity import Principal, Role, require_role, require_tenant

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload, default=str), status_code=status, headers=headers,
                             mimetype="application/json")


def error_response(status: int, code: str, message: str) -> func.HttpResponse:
    return json_response({"error": {"code": code, "message": message}}, status=status)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map domain errors to 4xx JSON and anything unexpected to a 500 JSON (and a logged bug)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
            if hasattr(result, "__await__"):
                result = await result
            return result
        except ContinuityError as exc:
            return error_response(exc.http_status, exc.code, str(exc))
        except Exception:  # noqa: BLE001 - the boundary: a bug must still answer JSON, never crash the host
            logger.exception("unhandled error in %s", fn.__name__)
            return error_response(500, "internal_error", "internal error; the host log has the details")

    return wrapper


def read_json(req: func.HttpRequest) -> Any:
    """The request body as JSON, refusing oversized and malformed bodies."""
    body = req.get_body() or b""
    limit = settings.get_int("CONTINUITY_MAX_REQUEST_BYTES")
    if len(body) > limit:
        raise InvalidRequest(f"request body is {len(body)} bytes; the limit is {limit}")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except RecursionError as exc:  # thousands of nested [ or {: the parser's stack, not the host, gives out
        raise InvalidRequest("request body is JSON nested too deeply; send a flat JSON object") from exc
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc


def parse_model(model: type[ModelT], data: Any) -> ModelT:
    """Validate ``data`` into ``model``; the error names the field and the accepted form."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"field {where}: {first['msg']}") from exc


def parse_body(req: func.HttpRequest, model: type[ModelT]) -> ModelT:
    return parse_model(model, read_json(req))


def authorize(req: func.HttpRequest, role: Role, action: str, tenant: str | None = None) -> Principal:
    """The one authorization rule of a route: an authenticated caller, holding ``role``, whose scope covers ``tenant``.

    The scope is checked on the tenant as named, before the registry is asked, so a scoped caller learns
    nothing about which other tenants exist (403, never 404).

    :raises Unauthorized: no usable credential (401).
    :raises Forbidden: the role is missing or ``tenant`` is outside the caller's scope (403).
    """
    from continuity.approvals.service import authenticate_headers

    principal: Principal | None = None
    try:
        principal = authenticate_headers(dict(req.headers))
        require_role(principal, role, action)
        if tenant is not None:
            require_tenant(principal, tenant)
    except (Unauthorized, Forbidden) as exc:
        _record_access_refusal(req, action, principal, exc)
        raise
    return principal


def _record_access_refusal(req: func.HttpRequest, action: str, principal: Principal | None,
                           exc: ContinuityError) -> None:
    """Evidence of a refused request (``access.refused``): who, which route, why; nothing was done.

    Throttled by its idempotency key, one record per route, caller and reason per minute, so a flood of
    refused requests (an unauthenticated one needs no credential) cannot flood the chain. A failure to
    record never turns the refusal into a 500.
    """
    from datetime import UTC, datetime

    from continuity.approvals import service as approval_service

    who = principal.id if principal is not None else "anonymous"
    route = req.route_params.get("__route__") or req.url.split("?", 1)[0].split("/api/", 1)[-1][:200]
    digest = hashlib.sha256(f"{route}|{who}|{exc.code}|{exc}".encode()).hexdigest()[:24]
    try:
        approval_service.record(
            actor=(principal.name if principal is not None else "anonymous")[:100], action="access.refused",
            subject=f"route/{route}", data={"method": req.method, "action": action[:200], "code": exc.code,
                                            "reason": str(exc)[:500], "principal_id": who, "executed": False},
            idempotency_key=f"access.refused:{digest}:{datetime.now(UTC):%Y%m%d%H%M}")
    except ContinuityError as failed:
        logger.warning("access refusal not recorded: %s", failed)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def instance_id(*parts: str) -> str:
    """A Durable instance id from natural-key parts; odd characters replaced, long ids hashed (ids are keys)."""
    raw = "-".join(parts)
    safe = _UNSAFE.sub("_", raw)
    if len(safe) > 200:
        safe = safe[:150] + "-" + hashlib.sha256(raw.encode()).hexdigest()[:32]
    return safe


def event_type_of(event: Any) -> str:
    """The type of an Event Grid delivery: Event Grid schema (``event_type``) or CloudEvents (``type``)."""
    return str(getattr(event, "event_type", None) or getattr(event, "type", "") or "")


async def start_once(client: Any, orchestration: str, iid: str, payload: Any) -> bool:
    """Start ``orchestration`` as ``iid`` unless an instance with that id exists; True when this call started it.

    Event Grid delivers at least once and in parallel: two deliveries of the same fact can both find no
    instance and both try to start it. The loser's start is refused (the client raises a bare Exception);
    seeing the instance exist afterwards makes that a duplicate, not an error.
    """
    status = await client.get_status(iid)
    if status is not None and status.runtime_status is not None:
        return False
    try:
        await client.start_new(orchestration, iid, payload)
    except Exception:  # noqa: BLE001 - the SDK raises a bare Exception for "already exists"
        again = await client.get_status(iid)
        if again is not None and again.runtime_status is not None:
            return False
        raise
    return True
