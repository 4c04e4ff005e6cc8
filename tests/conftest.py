"""Session fixtures: a real local stack (PostgreSQL clusters + Azurite) on test ports.

Test devhost ports, offsets from the base: +71 the stack's own devhost (function_app); +72..+79 the devhost
shell tests (sample app); +81 failover e2e; +82 durable conformance; +83 durable crash; +85 tenant recovery
e2e; +86 the chaos suite (its clusters on +56..+59); +89 the page tests (their clusters on +60..+63);
+98 a port nobody listens on.

Tests never share the `make run` stack: they use ``.local/test-<base>`` and ports offset from
``CONTINUITY_TEST_PORT_BASE`` (default 26400), so a developer's running stack is untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Below Linux's ephemeral port range (32768-60999), so no client connection holds a port a test server needs.
PORT_BASE = int(os.environ.get("CONTINUITY_TEST_PORT_BASE", "26400"))
TEST_ENV = {
    "CONTINUITY_LOCAL_DIR": f".local/test-{PORT_BASE}",
    "CONTINUITY_AZURITE_BLOB_PORT": str(PORT_BASE),
    "CONTINUITY_AZURITE_QUEUE_PORT": str(PORT_BASE + 1),
    "CONTINUITY_AZURITE_TABLE_PORT": str(PORT_BASE + 2),
    "CONTINUITY_PRIMARY_PORT": str(PORT_BASE + 32),
    "CONTINUITY_REPLICA_PORT": str(PORT_BASE + 33),
    "CONTINUITY_CONTROL_PORT": str(PORT_BASE + 34),
    "CONTINUITY_SANDBOX_PORT": str(PORT_BASE + 35),
    "CONTINUITY_DEVHOST_PORT": str(PORT_BASE + 71),
    "CONTINUITY_STORAGE_CONNECTION": "",
    "CONTINUITY_CONTROL_DSN": "",
    "CONTINUITY_TENANTS_FILE": "config/tenants.yaml",
    # The backup timer would take backups every 5 minutes under tests that count them: tests tick it themselves.
    "CONTINUITY_BACKUP_SCHEDULE": "0 0 0 1 1 *",
    # The quarter-hourly reconcile would mark catalog rows a test wrote without blobs (the pages' synthetic
    # estates) as missing whenever a run crosses :00, :15, :30 or :45: tests reconcile through the API instead.
    "CONTINUITY_CATALOG_RECONCILE_SCHEDULE": "0 0 0 1 1 *",
    # The nightly validation (02:00 UTC) and retention (03:30 UTC) would start under whatever runs then: scratch
    # databases in the sandbox tests count, backups the retention tests keep. Tests start both themselves.
    "CONTINUITY_NIGHTLY_SCHEDULE": "0 0 0 1 1 *",
    "CONTINUITY_RETENTION_SCHEDULE": "0 0 0 1 1 *",
}
# Set before any test module imports the package, so every settings read sees the test stack.
os.environ.update(TEST_ENV)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config: pytest.Config) -> str:
    """The chaos suite's seed, printed first so a failing run can be replayed (tests/chaos)."""
    from tests.chaos.support import SEED

    return f"chaos seed: {SEED} (replay: CONTINUITY_CHAOS_SEED={SEED} pytest tests/chaos)"


@pytest.fixture(scope="session")
def stack() -> Iterator[object]:
    """The local stack, up for the whole session and stopped at its end."""

    from continuity.adapters.local.local_stack import LocalStack
    from continuity.cli import stack as whole_stack

    local = LocalStack()
    if not os.environ.get("CONTINUITY_TEST_KEEP_STACK"):
        # Every session starts from nothing: no catalog, task hub or blobs left by an earlier run.
        whole_stack.remove(local)
    whole_stack.up(local)
    yield local
    if not os.environ.get("CONTINUITY_TEST_KEEP_STACK"):
        whole_stack.down(local)


@pytest.fixture(scope="session")
def blob_store(stack: object) -> object:
    from continuity.adapters.storage.blob_store import BlobStore

    store = BlobStore()
    store.ensure_containers(["backups", "attachments", "evidence"])
    return store
