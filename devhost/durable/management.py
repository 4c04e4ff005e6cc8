"""The Durable Functions HTTP management API under ``/runtime/webhooks/durabletask/``.

Routes, status codes and payloads follow the extension's ``HttpApiHandler``: the same paths serve the
``rpcBaseUrl`` calls of ``DurableOrchestrationClient`` and the public ``statusQueryGetUri`` family of
URLs that ``create_check_status_response`` hands out.

Every call needs the ``durabletask_extension`` system key (or the master key); the front door
(:mod:`devhost.http`) checks it. The URLs handed out carry the key in ``code=``, as Azure's do, and the
client's ``rpcBaseUrl`` carries it as URL credentials, because the SDK appends paths to that base and sends
no key of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from dateutil.parser import parse as parse_date

from continuity.kernel.errors import ContinuityError
from devhost.durable.store import InstanceRow, TaskHubStore

PREFIX = "/runtime/webhooks/durabletask"
Response = tuple[int, dict[str, str], bytes]


def webhook_base(base_url: str) -> str:
    return base_url.rstrip("/") + PREFIX


def _key_query(key: str) -> str:
    return f"&code={quote(key, safe='')}" if key else ""


def _with_credentials(url: str, key: str) -> str:
    """``url`` with the system key as its Basic credentials (``durabletask_extension:KEY@host``)."""
    if not key:
        return url
    parts = urlsplit(url)
    netloc = f"durabletask_extension:{quote(key, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def management_urls(base_url: str, task_hub: str, instance_id: str, key: str = "") -> dict[str, str]:
    """``HttpManagementPayload`` for one instance (``INSTANCEID`` in the client binding).

    :param key: the ``durabletask_extension`` system key, added as ``code=`` to every URL.
    """
    prefix = f"{webhook_base(base_url)}/instances/{quote(instance_id, safe='')}"
    query = f"taskHub={quote(task_hub, safe='')}&connection=Storage{_key_query(key)}"
    return {
        "id": instance_id,
        "statusQueryGetUri": f"{prefix}?{query}",
        "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{query}",
        "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{query}",
        "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{query}",
        "purgeHistoryDeleteUri": f"{prefix}?{query}",
        "restartPostUri": f"{prefix}/restart?{query}",
        "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{query}",
        "resumePostUri": f"{prefix}/resume?reason={{text}}&{query}",
    }


def client_binding(base_url: str, task_hub: str, key: str = "") -> dict[str, Any]:
    """What the extension's ``BindingHelper`` gives a ``durableClient`` parameter (as a JSON string).

    :param key: the ``durabletask_extension`` system key: in the URLs' ``code=``, in
        ``requiredQueryStringParameters``, and as the credentials of ``rpcBaseUrl``.
    """
    base = webhook_base(base_url)
    creation = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
    required = f"code={quote(key, safe='')}" if key else ""
    return {
        "taskHubName": task_hub,
        "creationUrls": {
            "createNewInstancePostUri": f"{creation}?{required}",
            "createAndWaitOnNewInstancePostUri": f"{creation}?timeout={{timeoutInSeconds}}"
                                                 f"&pollingInterval={{intervalInSeconds}}&{required}",
        },
        "managementUrls": management_urls(base_url, task_hub, "INSTANCEID", key),
        "baseUrl": base,
        "requiredQueryStringParameters": required,
        "rpcBaseUrl": _with_credentials(f"{base}/", key),
        "httpBaseUrl": base,
    }


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = b"" if payload is None else json.dumps(payload).encode()
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body


def _error(status: int, message: str, exception_message: str | None = None) -> Response:
    payload: dict[str, Any] = {"Message": message}
    if exception_message:
        payload["ExceptionMessage"] = exception_message
    return _json(status, payload)


def _value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def payload_text(body: bytes) -> str | None:
    """The serialised value a client posted.

    ``DurableOrchestrationClient`` serialises the value itself and aiohttp encodes that text as JSON again,
    so a JSON string that holds JSON is unwrapped once; any other JSON body is the value itself.

    :raises ValueError: the body is not JSON.
    """
    if not body or not body.strip():
        return None
    text = body.decode("utf-8")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, str):
            try:
                json.loads(parsed)
            except ValueError:
                return text
            return parsed
    except RecursionError as exc:  # hostile nesting: a refusal, not a crash
        raise ValueError("JSON nested too deeply") from exc
    return text


def status_payload(row: InstanceRow, show_input: bool = True,
                   history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": row.name,
        "instanceId": row.instance_id,
        "runtimeStatus": row.status,
        "input": _value(row.input_text) if show_input else None,
        "customStatus": _value(row.custom_status_text),
        "output": _value(row.output_text),
        "createdTime": _time(row.created_at),
        "lastUpdatedTime": _time(row.updated_at),
    }
    if history is not None:
        payload["historyEvents"] = history
    return payload


def _flag(query: dict[str, list[str]], name: str, default: bool) -> bool:
    values = query.get(name)
    if not values:
        return default
    return values[0].strip().lower() == "true"


def _date(query: dict[str, list[str]], name: str) -> dt.datetime | None:
    values = query.get(name)
    if not values or not values[0]:
        return None
    moment = parse_date(values[0])
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class ManagementApi:
    """Serves one task hub's management routes; ``wake`` tells the dispatchers there is new work."""

    def __init__(self, store: TaskHubStore, base_url: str, task_hub: str, orchestrators: set[str],
                 wake: Callable[[], None], key: str = "") -> None:
        self.key = key  # the durabletask_extension system key, put into the URLs handed out
        self.store = store
        self.base_url = base_url
        self.task_hub = task_hub
        self.orchestrators = orchestrators
        self.wake = wake

    def handle(self, method: str, path: str, query: Mapping[str, list[str] | str], body: bytes,
               headers: dict[str, str]) -> Response:
        """Answer one request; ``query`` values may be lists (``parse_qs``) or single strings."""
        normalized = {k: (list(v) if isinstance(v, list | tuple) else [str(v)]) for k, v in query.items()}
        route = path.split("?", 1)[0]
        if not route.startswith(PREFIX):
            return _error(404, f"not a durable task route: {route}")
        parts = [unquote(p) for p in route[len(PREFIX):].strip("/").split("/") if p != ""]
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            return self._route(method.upper(), parts, normalized, body, lowered)
        except ContinuityError as exc:
            return _error(exc.http_status, str(exc))

    def _route(self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes,
               headers: dict[str, str]) -> Response:
        if parts and parts[0] == "orchestrators" and len(parts) in (2, 3):
            if method != "POST":
                return _error(404, "start an orchestration with POST")
            return self.start(parts[1], parts[2] if len(parts) == 3 else None, body)
        if parts and parts[0] == "instances":
            if len(parts) == 1:
                if method == "GET":
                    return self.list_instances(query, headers)
                if method == "DELETE":
                    return self.purge_by(query)
            elif len(parts) == 2:
                if method == "GET":
                    return self.get_status(parts[1], query)
                if method == "DELETE":
                    return self.purge(parts[1])
            elif len(parts) == 4 and parts[2] == "raiseEvent" and method == "POST":
                return self.raise_event(parts[1], parts[3], body, headers)
            elif len(parts) == 3 and method == "POST":
                operation = parts[2].lower()
                if operation == "terminate":
                    return self.terminate(parts[1], (query.get("reason") or [""])[0])
                if operation == "restart":
                    return self.restart(parts[1], query)
                return _error(501, f"the devhost does not support {parts[2]!r} on orchestration instances")
        if parts and parts[0] == "entities":
            return _error(501, "the devhost does not support durable entities")
        return _error(404, f"no durable task route {'/'.join(parts)!r}")

    # ---- handlers --------------------------------------------------------------------------
    def check_status_response(self, instance_id: str) -> Response:
        urls = management_urls(self.base_url, self.task_hub, instance_id, self.key)
        payload = {key: urls[key] for key in ("id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri",
                                              "purgeHistoryDeleteUri", "restartPostUri", "suspendPostUri",
                                              "resumePostUri")}
        return _json(202, payload, {"Location": urls["statusQueryGetUri"], "Retry-After": "10"})

    def start(self, function_name: str, instance_id: str | None, body: bytes) -> Response:
        if function_name not in self.orchestrators:
            message = (f"The function '{function_name}' doesn't exist, is disabled, or is not an orchestrator "
                       "function. Additional info: the devhost knows the orchestrators "
                       f"{sorted(self.orchestrators)}")
            return _error(400, "One or more of the arguments submitted is incorrect", message)
        try:
            input_text = payload_text(body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "Invalid JSON content")
        new_id = instance_id or uuid.uuid4().hex
        self.store.start(function_name, new_id, input_text)
        self.wake()
        return self.check_status_response(new_id)

    def get_status(self, instance_id: str, query: dict[str, list[str]]) -> Response:
        row = self.store.get(instance_id)
        if row is None:
            return 404, {}, b""
        show_history = _flag(query, "showHistory", False)
        history = self.store.history(instance_id) if show_history else None
        if history is not None and not _flag(query, "showHistoryOutput", False):
            for event in history:
                event.pop("Result", None)
        payload = status_payload(row, _flag(query, "showInput", True), history)
        if row.status in ("Pending", "Running"):
            location = management_urls(self.base_url, self.task_hub, instance_id, self.key)["statusQueryGetUri"]
            return _json(202, payload, {"Location": location, "Retry-After": "5"})
        if row.status == "Failed" and _flag(query, "returnInternalServerErrorOnFailure", False):
            return _json(500, payload)
        return _json(200, payload)

    def list_instances(self, query: dict[str, list[str]], headers: dict[str, str]) -> Response:
        statuses = [s for v in query.get("runtimeStatus", []) for s in v.split(",") if s]
        top = int((query.get("top") or ["0"])[0] or 0)
        offset = int(headers.get("x-ms-continuation-token") or 0)
        prefix = (query.get("instanceIdPrefix") or [""])[0] or None
        rows = self.store.list_instances(statuses or None, _date(query, "createdTimeFrom"),
                                         _date(query, "createdTimeTo"), prefix, top or None, offset)
        token = str(offset + len(rows)) if top and len(rows) == top else ""
        show_input = _flag(query, "showInput", True)
        return _json(200, [status_payload(r, show_input) for r in rows], {"x-ms-continuation-token": token})

    def raise_event(self, instance_id: str, event_name: str, body: bytes, headers: dict[str, str]) -> Response:
        if self.store.get(instance_id) is None:
            return 404, {}, b""
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _error(400, "Only application/json request content is supported")
        try:
            input_text = payload_text(body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "Invalid JSON content")
        self.store.raise_event(instance_id, event_name, input_text)
        self.wake()
        return 202, {}, b""

    def terminate(self, instance_id: str, reason: str) -> Response:
        self.store.terminate(instance_id, reason)
        self.wake()
        return 202, {}, b""

    def restart(self, instance_id: str, query: dict[str, list[str]]) -> Response:
        row = self.store.get(instance_id)
        if row is None:
            return _error(404, f"No instance with ID '{instance_id}' found.")
        new_id = uuid.uuid4().hex if _flag(query, "restartWithNewInstanceId", True) else instance_id
        self.store.start(row.name, new_id, row.input_text)
        self.wake()
        return self.check_status_response(new_id)

    def purge(self, instance_id: str) -> Response:
        deleted = self.store.purge(instance_id)
        if not deleted:
            return 404, {}, b""
        return _json(200, {"instancesDeleted": deleted})

    def purge_by(self, query: dict[str, list[str]]) -> Response:
        created_from = _date(query, "createdTimeFrom")
        if created_from is None:
            return _json(400, "Please provide value for 'createdTimeFrom' parameter.")
        statuses = [s for v in query.get("runtimeStatus", []) for s in v.split(",") if s]
        deleted = self.store.purge_by(created_from, _date(query, "createdTimeTo"), statuses or None)
        if not deleted:
            return 404, {}, b""
        return _json(200, {"instancesDeleted": deleted})
