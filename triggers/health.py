"""``GET /api/health``: liveness of the Function App itself (anonymous, no details that leak)."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from triggers.api_docs import document
from triggers.common import json_response

bp = df.Blueprint()

document("health", "GET", "Liveness of the Function App", "getHealth", auth="anonymous",
         responses={200: {"type": "object", "required": ["status"],
                          "properties": {"status": {"type": "string", "enum": ["ok"]}}}})


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"status": "ok"})
