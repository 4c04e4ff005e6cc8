"""The Function App: registers the blueprints of triggers, orchestrations and activities; nothing else."""

import azure.durable_functions as df
import azure.functions as func

from activities import failover as failover_activities
from activities import recovery as recovery_activities
from activities import validation as validation_activities
from orchestrations import failover as failover_orchestration
from orchestrations import nightly_validation, tenant_recovery, tenant_validation
from triggers import failover as failover_triggers
from triggers import health, openapi
from triggers import recovery as recovery_triggers
from triggers import validation as validation_triggers

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (
    health.bp,
    openapi.bp,
    validation_triggers.bp, nightly_validation.bp, tenant_validation.bp, validation_activities.bp,
    failover_triggers.bp, failover_orchestration.bp, failover_activities.bp,
    recovery_triggers.bp, tenant_recovery.bp, recovery_activities.bp,
):
    app.register_functions(blueprint)
