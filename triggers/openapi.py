"""``GET /api/openapi.json``: the contract of every HTTP route of this app."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from triggers.api_docs import build_document, document
from triggers.common import json_response

bp = df.Blueprint()

document("openapi.json", "GET", "The OpenAPI document of this API", "getOpenApi",
         responses={200: {"type": "object", "required": ["openapi", "paths"]}}, auth="anonymous")


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(build_document())
