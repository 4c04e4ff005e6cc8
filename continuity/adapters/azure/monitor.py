"""Azure Monitor (Application Insights) as the destination of every span, metric and log line."""

from __future__ import annotations

from azure.monitor.opentelemetry import configure_azure_monitor
from opentelemetry.sdk.resources import Resource


def export_to_azure_monitor(connection_string: str, resource: Resource, *, live_metrics: bool,
                            offline_storage: bool) -> None:
    """Install the Azure Monitor distro's providers and root log handler for this process (once per process)."""
    # Every span: a control plane emits few, and an auditor-facing trace must not be sampled away
    # (the distro defaults to a rate-limited sampler that drops the first spans of a process).
    configure_azure_monitor(connection_string=connection_string, resource=resource, logger_name="",
                            sampling_ratio=1.0, enable_live_metrics=live_metrics,
                            disable_offline_storage=not offline_storage)
