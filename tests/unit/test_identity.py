"""Principals, roles, X-MS-CLIENT-PRINCIPAL parsing and local API keys."""

from __future__ import annotations

import base64
import json

import pytest

from continuity.kernel.errors import Forbidden, InvalidRequest, Unauthorized
from continuity.kernel.identity import (
    LocalUser,
    Principal,
    Role,
    authenticate,
    hash_api_key,
    make_local_user,
    parse_client_principal,
    parse_roles,
    require_role,
    verify_api_key,
)

KEY_A = "ck_" + "a" * 43
KEY_B = "ck_" + "b" * 43
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OID_ADA = "0b6e6c1e-2a77-4d2c-9a57-3f4c1b2a9d01"
OID_AMIR = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def ids(oid: str, tid: str = TID, short: bool = False) -> list[dict[str, str]]:
    if short:
        return [{"typ": "oid", "val": oid}, {"typ": "tid", "val": tid}]
    return [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
            {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": tid}]


def users() -> list:
    return [make_local_user("olivia", [Role.OPERATOR], KEY_A, "salt1", "2026-01-01"),
            make_local_user("amir", [Role.APPROVER], KEY_B, "salt2", "2026-01-01")]


def client_principal(claims: list[dict[str, str]], **extra: str) -> str:
    doc = {"auth_typ": "aad", "name_typ": "preferred_username", "role_typ": "roles", "claims": claims, **extra}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_stored_user_keeps_a_salted_hash_never_the_key() -> None:
    user = users()[0]
    assert KEY_A not in json.dumps(user.to_json())
    assert user.key_sha256 == hash_api_key(KEY_A, "salt1")


def test_api_key_identifies_its_user_with_roles() -> None:
    principal = verify_api_key(KEY_B, users())
    assert principal == Principal("amir", frozenset({Role.APPROVER}), "key")
    assert principal.id == "key:amir"


def test_unknown_api_key_refused_without_echoing_it() -> None:
    with pytest.raises(Unauthorized) as err:
        verify_api_key("ck_" + "z" * 43, users())
    assert "z" * 10 not in str(err.value)


def test_malformed_api_key_refused() -> None:
    with pytest.raises(Unauthorized, match="malformed"):
        verify_api_key("hunter2", users())


def test_chosen_weak_key_refused_at_user_creation() -> None:
    with pytest.raises(InvalidRequest, match="generated, not chosen"):
        make_local_user("eve", [Role.ADMIN], "ck_short", "s", "")


def test_user_without_roles_refused() -> None:
    with pytest.raises(InvalidRequest, match="at least one role"):
        make_local_user("eve", [], KEY_A, "s", "")


def test_bad_user_name_refused() -> None:
    with pytest.raises(InvalidRequest, match="user name"):
        make_local_user("Eve Smith", [Role.ADMIN], KEY_A, "s", "")


def test_unknown_role_name_refused_naming_the_accepted_roles() -> None:
    with pytest.raises(InvalidRequest, match="unknown role 'root'; roles are reader, operator, approver, admin"):
        parse_roles(["root"])


def test_namespaced_app_role_accepted() -> None:
    assert parse_roles(["Continuity.Approver"]) == frozenset({Role.APPROVER})


def test_client_principal_gives_name_and_known_roles() -> None:
    header = client_principal([{"typ": "preferred_username", "val": "Amir@Example.com"},
                               {"typ": "roles", "val": "Continuity.Approver"},
                               {"typ": "roles", "val": "Some.Other.App.Role"}, *ids(OID_AMIR),
                               {"typ": "continuity_tenant", "val": "*"}])
    principal = parse_client_principal(header)
    assert principal == Principal("amir@example.com", frozenset({Role.APPROVER}), "aad", id=f"aad:{TID}/{OID_AMIR}")


def test_a_platform_principal_without_a_tenant_scope_claim_sees_no_tenant() -> None:
    """Fail closed (issue 21 item 8): a directory that assigned no scope grants nothing, not everything."""
    header = client_principal([{"typ": "preferred_username", "val": "new@example.com"},
                               {"typ": "roles", "val": "Continuity.Admin"}, *ids(OID_AMIR)])
    principal = parse_client_principal(header)
    assert principal.tenants == frozenset() and not principal.sees("acme-finance")


def test_client_principal_that_is_not_base64_json_refused() -> None:
    with pytest.raises(Unauthorized, match="not base64-encoded JSON"):
        parse_client_principal("%%%not-base64")


def test_client_principal_without_claims_refused() -> None:
    with pytest.raises(Unauthorized, match="no claims list"):
        parse_client_principal(base64.b64encode(b'{"auth_typ": "aad"}').decode())


def test_client_principal_naming_nobody_refused() -> None:
    with pytest.raises(Unauthorized, match="names nobody"):
        parse_client_principal(client_principal([{"typ": "roles", "val": "admin"}]))


def test_client_principal_header_refused_when_platform_auth_is_off() -> None:
    header = client_principal([{"typ": "preferred_username", "val": "mallory"}, {"typ": "roles", "val": "admin"}])
    with pytest.raises(Unauthorized, match="only trusted with platform authentication enabled"):
        authenticate({"X-MS-CLIENT-PRINCIPAL": header}, users(), platform_auth=False)


def test_client_principal_header_trusted_when_platform_auth_is_on() -> None:
    header = client_principal([{"typ": "preferred_username", "val": "ada"}, {"typ": "roles", "val": "admin"},
                               *ids(OID_ADA, short=True)])
    principal = authenticate({"x-ms-client-principal": header}, [], platform_auth=True)
    assert principal.name == "ada" and principal.has(Role.APPROVER) and principal.id == f"aad:{TID}/{OID_ADA}"


def test_request_without_credentials_refused() -> None:
    with pytest.raises(Unauthorized, match="no credentials"):
        authenticate({"Content-Type": "application/json"}, users(), platform_auth=False)


def test_api_key_header_is_case_insensitive() -> None:
    assert authenticate({"X-Continuity-Key": KEY_A}, users(), platform_auth=False).name == "olivia"


def test_operator_lacking_approver_role_is_forbidden_with_reason() -> None:
    olivia = verify_api_key(KEY_A, users())
    with pytest.raises(Forbidden, match="olivia may not approve failovers: it needs the approver role "
                                        r"\(holds: operator\)"):
        require_role(olivia, Role.APPROVER, "approve failovers")


def test_identity_store_keeps_hashes_mode_600_and_the_key_only_in_the_client_keyring(tmp_path) -> None:
    import stat

    from continuity.adapters.local.identity_store import IdentityStore
    from continuity.kernel.errors import Conflict

    store = IdentityStore(tmp_path)
    key = store.add_user("amir", [Role.APPROVER])
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert key not in (tmp_path / "users.json").read_text()
    assert store.client_key("amir") == key
    assert stat.S_IMODE(store.key_file("amir").stat().st_mode) == 0o600
    assert verify_api_key(key, store.list_users()).name == "amir"
    with pytest.raises(Conflict, match="already exists; use --replace"):
        store.add_user("amir", [Role.ADMIN])
    rotated = store.add_user("amir", [Role.ADMIN], replace=True)
    with pytest.raises(Unauthorized):
        verify_api_key(key, store.list_users())
    assert verify_api_key(rotated, store.list_users()).roles == frozenset({Role.ADMIN})
    assert store.remove_user("amir") is True and store.remove_user("amir") is False


def test_tenant_scoped_key_sees_only_its_tenants() -> None:
    from continuity.kernel.identity import require_tenant

    key = "ck_" + "s" * 40
    user = make_local_user("acme-auditor", [Role.READER], key, "salt", "2026-11-24T00:00:00Z", ["acme-finance"])
    principal = verify_api_key(key, [user])
    require_tenant(principal, "acme-finance")
    with pytest.raises(Forbidden, match="acme-auditor is scoped to other tenants and may not read tenant globex"):
        require_tenant(principal, "globex")
    assert LocalUser.from_json(user.to_json()).tenants == frozenset({"acme-finance"})


def test_unscoped_key_sees_every_tenant_and_every_role_reads() -> None:
    key = "ck_" + "o" * 40
    principal = verify_api_key(key, [make_local_user("ops", [Role.OPERATOR], key, "salt", "t")])
    assert principal.sees("acme-finance") and principal.sees("globex")
    assert principal.has(Role.READER)


def test_platform_principal_tenant_claims_scope_it() -> None:
    doc = {"claims": [{"typ": "name", "val": "Ann@Example.com"}, {"typ": "roles", "val": "Continuity.Reader"},
                      {"typ": "continuity_tenant", "val": "globex"}, *ids(OID_ADA)]}
    principal = parse_client_principal(base64.b64encode(json.dumps(doc).encode()).decode())
    assert principal.tenants == frozenset({"globex"})
    assert principal.has(Role.READER) and not principal.has(Role.OPERATOR)


def test_empty_tenant_scope_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="a tenant scope names at least one tenant"):
        make_local_user("nobody-scope", [Role.READER], "ck_" + "x" * 40, "salt", "t", [])


# ---- identity by immutable id -------------------------------------------------------------------


@pytest.mark.parametrize("claims", [
    [{"typ": "preferred_username", "val": "mallory@example.com"}, {"typ": "roles", "val": "admin"}],
    [{"typ": "preferred_username", "val": "mallory@example.com"}, {"typ": "oid", "val": OID_ADA}],
    [{"typ": "preferred_username", "val": "mallory@example.com"}, {"typ": "tid", "val": TID}],
    [{"typ": "name", "val": "mallory"}, {"typ": "oid", "val": "ada"}, {"typ": "tid", "val": TID}],
])
def test_platform_principal_without_object_id_and_tenant_id_is_refused_fail_closed(
        claims: list[dict[str, str]]) -> None:
    with pytest.raises(Unauthorized, match="no object id and tenant id"):
        authenticate({"X-MS-CLIENT-PRINCIPAL": client_principal(claims)}, users(), platform_auth=True)


def test_platform_principal_is_known_by_oid_and_tid_not_by_its_changing_name() -> None:
    before = parse_client_principal(client_principal([{"typ": "preferred_username", "val": "ada@old.example"},
                                                      *ids(OID_ADA)]))
    after = parse_client_principal(client_principal([{"typ": "preferred_username", "val": "ada@new.example"},
                                                     *ids(OID_ADA.upper(), short=True)]))
    other = parse_client_principal(client_principal([{"typ": "preferred_username", "val": "ada@old.example"},
                                                     *ids(OID_AMIR)]))
    assert before.id == after.id == f"aad:{TID}/{OID_ADA}"
    assert before.same_person([after.id]) and not before.same_person([other.id])


def test_local_keys_are_off_with_platform_auth_unless_the_setting_allows_them() -> None:
    with pytest.raises(Unauthorized, match="local API keys are off while platform authentication is on"):
        authenticate({"X-Continuity-Key": KEY_A}, users(), platform_auth=True)
    assert authenticate({"X-Continuity-Key": KEY_A}, users(), platform_auth=True, allow_keys=True).id == "key:olivia"
    assert authenticate({"X-Continuity-Key": KEY_A}, users(), platform_auth=False).id == "key:olivia"


def test_a_linked_identity_is_the_same_person_from_either_side() -> None:
    ada_id = f"aad:{TID}/{OID_ADA}"
    linked = [make_local_user("ada-local", [Role.OPERATOR], KEY_A, "salt1", "t", links=[ada_id.upper()]),
              make_local_user("amir", [Role.APPROVER], KEY_B, "salt2", "t")]
    by_key = verify_api_key(KEY_A, linked)
    assert by_key.id == "key:ada-local" and by_key.linked == frozenset({ada_id})
    header = client_principal([{"typ": "preferred_username", "val": "ada@example.com"}, *ids(OID_ADA)])
    by_platform = authenticate({"X-MS-CLIENT-PRINCIPAL": header}, linked, platform_auth=True)
    assert by_platform.linked == frozenset({"key:ada-local"})
    assert by_platform.same_person(by_key.ids) and by_key.same_person(by_platform.ids)
    assert not verify_api_key(KEY_B, linked).same_person(by_platform.ids)
    assert LocalUser.from_json(linked[0].to_json()).links == frozenset({ada_id})


def test_links_must_be_principal_ids_and_not_the_user_itself() -> None:
    with pytest.raises(InvalidRequest, match="must be aad:"):
        make_local_user("ada-local", [Role.OPERATOR], KEY_A, "s", "t", links=["ada@example.com"])
    with pytest.raises(InvalidRequest, match="cannot link to itself"):
        make_local_user("ada-local", [Role.OPERATOR], KEY_A, "s", "t", links=["key:ada-local"])
