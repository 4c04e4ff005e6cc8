"""App settings, read from the environment as Azure Functions provides them.

Locally, ``local.settings.json`` (git-ignored; ``local.settings.example.json`` documents every key)
is loaded into the environment by :func:`load_local_settings`, the way ``func start`` does: a
variable already set in the environment wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from continuity.kernel.errors import ConfigError

if TYPE_CHECKING:
    from continuity.kernel.tenants import Registry

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Every setting the code reads, with its local default. The keys of local.settings.example.json
# must equal this set (a test checks it), and so must the Function App's settings in infra/.
DEFAULTS: dict[str, str] = {
    "CONTINUITY_LOCAL_DIR": ".local",
    "CONTINUITY_TENANTS_FILE": "config/tenants.yaml",
    "CONTINUITY_PRIMARY_PORT": "15432",
    "CONTINUITY_REPLICA_PORT": "15433",
    "CONTINUITY_CONTROL_PORT": "15434",
    "CONTINUITY_SANDBOX_PORT": "15435",
    "CONTINUITY_AZURITE_BLOB_PORT": "10000",
    "CONTINUITY_AZURITE_QUEUE_PORT": "10001",
    "CONTINUITY_AZURITE_TABLE_PORT": "10002",
    "CONTINUITY_DEVHOST_PORT": "7071",
    "CONTINUITY_DEVHOST_APP": "function_app:app",
    "CONTINUITY_DEVHOST_MASTER_KEY": "",
    "CONTINUITY_DEVHOST_FUNCTION_KEY": "",
    "CONTINUITY_DEVHOST_EVENTGRID_KEY": "",
    "CONTINUITY_DEVHOST_WATCHED_CONTAINERS": "backups",
    "CONTINUITY_DEVHOST_BLOB_POLL_SECONDS": "2",
    "CONTINUITY_DEVHOST_SUBSCRIPTIONS": (
        '[{"name":"backups-created","source":"storage","function":"catalog_blob_created","includedEventTypes":["Microsoft.Storage.BlobCreated"],"subjectBeginsWith":"/blobServices/default/containers/backups/"},{"name":"backup-failed","source":"topic","function":"backup_failed","includedEventTypes":["Continuity.Backup.Failed"]}]'
    ),
    "CONTINUITY_PG_SUPERUSER": "continuity",
    "CONTINUITY_PG_OS_USER": "continuity-pg",
    "CONTINUITY_STORAGE_CONNECTION": "",
    "CONTINUITY_CONTROL_DSN": "",
    "CONTINUITY_BACKUP_CONTAINER": "backups",
    "CONTINUITY_ATTACHMENT_CONTAINER": "attachments",
    "CONTINUITY_EVIDENCE_CONTAINER": "evidence",
    "CONTINUITY_WAL_CONTAINER": "wal",
    "CONTINUITY_ATTACHMENT_KEEP_CONTAINER": "attachments-kept",
    "CONTINUITY_ARCHIVE_TIMEOUT_SECONDS": "60",
    "CONTINUITY_BARMAN_BIN": "",
    "CONTINUITY_NIGHTLY_SCHEDULE": "0 0 2 * * *",
    "CONTINUITY_CATALOG_RECONCILE_SCHEDULE": "0 */15 * * * *",
    "CONTINUITY_RETENTION_SCHEDULE": "0 30 3 * * *",
    "CONTINUITY_BACKUP_SCHEDULE": "0 */5 * * * *",
    "CONTINUITY_NIGHTLY_PARALLELISM": "2",
    "CONTINUITY_APPROVAL_WINDOW_MINUTES": "30",
    "CONTINUITY_PLATFORM_AUTH": "false",
    "CONTINUITY_LOCAL_USERS_WITH_PLATFORM_AUTH": "false",
    "CONTINUITY_FAILOVER_FENCE_MODE": "read-only",
    "CONTINUITY_FAILOVER_STEP_PAUSE": "",
    "CONTINUITY_INCIDENT_RETRY_ATTEMPTS": "3",
    "CONTINUITY_INCIDENT_FIRST_RETRY_SECONDS": "30",
    "CONTINUITY_EVENTGRID_TOPIC_ENDPOINT": "",
    "CONTINUITY_EVENTGRID_TOPIC_KEY": "",
    "CONTINUITY_KEYVAULT_URL": "",
    "CONTINUITY_PITR_SUBNET_ID": "",
    "CONTINUITY_PITR_DNS_ZONE_ID": "",
    "CONTINUITY_PITR_POLL_SECONDS": "30",
    "CONTINUITY_PITR_TIMEOUT_MINUTES": "60",
    "CONTINUITY_MAX_REQUEST_BYTES": "1048576",
    "PG_BIN": "",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
}

# Azurite's published development account: a well-known constant, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # noqa: S105
)


def load_local_settings(path: Path | None = None) -> None:
    """Load ``Values`` of local.settings.json into the environment without overriding it."""
    path = path or PROJECT_ROOT / "local.settings.json"
    if not path.exists():
        return
    try:
        values = json.loads(path.read_text()).get("Values", {})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); copy local.settings.example.json") from exc
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def get(key: str) -> str:
    """The value of a setting: the environment, else the documented local default."""
    if key not in DEFAULTS and key not in ("AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME"):
        raise KeyError(f"undocumented setting {key!r}: add it to continuity.kernel.settings.DEFAULTS")
    return os.environ.get(key, DEFAULTS.get(key, ""))


def get_int(key: str) -> int:
    raw = get(key)
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"setting {key} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class LocalStackSettings:
    """Where the local counterparts of the Azure services live and listen."""

    base_dir: Path
    primary_port: int
    replica_port: int
    control_port: int
    sandbox_port: int
    azurite_blob_port: int
    azurite_queue_port: int
    azurite_table_port: int
    devhost_port: int
    superuser: str
    os_user: str
    pg_bin: str

    @classmethod
    def from_env(cls) -> LocalStackSettings:
        base = Path(get("CONTINUITY_LOCAL_DIR"))
        if not base.is_absolute():
            base = PROJECT_ROOT / base
        return cls(
            base_dir=base,
            primary_port=get_int("CONTINUITY_PRIMARY_PORT"),
            replica_port=get_int("CONTINUITY_REPLICA_PORT"),
            control_port=get_int("CONTINUITY_CONTROL_PORT"),
            sandbox_port=get_int("CONTINUITY_SANDBOX_PORT"),
            azurite_blob_port=get_int("CONTINUITY_AZURITE_BLOB_PORT"),
            azurite_queue_port=get_int("CONTINUITY_AZURITE_QUEUE_PORT"),
            azurite_table_port=get_int("CONTINUITY_AZURITE_TABLE_PORT"),
            devhost_port=get_int("CONTINUITY_DEVHOST_PORT"),
            superuser=get("CONTINUITY_PG_SUPERUSER"),
            os_user=get("CONTINUITY_PG_OS_USER"),
            pg_bin=get("PG_BIN"),
        )

    @property
    def azurite_connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.azurite_blob_port}/{AZURITE_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.azurite_queue_port}/{AZURITE_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.azurite_table_port}/{AZURITE_ACCOUNT};"
        )

    @property
    def pgpass_file(self) -> Path:
        return self.base_dir / "secrets" / "pgpass"


def storage_connection_string() -> str:
    """The backups storage account: the configured one, else the local Azurite."""
    explicit = get("CONTINUITY_STORAGE_CONNECTION")
    if explicit:
        return explicit
    return LocalStackSettings.from_env().azurite_connection_string


def configured_registry() -> Registry:
    """The tenant registry named by ``CONTINUITY_TENANTS_FILE`` (relative paths from the project root)."""
    from continuity.kernel.tenants import load_registry

    path = Path(get("CONTINUITY_TENANTS_FILE"))
    return load_registry(path if path.is_absolute() else PROJECT_ROOT / path)
