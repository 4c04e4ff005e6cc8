"""The devhost's Durable Functions engine: a PostgreSQL task hub that replays orchestrators through the SDK.

``engine.DurableEngine`` is what the host shell imports. ``replay`` decides one orchestration episode
without I/O; ``store`` persists the task hub; ``management`` serves the Durable HTTP API the
``DurableOrchestrationClient`` calls; ``invoke`` calls functions the way the Python worker does.
"""
