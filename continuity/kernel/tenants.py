"""The tenant registry: who we host, on which server, under which service tier and policy.

Loaded from a version-controlled YAML file and validated at load; a bad file gives one error
naming the file, the tenant and the field.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from continuity.kernel.errors import ConfigError, UnknownTenant

TENANT_ID_PATTERN = r"^[a-z][a-z0-9-]{1,39}$"
TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
# PostgreSQL identifiers we create or connect to: no quoting games, no surprises.
DB_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
REGION_PATTERN = r"^[a-z][a-z0-9]{1,39}$"

TenantId = Annotated[str, Field(pattern=TENANT_ID_PATTERN)]


class StorageTier(StrEnum):
    HOT = "hot"
    COOL = "cool"
    COLD = "cold"
    ARCHIVE = "archive"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetentionPolicy(Strict):
    """GFS keep rules, tier ages and immutability for one service tier."""

    daily: int = Field(7, ge=0, le=3650)
    weekly: int = Field(4, ge=0, le=520)
    monthly: int = Field(12, ge=0, le=240)
    yearly: int = Field(0, ge=0, le=100)
    cool_after_days: int = Field(7, ge=0)
    cold_after_days: int = Field(30, ge=0)
    archive_after_days: int = Field(180, ge=0)
    immutable_days: int = Field(7, ge=0, le=3650)
    min_copies: int = Field(2, ge=1, le=1000)
    validate_before_archive: bool = True
    # Point-in-time recovery from the WAL archive of servers we run: any second of the last
    # pitr_window_days stays restorable; at least base_backups_min base backups are kept whatever their age.
    pitr_window_days: int = Field(7, ge=0, le=3650)
    base_backups_min: int = Field(2, ge=1, le=100)

    @model_validator(mode="after")
    def _consistent(self) -> RetentionPolicy:
        if not self.cool_after_days <= self.cold_after_days <= self.archive_after_days:
            raise ValueError("tier ages must satisfy cool_after_days <= cold_after_days <= archive_after_days")
        longest_keep_days = max(self.daily, self.weekly * 7, self.monthly * 31, self.yearly * 366)
        if self.immutable_days > longest_keep_days:
            raise ValueError(
                f"immutable_days ({self.immutable_days}) is longer than the longest keep rule "
                f"({longest_keep_days} days): backups would be locked past their retention"
            )
        return self


class BackupSchedule(Strict):
    """How often the backup timer takes a tier's backups: base backups of its servers' WAL archives (servers
    we run) and logical dumps of each tenant. Defaults: both daily."""

    base_backup_hours: int = Field(24, ge=1, le=24 * 35)
    # The timer ticks every few minutes: a shorter interval would only be honoured at the tick.
    dump_minutes: int = Field(1440, ge=5, le=10080)


class ServiceTier(Strict):
    rto_minutes: int = Field(gt=0, le=10080)
    rpo_minutes: int = Field(gt=0, le=10080)
    retention: RetentionPolicy = RetentionPolicy()
    schedule: BackupSchedule = BackupSchedule()
    # Whether a validation that hashed only a sample of the attachments may count as within objectives.
    sampled_validation: bool = False


class ServerKind(StrEnum):
    LOCAL_CLUSTER = "local-cluster"
    FLEXIBLE_SERVER = "flexible-server"


class Server(Strict):
    """A production PostgreSQL server: a local cluster in `make run`, a Flexible Server in Azure."""

    kind: ServerKind
    region: str = Field(pattern=REGION_PATTERN)
    cluster: Literal["primary", "replica"] | None = None
    host: str | None = None
    port: int = Field(5432, gt=0, lt=65536)
    resource_id: str | None = None
    replica_of: str | None = None

    @property
    def archives_wal(self) -> bool:
        """Every committed write reaches a WAL archive: our primary clusters (barman-cloud, see
        :func:`continuity.pitr.service.archive_name`) and Flexible Servers (Azure's continuous backup). A
        replica cluster archives nothing of its own: its tenants' RPO rests on dumps alone."""
        if self.kind is ServerKind.FLEXIBLE_SERVER:
            return True
        return self.cluster == "primary"

    @model_validator(mode="after")
    def _addressable(self) -> Server:
        if self.kind is ServerKind.LOCAL_CLUSTER and self.cluster is None:
            raise ValueError("a local-cluster server names its cluster (primary or replica)")
        if self.kind is ServerKind.FLEXIBLE_SERVER and not (self.host and self.resource_id):
            raise ValueError("a flexible-server names its host and resource_id")
        return self


class Assertion(Strict):
    """A tenant's own SQL check: the query returns one value that must equal ``expect``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,63}$")
    sql: str = Field(min_length=1, max_length=4000)
    expect: Any = True


class Tenant(Strict):
    id: TenantId
    name: str = Field(min_length=1, max_length=200)
    tier: str
    server: str
    database: str = Field(pattern=DB_NAME_PATTERN)
    primary_region: str = Field(pattern=REGION_PATTERN)
    secondary_region: str = Field(pattern=REGION_PATTERN)
    attachment_prefix: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9/_-]*$")
    legal_hold: bool = False
    rto_minutes: int | None = Field(None, gt=0)
    rpo_minutes: int | None = Field(None, gt=0)
    production_size_bytes: int | None = Field(None, gt=0)
    assertions: tuple[Assertion, ...] = ()

    @property
    def attachments(self) -> str:
        """Blob prefix of the tenant's Odoo filestore in the attachments container."""
        return self.attachment_prefix or f"{self.id}/"


class Registry(Strict):
    tiers: dict[str, ServiceTier]
    servers: dict[str, Server]
    tenants: tuple[Tenant, ...]

    @model_validator(mode="after")
    def _references(self) -> Registry:
        seen: set[str] = set()
        databases: set[tuple[str, str]] = set()
        for tenant in self.tenants:
            if tenant.id in seen:
                raise ValueError(f"tenant {tenant.id}: duplicate id")
            seen.add(tenant.id)
            if tenant.tier not in self.tiers:
                raise ValueError(f"tenant {tenant.id}: field tier: unknown tier {tenant.tier!r} "
                                 f"(known: {', '.join(sorted(self.tiers))})")
            if tenant.server not in self.servers:
                raise ValueError(f"tenant {tenant.id}: field server: unknown server {tenant.server!r} "
                                 f"(known: {', '.join(sorted(self.servers))})")
            key = (tenant.server, tenant.database)
            if key in databases:
                raise ValueError(f"tenant {tenant.id}: field database: {tenant.database!r} is already used "
                                 f"by another tenant on server {tenant.server!r}")
            databases.add(key)
            tier = self.tiers[tenant.tier]
            rpo = tenant.rpo_minutes or tier.rpo_minutes
            if tier.schedule.dump_minutes > rpo and not self.servers[tenant.server].archives_wal:
                raise ValueError(
                    f"tier {tenant.tier}: field schedule.dump_minutes: a dump every {tier.schedule.dump_minutes} "
                    f"min cannot meet the RPO of {rpo} min of tenant {tenant.id}, whose server {tenant.server!r} "
                    f"archives no WAL: set dump_minutes to at most {rpo}, or host the tenant on a server that "
                    "archives WAL")
        return self

    def get_tenant(self, tenant_id: str) -> Tenant:
        """The tenant with this id.

        :raises UnknownTenant: naming the known ids.
        """
        for tenant in self.tenants:
            if tenant.id == tenant_id:
                return tenant
        shown = tenant_id if TENANT_ID_RE.fullmatch(tenant_id) else repr(tenant_id[:60])
        raise UnknownTenant(f"unknown tenant {shown}; known tenants: {', '.join(t.id for t in self.tenants)}")

    def list_tenants(self) -> list[Tenant]:
        return list(self.tenants)

    def tier_of(self, tenant: Tenant) -> ServiceTier:
        return self.tiers[tenant.tier]

    def rto_minutes(self, tenant: Tenant) -> int:
        return tenant.rto_minutes or self.tiers[tenant.tier].rto_minutes

    def rpo_minutes(self, tenant: Tenant) -> int:
        return tenant.rpo_minutes or self.tiers[tenant.tier].rpo_minutes

    def server_of(self, tenant: Tenant) -> Server:
        return self.servers[tenant.server]


def _describe(error: Any, raw: dict[str, Any]) -> str:
    """Turn a pydantic error location into 'tenant X: field Y: message'."""
    loc = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "tenants" and isinstance(loc[1], int):
        tenants = raw.get("tenants") or []
        tid = tenants[loc[1]].get("id", f"#{loc[1] + 1}") if loc[1] < len(tenants) and isinstance(
            tenants[loc[1]], dict) else f"#{loc[1] + 1}"
        where = f"tenant {tid}: "
        loc = loc[2:]
    elif len(loc) >= 2 and loc[0] in ("tiers", "servers"):
        where = f"{loc[0][:-1]} {loc[1]}: "
        loc = loc[2:]
    message = error["msg"].removeprefix("Value error, ")
    if loc:
        return f"{where}field {'.'.join(str(p) for p in loc)}: {message}"
    return f"{where}{message}"


_LOADED: dict[Path, tuple[bytes, Registry]] = {}


def load_registry(path: Path) -> Registry:
    """Load and validate the tenant registry; the same file content is parsed once per process.

    A registry is immutable (frozen models), so the parsed one is reused while the file holds the same bytes
    (a 500-tenant registry is read on every estate page: reading and comparing it costs far less than parsing).

    :raises ConfigError: one line naming the file, the tenant and the field.
    """
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the tenant registry ({exc.strerror})") from exc
    cached = _LOADED.get(path)
    if cached is not None and cached[0] == content:
        return cached[1]
    registry = _parse_registry(path, content)
    _LOADED[path] = (content, registry)
    return registry


def _parse_registry(path: Path, content: bytes) -> Registry:
    try:
        # libyaml's safe loader where PyYAML has it: the same documents, ~7x faster (a 500-tenant registry is
        # read on every estate page: 60 ms instead of 420 ms).
        raw = yaml.load(content.decode(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the tenant registry is not UTF-8 text ({exc.reason})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the tenant registry must be a mapping with tiers, servers and tenants")
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {_describe(first, raw)}{more}") from exc
