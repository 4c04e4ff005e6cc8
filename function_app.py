"""The Function App: registers the blueprints of triggers, orchestrations and activities; nothing else."""

import azure.durable_functions as df
import azure.functions as func

from activities import approvals as approval_activities
from activities import backups as backup_activities
from activities import catalog as catalog_activities
from activities import failover as failover_activities
from activities import incidents as incident_activities
from activities import pitr as pitr_activities
from activities import recovery as recovery_activities
from activities import retention as retention_activities
from activities import validation as validation_activities
from continuity import telemetry
from orchestrations import (
    backup_incident,
    catalog_ingest,
    nightly_validation,
    pitr_validation,
    recovery_chain_incident,
    scheduled_backups,
    tenant_recovery,
    tenant_validation,
)
from orchestrations import failover as failover_orchestration
from orchestrations import retention as retention_orchestration
from triggers import backups as backup_triggers
from triggers import catalog as catalog_triggers
from triggers import failover as failover_triggers
from triggers import health, incidents, openapi, pages
from triggers import recovery as recovery_triggers
from triggers import retention as retention_triggers
from triggers import validation as validation_triggers

# Application Insights in Azure when its connection string is set (locally the devhost configures telemetry).
telemetry.configure_if_connected("continuity-functions")

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (
    health.bp,
    openapi.bp,
    pages.bp,
    approval_activities.bp,
    catalog_triggers.bp, catalog_ingest.bp, catalog_activities.bp,
    incidents.bp, backup_incident.bp, incident_activities.bp,
    validation_triggers.bp, nightly_validation.bp, tenant_validation.bp, validation_activities.bp,
    failover_triggers.bp, failover_orchestration.bp, failover_activities.bp,
    recovery_triggers.bp, tenant_recovery.bp, recovery_activities.bp,
    retention_triggers.bp, retention_orchestration.bp, retention_activities.bp,
    pitr_validation.bp, pitr_activities.bp,
    backup_triggers.bp, scheduled_backups.bp, recovery_chain_incident.bp, backup_activities.bp,
):
    app.register_functions(blueprint)
