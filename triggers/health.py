"""``GET /api/health``: liveness of the Function App itself (anonymous, no details that leak)."""

from __future__ import annotations

import json

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"status": "ok"}), mimetype="application/json")
