"""The Function App: registers the blueprints of triggers, orchestrations and activities; nothing else."""

import azure.durable_functions as df
import azure.functions as func

from triggers import health, openapi

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (
    health.bp,
    openapi.bp,
):
    app.register_functions(blueprint)
