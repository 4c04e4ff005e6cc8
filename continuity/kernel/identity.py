"""Who is calling, and what they may do: principals, roles, and how a request proves its caller.

Two ways a caller is identified, both ending in a :class:`Principal`:

* **Platform authentication** (App Service Authentication / Entra ID in Azure): the platform puts
  ``X-MS-CLIENT-PRINCIPAL`` (base64 of a JSON document with ``claims``) on the request after it has
  authenticated the caller. Anyone can *send* that header to a host without the platform in front, so
  it is trusted only when the setting ``CONTINUITY_PLATFORM_AUTH`` says the platform is enabled.
* **Local API keys** (the devhost, `make run`): each local user has a random key; only a salted
  sha256 of it is stored. Keys are 256-bit random tokens, so a fast hash is enough (a slow KDF
  protects guessable passwords, not random keys); comparison is constant-time. With platform
  authentication on, keys are refused unless ``allow_keys`` says otherwise
  (``CONTINUITY_LOCAL_USERS_WITH_PLATFORM_AUTH``).

A principal is known by an immutable id, never by its display name: ``aad:{tid}/{oid}`` for a platform
principal (a principal without both claims is refused: fail closed), ``key:{user}`` for a local user.
A local user may declare linked identities (other principal ids of the same person); both directions of a
link end up in :attr:`Principal.linked`, so "is this the same person" is :meth:`Principal.same_person`.

Roles: ``operator`` requests failovers and recoveries, ``approver`` approves or rejects them, ``admin``
holds both. Pure: no I/O, no clock; the adapter (:mod:`continuity.adapters.local.identity_store`) stores users.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from continuity.kernel.errors import Forbidden, InvalidRequest, Unauthorized

USER_NAME_PATTERN = r"^[a-z][a-z0-9._-]{1,63}$"
USER_NAME_RE = re.compile(USER_NAME_PATTERN)
PRINCIPAL_HEADER = "x-ms-client-principal"
API_KEY_HEADER = "x-continuity-key"
KEY_PREFIX = "ck_"
# App roles in Entra ID are often namespaced ("Continuity.Approver"); both forms name the same role.
ROLE_CLAIM_TYPES = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")


class Role(StrEnum):
    READER = "reader"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


# What each role grants; admin implies the others, and everyone may read what their scope covers.
IMPLIED: dict[Role, frozenset[Role]] = {
    Role.READER: frozenset({Role.READER}),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.READER}),
    Role.APPROVER: frozenset({Role.APPROVER, Role.READER}),
    Role.ADMIN: frozenset({Role.ADMIN, Role.OPERATOR, Role.APPROVER, Role.READER}),
}
# Claim carrying a platform principal's tenant scope: one claim per tenant id, or the value "*" for every tenant.
# Absent means no tenant at all (fail closed): a directory that forgot to assign the scope grants nothing.
TENANT_CLAIM_TYPE = "continuity_tenant"
EVERY_TENANT = "*"
# The immutable ids of an Entra ID principal: object id and directory (tenant) id, long and short claim names.
OID_CLAIM_TYPES = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
TID_CLAIM_TYPES = ("http://schemas.microsoft.com/identity/claims/tenantid", "tid")
PLATFORM_SOURCE = "aad"
KEY_SOURCE = "key"
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
PRINCIPAL_ID_PATTERN = (r"^(aad:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/"
                        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|key:[a-z][a-z0-9._-]{1,63})$")
PRINCIPAL_ID_RE = re.compile(PRINCIPAL_ID_PATTERN)


def platform_principal_id(tid: str, oid: str) -> str:
    """``aad:{tid}/{oid}``, lower case: the id Entra ID never reassigns (names and UPNs can change)."""
    return f"{PLATFORM_SOURCE}:{tid.strip().lower()}/{oid.strip().lower()}"


def key_principal_id(user: str) -> str:
    return f"{KEY_SOURCE}:{user}"


def validate_principal_id(value: str) -> str:
    """:raises InvalidRequest: not ``aad:{tid}/{oid}`` (two GUIDs) nor ``key:{user}``."""
    normal = value.strip().lower()
    if not PRINCIPAL_ID_RE.match(normal):
        raise InvalidRequest(f"principal id {value[:90]!r} must be aad:{{tenant id}}/{{object id}} (two GUIDs) "
                             "or key:{local user}")
    return normal


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an immutable id, a display name, the roles it holds, how it was authenticated.

    ``id`` defaults to ``{source}:{name}``; ``linked`` holds the ids of the same person's other identities.
    """

    name: str
    roles: frozenset[Role]
    source: str  # "aad" (platform authentication) or "key" (a local user's API key)
    tenants: frozenset[str] | None = None  # the tenants this caller may see; None: every tenant
    id: str = ""
    linked: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", f"{self.source}:{self.name}")

    @property
    def ids(self) -> frozenset[str]:
        """Every id this person is known by: its own and its linked identities."""
        return frozenset({self.id}) | self.linked

    def same_person(self, ids: Iterable[str]) -> bool:
        """Whether any of ``ids`` is this principal or one of its linked identities."""
        return not self.ids.isdisjoint(ids)

    def has(self, role: Role) -> bool:
        """Whether the principal holds ``role`` directly or through ``admin``."""
        return any(role in IMPLIED[held] for held in self.roles)

    def sees(self, tenant: str) -> bool:
        """Whether ``tenant`` is inside this caller's tenant scope."""
        return self.tenants is None or tenant in self.tenants

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "roles": sorted(str(r) for r in self.roles),
                               "source": self.source}
        if self.tenants is not None:
            out["tenants"] = sorted(self.tenants)
        if self.linked:
            out["linked"] = sorted(self.linked)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Principal:
        tenants = raw.get("tenants")
        return cls(name=str(raw["name"]), roles=parse_roles(raw.get("roles", ())), source=str(raw["source"]),
                   tenants=frozenset(str(t) for t in tenants) if tenants is not None else None,
                   id=str(raw.get("id") or ""), linked=frozenset(str(i) for i in raw.get("linked", ())))


@dataclass(frozen=True)
class LocalUser:
    """A local user as stored: the key's salted hash, never the key."""

    name: str
    roles: frozenset[Role]
    key_salt: str
    key_sha256: str
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    tenants: frozenset[str] | None = None  # None: every tenant
    links: frozenset[str] = frozenset()  # principal ids of this person's other identities (e.g. aad:{tid}/{oid})

    @property
    def principal_id(self) -> str:
        return key_principal_id(self.name)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "roles": sorted(str(r) for r in self.roles),
                               "key_salt": self.key_salt, "key_sha256": self.key_sha256, "created_at": self.created_at}
        if self.tenants is not None:
            out["tenants"] = sorted(self.tenants)
        if self.links:
            out["links"] = sorted(self.links)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LocalUser:
        tenants = raw.get("tenants")
        return cls(name=str(raw["name"]), roles=parse_roles(raw.get("roles", ())), key_salt=str(raw["key_salt"]),
                   key_sha256=str(raw["key_sha256"]), created_at=str(raw.get("created_at", "")),
                   tenants=frozenset(str(t) for t in tenants) if tenants is not None else None,
                   links=frozenset(validate_principal_id(str(i)) for i in raw.get("links", ())))


def linked_ids(principal_id: str, users: Iterable[LocalUser]) -> frozenset[str]:
    """The other identities of the person known as ``principal_id``: links declared by the local user itself, and
    local users who declare ``principal_id`` as one of theirs (a link binds both ways)."""
    found: set[str] = set()
    for user in users:
        if user.principal_id == principal_id:
            found |= user.links
        elif principal_id in user.links:
            found.add(user.principal_id)
    found.discard(principal_id)
    return frozenset(found)


def parse_roles(values: Iterable[Any]) -> frozenset[Role]:
    """Roles from names such as ``approver`` or ``Continuity.Approver``; unknown names are refused.

    :raises InvalidRequest: naming the unknown role and the accepted ones.
    """
    roles: set[Role] = set()
    for value in values:
        name = str(value).strip().lower().removeprefix("continuity.")
        try:
            roles.add(Role(name))
        except ValueError as exc:
            raise InvalidRequest(f"unknown role {str(value)[:40]!r}; roles are "
                                 f"{', '.join(r.value for r in Role)}") from exc
    return frozenset(roles)


def validate_user_name(name: str) -> str:
    if not USER_NAME_RE.match(name):
        raise InvalidRequest(f"user name {name[:70]!r} must match {USER_NAME_PATTERN} (lowercase, 2-64 chars)")
    return name


def hash_api_key(key: str, salt: str) -> str:
    """The stored form of an API key: sha256 over salt and key, hex."""
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()


def make_local_user(name: str, roles: Iterable[Role], key: str, salt: str, created_at: str,
                    tenants: Iterable[str] | None = None, links: Iterable[str] = ()) -> LocalUser:
    """A user record for a freshly generated ``key`` (the caller generates key and salt, and shows the key once)."""
    validate_user_name(name)
    role_set = frozenset(roles)
    if not role_set:
        raise InvalidRequest(f"user {name}: give at least one role ({', '.join(r.value for r in Role)})")
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + 32:
        raise InvalidRequest("API keys are generated, not chosen: expected a ck_ token of at least 32 characters")
    scope = None if tenants is None else frozenset(tenants)
    if scope is not None and not scope:
        raise InvalidRequest(f"user {name}: a tenant scope names at least one tenant (or omit it for every tenant)")
    linked = frozenset(validate_principal_id(i) for i in links)
    if key_principal_id(name) in linked:
        raise InvalidRequest(f"user {name}: a user cannot link to itself")
    return LocalUser(name=name, roles=role_set, key_salt=salt, key_sha256=hash_api_key(key, salt),
                     created_at=created_at, tenants=scope, links=linked)


def verify_api_key(key: str, users: Iterable[LocalUser]) -> Principal:
    """The user whose stored hash matches ``key``, known as ``key:{user}`` with its linked identities.

    :raises Unauthorized: no user has this key (the message never echoes the key).
    """
    users = list(users)
    if not key.startswith(KEY_PREFIX):
        raise Unauthorized("the API key is malformed; use the key `continuity users add` printed")
    match: LocalUser | None = None
    for user in users:
        # Compare every user's hash in constant time, so timing does not reveal which user nearly matched.
        if hmac.compare_digest(hash_api_key(key, user.key_salt), user.key_sha256):
            match = user
    if match is None:
        raise Unauthorized("the API key is not valid for any local user; ask an admin for a key "
                           "(`continuity users add NAME --role ...`)")
    return Principal(name=match.name, roles=match.roles, source=KEY_SOURCE, tenants=match.tenants,
                     id=match.principal_id, linked=linked_ids(match.principal_id, users))


def parse_client_principal(header_value: str) -> Principal:
    """The principal in an ``X-MS-CLIENT-PRINCIPAL`` header (base64 JSON with ``claims``).

    The id is ``aad:{tid}/{oid}`` from the object id and tenant id claims (long or short names); the name
    (for people to read, never to decide) is the claim named by ``name_typ`` (else ``preferred_username``,
    ``name``, ``oid``); the roles are the claims named by ``role_typ`` (else ``roles``). Roles this product
    does not know are ignored here: a directory may carry unrelated app roles.

    :raises Unauthorized: the header is not base64 JSON with claims, names nobody, or lacks an object id or
        tenant id (fail closed: a name alone is not an identity).
    """
    try:
        padded = header_value.strip() + "=" * (-len(header_value.strip()) % 4)
        document = json.loads(base64.b64decode(padded, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Unauthorized("X-MS-CLIENT-PRINCIPAL is not base64-encoded JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise Unauthorized("X-MS-CLIENT-PRINCIPAL has no claims list")
    claims: list[tuple[str, str]] = []
    for claim in document["claims"]:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            claims.append((claim["typ"], claim["val"]))
    name_types = [t for t in (document.get("name_typ"), "preferred_username", "name",
                              "http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
                  if isinstance(t, str)]
    name = next((val for typ in name_types for ctyp, val in claims if ctyp == typ and val.strip()), "")
    if not name:
        raise Unauthorized("X-MS-CLIENT-PRINCIPAL names nobody (no name, preferred_username or oid claim)")
    oid = next((val.strip() for typ in OID_CLAIM_TYPES for ctyp, val in claims if ctyp == typ and val.strip()), "")
    tid = next((val.strip() for typ in TID_CLAIM_TYPES for ctyp, val in claims if ctyp == typ and val.strip()), "")
    if not (_GUID_RE.match(oid) and _GUID_RE.match(tid)):
        raise Unauthorized("X-MS-CLIENT-PRINCIPAL carries no object id and tenant id (oid and tid claims, as GUIDs); "
                           "a principal is known by its immutable ids, never by its name: issue tokens with them")
    role_types = {document["role_typ"]} if isinstance(document.get("role_typ"), str) else set()
    role_types.update(ROLE_CLAIM_TYPES)
    roles: set[Role] = set()
    for typ, val in claims:
        if typ in role_types:
            try:
                roles |= parse_roles([val])
            except InvalidRequest:
                continue  # an unrelated app role of the directory
    scoped = frozenset(val.strip() for typ, val in claims if typ == TENANT_CLAIM_TYPE and val.strip())
    return Principal(name=name.strip().lower(), roles=frozenset(roles), source=PLATFORM_SOURCE,
                     tenants=None if EVERY_TENANT in scoped else scoped, id=platform_principal_id(tid, oid))


def authenticate(headers: Mapping[str, str], users: Iterable[LocalUser], platform_auth: bool,
                 allow_keys: bool = False) -> Principal:
    """The caller of a request, from its headers (keys compared case-insensitively), with its linked identities.

    With platform authentication enabled, ``X-MS-CLIENT-PRINCIPAL`` is used when present, and API keys are
    refused unless ``allow_keys``. Without it, a client-principal header is refused rather than ignored, so a
    misconfiguration is loud.

    :raises Unauthorized: no usable credential.
    """
    users = list(users)
    lower = {k.lower(): v for k, v in headers.items()}
    principal_header = lower.get(PRINCIPAL_HEADER)
    if principal_header:
        if not platform_auth:
            raise Unauthorized("X-MS-CLIENT-PRINCIPAL is only trusted with platform authentication enabled "
                               "(CONTINUITY_PLATFORM_AUTH=true); locally send X-Continuity-Key")
        principal = parse_client_principal(principal_header)
        linked = linked_ids(principal.id, users)
        return Principal(name=principal.name, roles=principal.roles, source=principal.source,
                         tenants=principal.tenants, id=principal.id, linked=linked)
    key = lower.get(API_KEY_HEADER, "").strip()
    if key:
        if platform_auth and not allow_keys:
            raise Unauthorized("local API keys are off while platform authentication is on; sign in through "
                               "App Service Authentication (or set CONTINUITY_LOCAL_USERS_WITH_PLATFORM_AUTH=true)")
        return verify_api_key(key, users)
    raise Unauthorized("no credentials: send X-Continuity-Key with a local user's key "
                       "(`continuity users add`), or enable platform authentication")


def require_role(principal: Principal, role: Role, action: str) -> None:
    """:raises Forbidden: the principal lacks ``role`` (directly or through admin)."""
    if not principal.has(role):
        held = ", ".join(sorted(str(r) for r in principal.roles)) or "none"
        raise Forbidden(f"{principal.name} may not {action}: it needs the {role} role (holds: {held})")


def require_tenant(principal: Principal, tenant: str) -> None:
    """:raises Forbidden: ``tenant`` is outside the principal's tenant scope (the message names neither's data)."""
    if not principal.sees(tenant):
        raise Forbidden(f"{principal.name} is scoped to other tenants and may not read tenant {tenant}")


def require_every_tenant(principal: Principal, action: str) -> None:
    """:raises Forbidden: the principal is scoped to some tenants, and ``action`` touches every tenant."""
    if principal.tenants is not None:
        raise Forbidden(f"{principal.name} is scoped to {', '.join(sorted(principal.tenants))} and may not "
                        f"{action}: it touches every tenant")


def require_scope(principal: Principal, scope: str, action: str) -> None:
    """A failover scope (``platform`` or a tenant id) inside the principal's tenant scope.

    :raises Forbidden: ``platform`` for a tenant-scoped principal, or a tenant outside its scope.
    """
    if scope == "platform":
        require_every_tenant(principal, action)
    else:
        require_tenant(principal, scope)
