from __future__ import annotations

import re

from tests.app_functions import app_functions
from triggers.api_docs import build_document


def _declared_routes() -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for fn in app_functions():
        for binding in fn.get_bindings_dict()["bindings"]:
            if binding["type"] == "httpTrigger":
                path = "/api/" + re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)(:[^}?]*)?\??\}", r"{\1}",
                                        binding["route"]).strip("/")
                for method in binding.get("methods") or ["GET", "POST"]:
                    routes.add((path, str(getattr(method, "value", method)).upper()))
    return routes


def test_openapi_documents_exactly_the_routes_function_app_declares() -> None:
    declared = _declared_routes()  # imports function_app, whose trigger modules document their routes
    document = build_document()
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    assert documented == declared


def test_every_operation_documents_the_error_shape() -> None:
    app_functions()
    document = build_document()
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["responses"]["500"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}, (path, method)
