"""The OpenAPI document of every HTTP route, built from what each trigger module declares.

Each trigger module calls :func:`document` next to its route; ``GET /api/openapi.json`` serves the
result, and a test keeps it equal to the routes ``function_app`` declares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


@dataclass
class Operation:
    path: str  # as declared in the route, without /api, e.g. "tenants/{tenant}/backups"
    method: str
    summary: str
    operation_id: str
    request: type[BaseModel] | dict[str, Any] | None = None
    responses: dict[int, type[BaseModel] | dict[str, Any] | None] = field(default_factory=dict)
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth: str = "function"
    media: str = "application/json"  # of its success responses; "text/html" for pages (errors may be either)


_OPERATIONS: list[Operation] = []


def document(path: str, method: str, summary: str, operation_id: str, *,
             request: type[BaseModel] | dict[str, Any] | None = None,
             responses: dict[int, type[BaseModel] | dict[str, Any] | None] | None = None,
             query: dict[str, dict[str, Any]] | None = None,
             path_params: dict[str, dict[str, Any]] | None = None, auth: str = "function",
             media: str = "application/json") -> None:
    """Declare one route's contract; errors (4xx/5xx) are added with the shared error shape.

    ``media="text/html"`` declares a page: its successes are HTML, and its errors are HTML pages when the
    function answers them, or the shared JSON error when the host refuses the request before it runs.
    """
    for op in _OPERATIONS:
        if op.path == path and op.method == method.upper():
            return  # module re-imported: already documented
    _OPERATIONS.append(Operation(path=path, method=method.upper(), summary=summary, operation_id=operation_id,
                                 request=request, responses=responses or {200: None}, query=query or {},
                                 path_params=path_params or {}, auth=auth, media=media))


def operations() -> list[Operation]:
    return list(_OPERATIONS)


def _template(path: str) -> str:
    """``tenants/{tenant}/backups/{id?}`` → ``/api/tenants/{tenant}/backups/{id}``; constraints dropped."""
    return "/api/" + re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)(:[^}?]*)?\??\}", r"{\1}", path).strip("/")


def _schema(item: type[BaseModel] | dict[str, Any] | None, components: dict[str, Any]) -> dict[str, Any]:
    if item is None:
        return {"type": "object"}
    if isinstance(item, dict):
        return item
    schema = item.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[item.__name__] = schema
    return {"$ref": f"#/components/schemas/{item.__name__}"}


def build_document(title: str = "continuity recovery control plane", version: str = "1") -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for op in sorted(_OPERATIONS, key=lambda o: (o.path, o.method)):
        url = _template(op.path)
        params: list[dict[str, Any]] = []
        for name in re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", url):
            params.append({"name": name, "in": "path", "required": True,
                           "schema": op.path_params.get(name, {"type": "string"})})
        for name, schema in op.query.items():
            params.append({"name": name, "in": "query", "required": False, "schema": schema})
        responses: dict[str, Any] = {}
        for status, body in op.responses.items():
            responses[str(status)] = {"description": "success" if status < 300 else "see body",
                                      "content": {op.media: {"schema": _schema(body, components)}}}
        error_content: dict[str, Any] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        if op.media != "application/json":
            error_content[op.media] = {"schema": {"type": "string"}}
        error = {"content": error_content}
        for code, text in (("400", "invalid request"), ("401", "missing or wrong key"),
                             ("404", "not found"), ("413", "body too large"), ("500", "internal error")):
            responses.setdefault(code, {"description": text, **error})
        if op.auth == "anonymous":
            responses.pop("401", None)
        entry: dict[str, Any] = {"summary": op.summary, "operationId": op.operation_id, "parameters": params,
                                 "responses": responses}
        if op.request is not None:
            entry["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": _schema(op.request, components)}}}
            responses.setdefault("409", {"description": "conflict", **error})
            responses.setdefault("403", {"description": "forbidden", **error})
            responses.setdefault("415", {"description": "not sent as application/json (decisions refuse it)",
                                         **error})
        if op.auth != "anonymous":
            entry["security"] = [{"functionKey": []}]
        paths.setdefault(url, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Errors are JSON {\"error\": {\"code\", \"message\"}}; 4xx is for the caller to fix."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
        },
    }
