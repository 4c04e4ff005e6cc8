"""The chaos stack: its own clusters (ports +56..+59 from the test port base, Azurite shared), its own evidence
container, one Odoo-shaped tenant with a backup validated by the real nightly validation, and one devhost
(+86) serving function_app.py whose temporary folder is the suite's own (so its run folders can be counted)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from continuity.adapters.azure.secret_store import LocalSecrets, seed_local_recovery_credentials
from continuity.adapters.local.identity_store import IdentityStore
from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.storage.blob_store import BlobStore
from continuity.kernel.identity import Role
from continuity.kernel.tenants import Registry
from tests.chaos.support import ChaosHost
from tests.conftest import PORT_BASE
from tests.failover_support import dedicated_stack
from tests.recovery_support import backup_and_validate, seed, write_registry

DEVHOST_PORT = PORT_BASE + 86
CLUSTER_OFFSET = 56  # the chaos stack's primary, replica, control, sandbox: +56..+59
TENANT, DB = "cx-acme", "odoo_cx_acme"


@dataclass(frozen=True)
class Chaos:
    stack: LocalStack
    host: ChaosHost
    registry: Registry
    blobs: BlobStore
    tmpdir: Path  # the devhost's TMPDIR: its run folders land under it
    validated_backup: str


@pytest.fixture(scope="package")
def chaos(stack: LocalStack, blob_store: BlobStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    root = tmp_path_factory.mktemp("chaos")
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    registry = write_registry(root / "tenants.yaml", {TENANT: DB})
    with dedicated_stack(PORT_BASE, "chaos", offset=CLUSTER_OFFSET) as local, pytest.MonkeyPatch.context() as mp:
        s = local.settings
        env = {"CONTINUITY_LOCAL_DIR": str(s.base_dir), "CONTINUITY_PRIMARY_PORT": str(s.primary_port),
               "CONTINUITY_REPLICA_PORT": str(s.replica_port), "CONTINUITY_CONTROL_PORT": str(s.control_port),
               "CONTINUITY_SANDBOX_PORT": str(s.sandbox_port), "CONTINUITY_TENANTS_FILE": str(root / "tenants.yaml")}
        for key, value in env.items():
            mp.setenv(key, value)
        seed(local, blob_store, TENANT, DB)
        validated = backup_and_validate(registry, TENANT, blob_store)
        seed_local_recovery_credentials(["northeurope"], local.superuser_password(),
                                        LocalSecrets(local.base / "secrets" / "vault"))
        identities = IdentityStore(local.base)
        keys = {name: identities.add_user(name, roles, replace=True) for name, roles in (
            ("olivia", [Role.OPERATOR]), ("amir", [Role.APPROVER]))}
        host = ChaosHost(local, keys, DEVHOST_PORT, {
            **env, "CONTINUITY_APPROVAL_WINDOW_MINUTES": "30", "TMPDIR": str(tmpdir)})
        host.start_pausing(None)
        try:
            yield Chaos(local, host, registry, blob_store, tmpdir, validated)
        finally:
            host.stop()
