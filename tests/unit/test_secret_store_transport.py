"""Key Vault recovery credentials through the real azure-keyvault-secrets client, answered at the HTTP
transport with Key Vault's shapes: the 401 bearer challenge, 200 secret bundle, 404 SecretNotFound,
403 Forbidden (RBAC) and 403 SecretDisabled; plus the local secret directory."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from continuity.adapters.azure.secret_store import (
    KeyVaultSecrets,
    LocalSecrets,
    SecretMissing,
    seed_local_recovery_credentials,
)
from continuity.kernel.errors import InvalidRequest, StoreUnavailable
from tests.azure_transport import FakeTransport, Reply, StaticCredential

CHALLENGE = ('Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", '
             'resource="https://vault.azure.net"')


def vault() -> str:
    # A fresh vault name per test: the SDK caches the challenge per vault.
    return f"https://kv-{uuid.uuid4().hex[:12]}.vault.azure.net"


def key_vault(url: str, secrets: dict[str, dict]) -> FakeTransport:
    def handler(request: requests.PreparedRequest) -> Reply:
        if "Authorization" not in request.headers:
            return Reply(401, {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or "
                                         "PoP token."}}, {"WWW-Authenticate": CHALLENGE})
        name = urlparse(request.url).path.strip("/").split("/")[1]
        entry = secrets.get(name)
        if entry is None:
            return Reply(404, {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} was not "
                                         "found in this key vault. If you recently deleted this secret you may be able "
                                         "to recover it using the correct recovery command."}})
        if entry.get("forbidden"):
            return Reply(403, {"error": {"code": "Forbidden",
                                         "message": "Caller is not authorized to perform action on resource.",
                                         "innererror": {"code": "ForbiddenByRbac"}}})
        if entry.get("disabled"):
            return Reply(403, {"error": {"code": "Forbidden", "message": "Operation get is not allowed on a disabled "
                                         "secret.", "innererror": {"code": "SecretDisabled"}}})
        return Reply(200, {"value": entry["value"], "id": f"{url}/secrets/{name}/0f3b5c9e1d2a4b6c8e7f9a0b1c2d3e4f",
                           "attributes": {"enabled": True, "created": 1767225600, "updated": 1767225600,
                                          "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
                           "tags": {}})

    return FakeTransport(handler)


def test_present_secret_read_after_bearer_challenge() -> None:
    url = vault()
    fake = key_vault(url, {"pg-recovery-northeurope": {"value": "s3cret-value"}})
    credential = StaticCredential()
    source = KeyVaultSecrets(url, credential, transport=fake.transport)
    assert source.get_secret("pg-recovery-northeurope") == "s3cret-value"
    assert "Authorization" not in fake.requests[0].headers  # the challenge round trip
    assert fake.requests[-1].headers["Authorization"] == "Bearer test-token"
    assert credential.scopes[0] == ("https://vault.azure.net/.default",)
    assert source.has_secret("pg-recovery-northeurope") is True


def test_missing_secret_is_reported_missing_not_an_outage() -> None:
    url = vault()
    source = KeyVaultSecrets(url, StaticCredential(), transport=key_vault(url, {}).transport)
    assert source.has_secret("pg-recovery-northeurope") is False
    with pytest.raises(SecretMissing, match="secret pg-recovery-northeurope is not in Key Vault"):
        source.get_secret("pg-recovery-northeurope")


def test_disabled_secret_counts_as_missing() -> None:
    url = vault()
    source = KeyVaultSecrets(url, StaticCredential(),
                             transport=key_vault(url, {"pg-recovery-x": {"value": "v", "disabled": True}}).transport)
    assert source.has_secret("pg-recovery-x") is False


def test_rbac_refusal_is_an_outage_naming_the_role_to_grant() -> None:
    url = vault()
    source = KeyVaultSecrets(url, StaticCredential(),
                             transport=key_vault(url, {"pg-recovery-x": {"value": "v", "forbidden": True}}).transport)
    with pytest.raises(StoreUnavailable, match="grant the Function App's identity 'Key Vault Secrets User'"):
        source.has_secret("pg-recovery-x")


def test_secret_value_never_appears_in_errors() -> None:
    url = vault()
    source = KeyVaultSecrets(url, StaticCredential(),
                             transport=key_vault(url, {"pg-recovery-x": {"value": "v", "forbidden": True}}).transport)
    with pytest.raises(StoreUnavailable) as err:
        source.get_secret("pg-recovery-x")
    assert "s3cret" not in str(err.value)


def test_invalid_secret_name_refused_before_any_request() -> None:
    url = vault()
    fake = key_vault(url, {})
    with pytest.raises(InvalidRequest, match="must be 1-127 letters, digits and dashes"):
        KeyVaultSecrets(url, StaticCredential(), transport=fake.transport).get_secret("../etc/passwd")
    assert fake.requests == []


def test_local_secret_source_keeps_owner_only_files(tmp_path: Path) -> None:
    source = LocalSecrets(tmp_path / "vault")
    assert source.has_secret("pg-recovery-northeurope") is False
    seed_local_recovery_credentials(["northeurope"], "pw", source)
    assert source.get_secret("pg-recovery-northeurope") == "pw"
    mode = stat.S_IMODE((tmp_path / "vault" / "pg-recovery-northeurope").stat().st_mode)
    assert mode == 0o600
    with pytest.raises(SecretMissing, match="not in the local secret source"):
        source.get_secret("pg-recovery-eastus")


def test_cli_seed_credentials_fills_local_source_for_local_cluster_regions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from continuity.cli.main import main

    monkeypatch.setenv("CONTINUITY_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("CONTINUITY_KEYVAULT_URL", "")
    assert main(["failover", "seed-credentials"]) == 0
    source = LocalSecrets(tmp_path / "secrets" / "vault")
    assert source.has_secret("pg-recovery-northeurope") and source.has_secret("pg-recovery-westeurope")
    assert source.get_secret("pg-recovery-northeurope") == (tmp_path / "secrets" / "pg-superuser").read_text().strip()


def test_cli_seed_credentials_refused_when_key_vault_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from continuity.cli.main import main

    monkeypatch.setenv("CONTINUITY_KEYVAULT_URL", "https://kv-prod.vault.azure.net")
    assert main(["failover", "seed-credentials"]) == 2
