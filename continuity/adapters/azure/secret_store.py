"""Recovery credentials: Azure Key Vault in production, a private local directory for `make run`.

Both sources answer the same two questions: is a secret present, and what is it. Secret values are
never logged, never put in an exception message, never returned by ``repr``.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from pathlib import Path
from typing import Protocol

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import HttpTransport
from azure.keyvault.secrets import SecretClient

from continuity.kernel import settings
from continuity.kernel.errors import ConfigError, ContinuityError, InvalidRequest, StoreUnavailable

SECRET_NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")  # Key Vault's rule for secret names
# The HMAC key of approval decisions (only the approve/reject trigger and the verify activity read it).
DECISION_KEY_SECRET_NAME = "continuity-decision-mac-key"  # noqa: S105 - a name, not a value
DECISION_KEY_CACHE_SECONDS = 300.0  # a rotated key in Key Vault is picked up within this time


class SecretMissing(ContinuityError):
    code = "secret_missing"
    http_status = 404


def validate_secret_name(name: str) -> str:
    if not SECRET_NAME_RE.match(name):
        raise InvalidRequest(f"secret name {name[:60]!r} must be 1-127 letters, digits and dashes (Key Vault's rule)")
    return name


class SecretSource(Protocol):
    """Where recovery credentials live. ``has_secret`` never raises for a missing secret;
    ``get_secret`` raises :class:`SecretMissing`."""

    def has_secret(self, name: str) -> bool: ...

    def get_secret(self, name: str) -> str: ...


class KeyVaultSecrets:
    """Key Vault through ``azure-keyvault-secrets``; every call bounded by the client's timeouts."""

    def __init__(self, vault_url: str, credential: TokenCredential, *, transport: HttpTransport | None = None) -> None:
        kwargs: dict[str, object] = {"connection_timeout": 10, "read_timeout": 30, "retry_total": 3}
        if transport is not None:
            kwargs["transport"] = transport
        self.vault_url = vault_url
        self.client = SecretClient(vault_url, credential, **kwargs)

    def get_secret(self, name: str) -> str:
        validate_secret_name(name)
        try:
            secret = self.client.get_secret(name)
        except ResourceNotFoundError as exc:
            raise SecretMissing(f"secret {name} is not in Key Vault {self.vault_url}; add it "
                                f"(az keyvault secret set --vault-name ... --name {name})") from exc
        except HttpResponseError as exc:
            code = exc.error.code if exc.error is not None else str(exc.status_code)
            inner = (exc.error.innererror or {}).get("code") if exc.error is not None else None
            if inner == "SecretDisabled":
                raise SecretMissing(f"secret {name} in {self.vault_url} is disabled; enable it") from exc
            if exc.status_code == 403:
                raise StoreUnavailable(
                    f"Key Vault {self.vault_url} refused to read {name} ({code}): grant the Function App's identity "
                    "'Key Vault Secrets User', or enable the secret") from exc
            raise StoreUnavailable(f"Key Vault {self.vault_url} failed reading {name} ({code})") from exc
        except AzureError as exc:
            raise StoreUnavailable(f"Key Vault {self.vault_url} is unreachable: {type(exc).__name__}") from exc
        if secret.properties.enabled is False or secret.value is None:
            raise SecretMissing(f"secret {name} in {self.vault_url} is disabled or empty")
        return secret.value

    def has_secret(self, name: str) -> bool:
        try:
            self.get_secret(name)
        except SecretMissing:
            return False
        return True


class LocalSecrets:
    """One owner-only file per secret under ``{local dir}/secrets/vault``: the local Key Vault."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or settings.LocalStackSettings.from_env().base_dir / "secrets" / "vault"

    def _path(self, name: str) -> Path:
        return self.directory / validate_secret_name(name)

    def get_secret(self, name: str) -> str:
        path = self._path(name)
        if not path.exists():
            raise SecretMissing(f"secret {name} is not in the local secret source {self.directory}; "
                                "`continuity local up` seeds the recovery credentials")
        return path.read_text().rstrip("\n")

    def has_secret(self, name: str) -> bool:
        return self._path(name).exists()

    def set_secret(self, name: str, value: str) -> None:
        from continuity.adapters.local.private_files import write_private

        write_private(self._path(name), value, private_dir=True)

    def ensure_secret(self, name: str, value: str) -> str:
        """The secret ``name``, created with ``value`` (owner-only, exclusively) if it does not exist yet."""
        from continuity.adapters.local.private_files import create_private

        path = self._path(name)
        if not path.exists():
            create_private(path, value)
        return self.get_secret(name)


def secret_source() -> SecretSource:
    """Key Vault when CONTINUITY_KEYVAULT_URL is set (managed identity), else the local directory."""
    url = settings.get("CONTINUITY_KEYVAULT_URL")
    if url:
        from azure.identity import DefaultAzureCredential

        return KeyVaultSecrets(url, DefaultAzureCredential())
    return LocalSecrets()


_key_cache: dict[str, tuple[float, bytes]] = {}
_key_lock = threading.Lock()


def decision_key(source: SecretSource | None = None) -> bytes:
    """The HMAC-SHA256 key that binds approval decisions to their run (never logged, never in a history).

    Locally it is created on first use, 256 random bits, in an owner-only file of the local secret source
    (exclusive creation: the trigger and the activity always agree). In Key Vault it must exist: the Function
    App's identity reads secrets and cannot write them. Key Vault answers are cached for
    DECISION_KEY_CACHE_SECONDS so an approval does not wait on the vault.

    :raises ConfigError: the key is missing from Key Vault. :raises StoreUnavailable: the vault failed.
    """
    store = source or secret_source()
    if isinstance(store, LocalSecrets):
        return store.ensure_secret(DECISION_KEY_SECRET_NAME, secrets.token_hex(32)).encode()
    where = getattr(store, "vault_url", type(store).__name__)
    now = time.monotonic()
    with _key_lock:
        cached = _key_cache.get(where)
        if cached is not None and now - cached[0] < DECISION_KEY_CACHE_SECONDS:
            return cached[1]
    try:
        key = store.get_secret(DECISION_KEY_SECRET_NAME).encode()
    except SecretMissing as exc:
        raise ConfigError(f"the approval decision key {DECISION_KEY_SECRET_NAME} is missing from {where}; create it "
                          f"once: az keyvault secret set --vault-name ... --name {DECISION_KEY_SECRET_NAME} "
                          "--value $(openssl rand -hex 32)") from exc
    if len(key) < 32:
        raise ConfigError(f"the approval decision key {DECISION_KEY_SECRET_NAME} in {where} is shorter than 32 "
                          "characters; set 64 random hex digits")
    with _key_lock:
        _key_cache[where] = (now, key)
    return key


def seed_local_recovery_credentials(regions: list[str], password: str, source: LocalSecrets | None = None) -> None:
    """Locally the recovery credential of every region is the local clusters' superuser password."""
    from continuity.failover.rules import recovery_secret_name

    target = source or LocalSecrets()
    for region in regions:
        name = recovery_secret_name(region)
        if not target.has_secret(name):
            target.set_secret(name, password)
