"""Policy tests over infra/*.bicep, read as parse trees (tree-sitter-bicep), not as text.

The Bicep CLI cannot be installed here, so these tests also do the part of ``bicep build`` that
catches the usual mistakes: every file parses with no ERROR/MISSING node, every identifier is declared,
modules get only parameters they declare (and all they require), and ``module.outputs.x`` exists.
``make infra-check`` runs this file, then ``bicep build`` where the CLI is present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
PARAM_FILES = sorted(INFRA.glob("*.bicepparam"))
PARSER = Parser(Language(tree_sitter_bicep.language()))

# Built-in role definition ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
ROLE_IDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
}
BROAD_ROLE_IDS = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
}
# Settings the Functions host reads (not in continuity.kernel.settings.DEFAULTS).
HOST_SETTINGS = ("AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME")
SECRET_SETTINGS = ("CONTINUITY_STORAGE_CONNECTION", "CONTINUITY_CONTROL_DSN", "CONTINUITY_EVENTGRID_TOPIC_KEY")
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault(SecretUri="

# Names Bicep provides: functions, namespaces and keywords that parse as identifiers.
BUILTINS = {
    "az", "sys", "resourceGroup", "subscription", "tenant", "managementGroup", "environment", "deployment",
    "resourceId", "subscriptionResourceId", "tenantResourceId", "extensionResourceId", "reference", "guid",
    "uniqueString", "concat", "take", "skip", "empty", "last", "first", "split", "replace", "string", "int",
    "bool", "json", "union", "contains", "length", "range", "toLower", "toUpper", "format", "cidrSubnet",
    "readEnvironmentVariable", "filter", "map", "items", "any", "base64", "substring", "startsWith", "endsWith",
    "trim", "indexOf", "min", "max", "coalesce", "utcNow", "dateTimeAdd", "loadTextContent", "loadJsonContent",
    "intersection", "flatten", "join", "toObject", "newGuid", "parseCidr", "objectKeys",
    "object", "array",
    # decorators
    "description", "secure", "allowed", "minValue", "maxValue", "minLength", "maxLength", "metadata",
    "batchSize", "export", "sealed", "discriminator",
}


def parse(source: bytes) -> Node:
    return PARSER.parse(source).root_node


def syntax_errors(node: Node) -> list[str]:
    """Every ERROR or MISSING node, as 'line:col: kind near text'."""
    found: list[str] = []

    def walk(n: Node) -> None:
        if n.is_error or n.is_missing:
            kind = "MISSING " + n.type if n.is_missing else "ERROR"
            found.append(f"{n.start_point[0] + 1}:{n.start_point[1] + 1}: {kind} near {n.text.decode()[:60]!r}")
        for c in n.children:
            walk(c)

    walk(node)
    return found


def param_file_source(path: Path) -> bytes:
    # tree-sitter-bicep 1.1.0 has no .bicepparam grammar: `param x = v` is read as `var x = v` (same
    # expression grammar); `using` parses as is.
    return re.sub(rb"(?m)^param (\w+) =", rb"var \1 =", path.read_bytes())


@dataclass(frozen=True)
class Expr:
    """A non-literal Bicep expression (a reference, a call, an interpolated string, ...)."""

    node: Node
    source: str | None = None  # set when the item was rejoined (see value())

    @property
    def text(self) -> str:
        return self.source if self.source is not None else self.node.text.decode()

    def identifiers(self) -> set[str]:
        return {n.text.decode() for n in descendants(self.node) if n.type == "identifier"}

    def calls(self) -> set[str]:
        """Names of every function called inside, including member calls such as ``sa.listKeys()``."""
        names: set[str] = set()
        for n in descendants(self.node):
            if n.type == "call_expression":
                fn = n.child_by_field_name("function") or n.named_children[0]
                if fn.type == "member_expression":
                    fn = fn.child_by_field_name("property") or fn.named_children[-1]
                names.add(fn.text.decode())
        return names


@dataclass(frozen=True)
class Loop:
    """``[for item in iterable: body]``."""

    variables: tuple[str, ...]
    iterable: Expr
    body: Any


def descendants(node: Node) -> Iterator[Node]:
    yield node
    for c in node.children:
        yield from descendants(c)


def string_value(node: Node) -> str | Expr:
    parts: list[str] = []
    for c in node.named_children:
        if c.type == "interpolation":
            return Expr(node)
        if c.type == "escape_sequence":
            parts.append({"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\t": "\t", "\\$": "$"}.get(c.text.decode(),
                                                                                             c.text.decode()))
        else:
            parts.append(c.text.decode())
    return "".join(parts)


def value(node: Node) -> Any:
    """A literal as Python (dict, list, str, int, bool, None); anything else as :class:`Expr`/:class:`Loop`."""
    kind = node.type
    if kind == "object":
        out: dict[str, Any] = {}
        for prop in node.named_children:
            if prop.type != "object_property":
                continue
            key_node, value_node = prop.named_children[0], prop.named_children[-1]
            key = string_value(key_node) if key_node.type == "string" else key_node.text.decode()
            out[str(key)] = value(value_node)
        return out
    if kind == "array":
        # tree-sitter-bicep 1.1.0 reads `f().x` inside an array as two items, `f` and `().x`, without an
        # ERROR node; items on one line are one item in Bicep, so rejoin them.
        items: list[tuple[Node, Node]] = []
        for c in node.named_children:
            if c.type == "comment":
                continue
            if items and c.start_point[0] == items[-1][1].end_point[0]:
                items[-1] = (items[-1][0], c)
            else:
                items.append((c, c))
        out_items: list[Any] = []
        for first, last in items:
            if first == last:
                out_items.append(value(first))
            else:
                raw = node.text[first.start_byte - node.start_byte:last.end_byte - node.start_byte]
                out_items.append(Expr(first, raw.decode()))
        return out_items
    if kind == "string":
        return string_value(node)
    if kind == "number":
        return int(node.text.decode())
    if kind == "boolean":
        return node.text.decode() == "true"
    if kind == "null":
        return None
    if kind == "for_statement":
        named = node.named_children
        params = named[0]
        if params.type == "for_loop_parameters":
            variables = tuple(c.text.decode() for c in params.named_children)
        else:
            variables = (params.text.decode(),)
        return Loop(variables, Expr(named[1]), value(named[-1]))
    return Expr(node)


@dataclass
class Declaration:
    kind: str
    name: str
    node: Node
    decorators: list[str] = field(default_factory=list)
    type_text: str = ""
    value: Any = None
    condition: Expr | None = None
    target: str = ""  # resource type@api or module path
    existing: bool = False

    @property
    def has_default(self) -> bool:
        return self.value is not None

    @property
    def body(self) -> Any:
        v = self.value
        return v.body if isinstance(v, Loop) else v

    @property
    def resource_type(self) -> str:
        return self.target.split("@")[0]


@dataclass
class BicepFile:
    path: Path
    root: Node
    declarations: list[Declaration]

    def of(self, kind: str) -> list[Declaration]:
        return [d for d in self.declarations if d.kind == kind]

    @property
    def params(self) -> dict[str, Declaration]:
        return {d.name: d for d in self.of("param")}

    @property
    def variables(self) -> dict[str, Declaration]:
        return {d.name: d for d in self.of("var")}

    @property
    def outputs(self) -> list[Declaration]:
        return self.of("output")

    @property
    def modules(self) -> list[Declaration]:
        return self.of("module")

    @property
    def resources(self) -> list[Declaration]:
        return self.of("resource")

    def resources_of(self, resource_type: str, *, existing: bool = False) -> list[Declaration]:
        return [r for r in self.resources if r.resource_type == resource_type and r.existing == existing]


def _declaration(node: Node, decorators: list[str]) -> Declaration | None:
    kinds = {"parameter_declaration": "param", "variable_declaration": "var", "resource_declaration": "resource",
             "module_declaration": "module", "output_declaration": "output"}
    kind = kinds.get(node.type)
    if kind is None:
        return None
    named = node.named_children
    decl = Declaration(kind, named[0].text.decode(), node, decorators)
    rest = named[1:]
    if kind in ("param", "output") and rest and rest[0].type == "type":
        decl.type_text = rest[0].text.decode()
        rest = rest[1:]
    elif kind in ("resource", "module") and rest:
        decl.target = str(string_value(rest[0]))
        rest = rest[1:]
        decl.existing = any(c.type == "existing" for c in node.children)
    if rest:
        body = rest[-1]
        if body.type == "if_statement":
            decl.condition = Expr(body.named_children[0])
            body = body.named_children[-1]
        decl.value = value(body)
    return decl


def declarations_of(root: Node) -> list[Declaration]:
    declarations: list[Declaration] = []
    pending: list[str] = []
    for child in root.named_children:
        if child.type == "decorators":
            pending = [d.text.decode().lstrip("@").split("(")[0].strip() for d in child.named_children]
            continue
        decl = _declaration(child, pending)
        pending = []
        if decl is not None:
            declarations.append(decl)
    return declarations


def from_source(source: bytes, path: Path = Path("snippet.bicep")) -> BicepFile:
    root = parse(source)
    return BicepFile(path, root, declarations_of(root))


@cache
def load(path: Path) -> BicepFile:
    return from_source(param_file_source(path) if path.suffix == ".bicepparam" else path.read_bytes(), path)


def all_files() -> list[BicepFile]:
    return [load(p) for p in BICEP_FILES]


def resources(resource_type: str) -> list[tuple[BicepFile, Declaration]]:
    return [(f, r) for f in all_files() for r in f.resources_of(resource_type)]


def one(resource_type: str, name: str | None = None) -> Declaration:
    found = [r for _, r in resources(resource_type) if name is None or r.name == name]
    assert len(found) == 1, f"expected one {resource_type} {name or ''}, found {[r.name for r in found]}"
    return found[0]


def dig(obj: Any, *path: str) -> Any:
    for key in path:
        assert isinstance(obj, dict) and key in obj, f"missing {'.'.join(path)} (stopped at {key!r})"
        obj = obj[key]
    return obj


def function_app_settings() -> dict[str, Any]:
    """The Function App's app settings: the `appsettings` config resource's properties."""
    configs = [r for _, r in resources("Microsoft.Web/sites/config") if r.body.get("name") == "appsettings"]
    assert len(configs) == 1, "expected one Microsoft.Web/sites/config named appsettings"
    settings = dig(configs[0].body, "properties")
    assert isinstance(settings, dict)
    return settings


def provides(settings: dict[str, Any], key: str) -> bool:
    # Functions resolves a connection named X from X or from identity-based X__accountName, X__credential...
    return key in settings or any(k.startswith(f"{key}__") for k in settings)


def missing_settings(required: set[str], settings: dict[str, Any]) -> list[str]:
    return sorted(k for k in required if not provides(settings, k))


# --- syntax and references ----------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES + PARAM_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_infra_file_parses_without_error_or_missing_nodes(path: Path) -> None:
    assert syntax_errors(load(path).root) == []


def test_parse_check_reports_a_broken_bicep_file() -> None:
    broken = b"resource kv 'Microsoft.KeyVault/vaults@2023-07-01' = {\n  name: 'x'\n  properties: {\n"
    assert syntax_errors(parse(broken)), "an unterminated object must produce an ERROR or MISSING node"


def test_infra_has_main_modules_and_one_parameter_file_per_environment() -> None:
    assert (INFRA / "main.bicep").exists()
    assert {p.stem for p in PARAM_FILES} >= {"dev", "prod"}
    used = {Path(m.target).name for m in load(INFRA / "main.bicep").modules}
    assert used == {p.name for p in (INFRA / "modules").glob("*.bicep")}, "a module file is unused or missing"


def _loop_and_lambda_variables(f: BicepFile) -> set[str]:
    names: set[str] = set()
    for n in descendants(f.root):
        if n.type == "for_statement":
            first = n.named_children[0]
            if first.type == "for_loop_parameters":
                names |= {c.text.decode() for c in first.named_children}
            else:
                names.add(first.text.decode())
        elif n.type == "lambda_expression":
            names.add(n.named_children[0].text.decode())
    return names


def undeclared_identifiers(f: BicepFile) -> set[str]:
    declared = {d.name for d in f.declarations} | _loop_and_lambda_variables(f) | BUILTINS
    used: set[str] = set()
    for n in descendants(f.root):
        if n.type != "identifier":
            continue
        parent = n.parent
        assert parent is not None
        if parent.type in ("parameter_declaration", "variable_declaration", "resource_declaration",
                           "module_declaration", "output_declaration") and parent.named_children[0] == n:
            continue
        if parent.type == "object_property" and parent.named_children[0] == n:
            continue  # a property key
        used.add(n.text.decode())
    return used - declared


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_identifier_in_a_bicep_file_is_declared(path: Path) -> None:
    assert undeclared_identifiers(load(path)) == set()


def test_undeclared_identifier_check_names_a_typo() -> None:
    path = INFRA / "modules" / "keyvault.bicep"
    typo = path.read_bytes().replace(b"vault.properties.vaultUri", b"vualt.properties.vaultUri")
    assert undeclared_identifiers(from_source(typo, path)) == {"vualt"}


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_modules_get_declared_parameters_and_every_required_one(path: Path) -> None:
    for module in load(path).modules:
        target = load((path.parent / module.target).resolve())
        passed = set(dig(module.body, "params"))
        assert passed <= set(target.params), f"{module.name}: unknown params {passed - set(target.params)}"
        required = {n for n, p in target.params.items() if not p.has_default}
        assert required <= passed, f"{module.name}: required params not passed: {required - passed}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_module_output_references_name_declared_outputs(path: Path) -> None:
    f = load(path)
    outputs = {m.name: {o.name for o in load((path.parent / m.target).resolve()).outputs} for m in f.modules}
    for n in descendants(f.root):
        if n.type == "member_expression" and n.named_children[0].type == "member_expression":
            inner = n.named_children[0]
            symbol, prop = inner.named_children[0].text.decode(), inner.named_children[-1].text.decode()
            if symbol in outputs and prop == "outputs":
                name = n.named_children[-1].text.decode()
                assert name in outputs[symbol], f"{symbol}.outputs.{name} is not an output of that module"


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_parameter_file_uses_main_and_sets_only_declared_parameters(path: Path) -> None:
    f = load(path)
    using = [n for n in f.root.named_children if n.type == "using_statement"]
    assert len(using) == 1 and "main.bicep" in using[0].text.decode()
    main = load(INFRA / "main.bicep")
    given = set(f.variables)
    assert given <= set(main.params), f"unknown parameters: {given - set(main.params)}"
    required = {n for n, p in main.params.items() if not p.has_default}
    assert required <= given, f"required parameters not set: {required - given}"


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_parameter_file_reads_secure_parameters_from_the_environment(path: Path) -> None:
    main = load(INFRA / "main.bicep")
    secure = {n for n, p in main.params.items() if "secure" in p.decorators}
    assert secure, "main.bicep has no @secure() parameter: where do the PostgreSQL passwords come from?"
    for name in secure:
        v = load(path).variables[name].value
        assert isinstance(v, Expr) and v.calls() & {"readEnvironmentVariable", "getSecret"}, (
            f"{path.name}: {name} must come from readEnvironmentVariable() or az.getSecret(), not a literal")


# --- storage --------------------------------------------------------------------------------------


def test_storage_accounts_require_tls12_https_and_no_public_blob_access() -> None:
    accounts = resources("Microsoft.Storage/storageAccounts")
    assert len(accounts) == 2
    for _, account in accounts:
        props = dig(account.body, "properties")
        assert props["minimumTlsVersion"] == "TLS1_2"
        assert props["supportsHttpsTrafficOnly"] is True
        assert props["allowBlobPublicAccess"] is False
        assert dig(props, "networkAcls", "defaultAction") == "Deny"


def test_shared_key_access_is_off_on_host_storage_and_a_documented_switch_on_backups() -> None:
    host = load(INFRA / "modules" / "host-storage.bicep").resources_of("Microsoft.Storage/storageAccounts")[0]
    assert dig(host.body, "properties", "allowSharedKeyAccess") is False
    storage = load(INFRA / "modules" / "storage.bicep")
    backups = storage.resources_of("Microsoft.Storage/storageAccounts")[0]
    switch = dig(backups.body, "properties", "allowSharedKeyAccess")
    assert isinstance(switch, Expr) and switch.text == "allowSharedKeyAccess"
    assert storage.params["allowSharedKeyAccess"].value is False, "the module's default must be off"
    assert "description" in load(INFRA / "main.bicep").params["backupStorageSharedKey"].decorators


def test_backups_blob_service_versions_and_soft_deletes() -> None:
    service = load(INFRA / "modules" / "storage.bicep").resources_of("Microsoft.Storage/storageAccounts/blobServices")
    props = dig(service[0].body, "properties")
    assert props["isVersioningEnabled"] is True
    assert dig(props, "deleteRetentionPolicy", "enabled") is True
    assert dig(props, "containerDeleteRetentionPolicy", "enabled") is True


def test_backups_and_evidence_containers_have_version_level_immutability() -> None:
    storage = load(INFRA / "modules" / "storage.bicep")
    containers = {r.name: r for r in storage.resources_of("Microsoft.Storage/storageAccounts/blobServices/containers")}
    for name in ("backups", "evidence"):
        assert dig(containers[name].body, "properties", "immutableStorageWithVersioning", "enabled") is True
        assert dig(containers[name].body, "properties", "publicAccess") == "None"
    policies = storage.resources_of("Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies")
    by_parent = {dig(p.body, "parent").text: p for p in policies}
    assert dig(by_parent["backups"].body, "properties", "immutabilityPeriodSinceCreationInDays").text == \
        "backupImmutableDays"
    assert dig(by_parent["evidence"].body, "properties", "immutabilityPeriodSinceCreationInDays").text == \
        "evidenceImmutableDays"


def _rules(var: str) -> dict[str, Any]:
    loop = load(INFRA / "modules" / "storage.bicep").variables[var].value
    assert isinstance(loop, Loop) and loop.iterable.text == "retentionTiers", f"{var} must loop over retentionTiers"
    assert loop.variables == ("tier",)
    return dict(loop.body)


def test_lifecycle_rules_tier_each_service_tier_at_its_policy_ages() -> None:
    storage = load(INFRA / "modules" / "storage.bicep")
    policy = storage.resources_of("Microsoft.Storage/storageAccounts/managementPolicies")[0]
    assert dig(policy.body, "properties", "policy", "rules").identifiers() >= {"coolColdRules", "archiveRules"}

    cool = _rules("coolColdRules")
    actions = dig(cool, "definition", "actions", "baseBlob")
    assert dig(actions, "tierToCool", "daysAfterCreationGreaterThan").text == "tier.coolAfterDays"
    assert dig(actions, "tierToCold", "daysAfterCreationGreaterThan").text == "tier.coldAfterDays"
    assert "delete" not in actions, "deleting is the retention planner's job (legal holds, min_copies)"
    match = dig(cool, "definition", "filters", "blobIndexMatch")
    assert match == [{"name": "tier", "op": "==", "value": match[0]["value"]}]
    assert match[0]["value"].text == "tier.name"

    archive = _rules("archiveRules")
    actions = dig(archive, "definition", "actions", "baseBlob")
    assert dig(actions, "tierToArchive", "daysAfterCreationGreaterThan").text == "tier.archiveAfterDays"
    condition = dig(archive, "definition", "filters", "blobIndexMatch")
    # validate_before_archive: only backups whose status tag is `validated` are archived.
    assert "tier.validateBeforeArchive" in condition.text and "'validated'" in condition.text


def test_the_wal_archive_is_write_once_and_only_ever_cools() -> None:
    storage = load(INFRA / "modules" / "storage.bicep")
    policy = storage.resources_of("Microsoft.Storage/storageAccounts/managementPolicies")[0]
    assert "walRules" in dig(policy.body, "properties", "policy", "rules").identifiers()
    wal = dict(storage.variables["walRules"].value[0])
    assert dig(wal, "definition", "filters", "prefixMatch")[0].text == "'${walContainer}/'"
    actions = dig(wal, "definition", "actions", "baseBlob")
    assert set(actions) == {"tierToCool"}, "a rewind reads every segment at once: never cold or archive, never delete"
    container = next(r for r in storage.resources_of("Microsoft.Storage/storageAccounts/blobServices/containers")
                     if r.body["name"].text == "walContainer")
    assert dig(container.body, "properties", "immutableStorageWithVersioning", "enabled") is True


def _tier_entry(name: str, policy: Any) -> dict[str, Any]:
    return {"name": name, "coolAfterDays": policy.cool_after_days, "coldAfterDays": policy.cold_after_days,
            "archiveAfterDays": policy.archive_after_days, "validateBeforeArchive": policy.validate_before_archive}


def test_default_retention_tiers_are_the_retention_policy_defaults() -> None:
    from continuity.kernel.tenants import RetentionPolicy

    defaults = load(INFRA / "main.bicep").params["retentionTiers"].value
    assert defaults == [_tier_entry("default", RetentionPolicy())]
    assert load(INFRA / "main.bicep").params["backupImmutableDays"].value == RetentionPolicy().immutable_days


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_parameter_file_retention_tiers_equal_the_tenant_registry(path: Path) -> None:
    from continuity.kernel.tenants import load_registry

    registry = load_registry(ROOT / "config" / "tenants.yaml")
    expected = [_tier_entry(name, tier.retention) for name, tier in registry.tiers.items()]
    assert load(path).variables["retentionTiers"].value == expected
    shortest = min(tier.retention.immutable_days for tier in registry.tiers.values())
    assert load(path).variables["backupImmutableDays"].value == shortest, (
        "the backups container default retention must be the shortest tier's immutable_days")


# --- Key Vault, PostgreSQL, network ---------------------------------------------------------------


def test_key_vault_uses_rbac_soft_delete_purge_protection_and_no_public_access() -> None:
    props = dig(one("Microsoft.KeyVault/vaults").body, "properties")
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert props["publicNetworkAccess"] == "Disabled"
    assert dig(props, "networkAcls", "defaultAction") == "Deny"


def test_postgres_servers_allow_no_public_network_access() -> None:
    servers = resources("Microsoft.DBforPostgreSQL/flexibleServers")
    assert {r.name for _, r in servers} == {"primary", "replica", "sandbox"}
    for _, server in servers:
        assert dig(server.body, "properties", "network", "publicNetworkAccess") == "Disabled", server.name


def test_primary_has_geo_redundant_backup_and_a_replica_in_the_second_region() -> None:
    primary = one("Microsoft.DBforPostgreSQL/flexibleServers", "primary")
    assert dig(primary.body, "properties", "backup", "geoRedundantBackup") == "Enabled"
    replica = one("Microsoft.DBforPostgreSQL/flexibleServers", "replica")
    assert dig(replica.body, "properties", "createMode") == "Replica"
    assert dig(replica.body, "properties", "sourceServerResourceId").text == "primary.id"
    assert dig(replica.body, "location").text == "secondaryLocation"


def test_sandbox_server_lives_in_a_delegated_isolated_subnet() -> None:
    sandbox = one("Microsoft.DBforPostgreSQL/flexibleServers", "sandbox")
    network = dig(sandbox.body, "properties", "network")
    assert network["delegatedSubnetResourceId"].text == "sandboxSubnetId"
    assert network["privateDnsZoneArmResourceId"].text == "sandboxDnsZoneId"
    subnet = load(INFRA / "modules" / "network.bicep").variables["sandboxSubnet"].value
    delegations = dig(subnet, "properties", "delegations")
    assert [dig(d, "properties", "serviceName") for d in delegations] == ["Microsoft.DBforPostgreSQL/flexibleServers"]
    assert "networkSecurityGroup" in subnet["properties"]
    rules = dig(one("Microsoft.Network/networkSecurityGroups").body, "properties", "securityRules")
    denies = {dig(r, "properties", "direction"): r for r in rules if dig(r, "properties", "access") == "Deny"}
    for direction in ("Inbound", "Outbound"):
        assert dig(denies[direction], "properties", "sourceAddressPrefix") == "*"
        assert dig(denies[direction], "properties", "destinationAddressPrefix") == "*"
    inbound = [r for r in rules if dig(r, "properties", "direction") == "Inbound"
               and dig(r, "properties", "access") == "Allow"]
    assert all(dig(r, "properties", "sourceAddressPrefix") != "*" for r in inbound)


def test_key_vault_and_postgres_are_reached_through_private_endpoints() -> None:
    main = load(INFRA / "main.bicep")
    endpoints = [m for m in main.modules if m.target.endswith("private-endpoint.bicep")]
    groups = sorted(dig(m.body, "params", "groupId") for m in endpoints)
    assert groups == ["postgresqlServer", "postgresqlServer", "vault"]


# --- Event Grid -----------------------------------------------------------------------------------


def test_blob_created_subscription_is_filtered_to_backups_with_retry_and_dead_letter() -> None:
    sub = one("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    props = dig(sub.body, "properties")
    assert dig(props, "filter", "includedEventTypes") == ["Microsoft.Storage.BlobCreated"]
    begins = dig(props, "filter", "subjectBeginsWith")
    assert begins.text == "'/blobServices/default/containers/${backupContainer}/'"
    f = load(INFRA / "modules" / "eventgrid-subscriptions.bicep")
    assert f.params["backupContainer"].value == "backups"
    main_call = [m for m in load(INFRA / "main.bicep").modules if m.name == "subscriptions"][0]
    assert dig(main_call.body, "params", "backupContainer").text == "backupContainer"
    assert load(INFRA / "main.bicep").variables["backupContainer"].value == "backups"
    assert dig(props, "destination", "endpointType") == "AzureFunction"
    topic = one("Microsoft.EventGrid/systemTopics")
    assert dig(topic.body, "properties", "topicType") == "Microsoft.Storage.StorageAccounts"


def test_every_event_subscription_retries_and_dead_letters_with_identity() -> None:
    subs = resources("Microsoft.EventGrid/systemTopics/eventSubscriptions") + \
        resources("Microsoft.EventGrid/topics/eventSubscriptions")
    assert len(subs) == 2
    for _, sub in subs:
        props = dig(sub.body, "properties")
        assert dig(props, "retryPolicy", "maxDeliveryAttempts").text == "maxDeliveryAttempts"
        assert dig(props, "retryPolicy", "eventTimeToLiveInMinutes").text == "eventTimeToLiveInMinutes"
        dead = dig(props, "deadLetterWithResourceIdentity")
        assert dig(dead, "identity", "type") == "SystemAssigned"
        assert dig(dead, "deadLetterDestination", "endpointType") == "StorageBlob"
        assert dig(dead, "deadLetterDestination", "properties", "blobContainerName").text == "deadLetterContainer"


def test_outgoing_events_have_a_cloud_events_custom_topic() -> None:
    outgoing = one("Microsoft.EventGrid/topics", "outgoing")
    assert dig(outgoing.body, "properties", "inputSchema") == "CloudEventSchemaV1_0"
    assert dig(outgoing.body, "properties", "minimumTlsVersionAllowed") == "1.2"


def test_backup_failed_subscription_matches_the_incident_event_type() -> None:
    from continuity.incidents.rules import BACKUP_FAILED_EVENT_TYPE

    f = load(INFRA / "modules" / "eventgrid-subscriptions.bicep")
    assert f.params["backupFailedEventType"].value == BACKUP_FAILED_EVENT_TYPE


# --- Function App, identity and roles -------------------------------------------------------------


def test_function_app_is_a_linux_container_on_elastic_premium_with_managed_identity() -> None:
    plan = one("Microsoft.Web/serverfarms")
    assert dig(plan.body, "sku", "tier") == "ElasticPremium"
    assert dig(plan.body, "properties", "reserved") is True  # Linux
    site = one("Microsoft.Web/sites")
    assert dig(site.body, "kind") == "functionapp,linux,container"
    assert dig(site.body, "identity", "type") == "UserAssigned"
    props = dig(site.body, "properties")
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"].text == "identityId"
    assert dig(props, "siteConfig", "linuxFxVersion").text.startswith("'DOCKER|")
    assert dig(props, "siteConfig", "acrUseManagedIdentityCreds") is True
    assert dig(props, "siteConfig", "minTlsVersion") == "1.2"
    assert dig(props, "siteConfig", "ftpsState") == "Disabled"


def test_function_app_settings_cover_every_setting_the_code_reads() -> None:
    from tests.settings_scan import NOT_SETTINGS, settings_read_by_code

    read = set(settings_read_by_code()) - set(NOT_SETTINGS)
    assert {"CONTINUITY_CONTROL_DSN", "CONTINUITY_NIGHTLY_SCHEDULE"} <= read  # the scan found reads at all
    assert missing_settings(read | set(HOST_SETTINGS), function_app_settings()) == []


def test_missing_setting_check_names_the_missing_key() -> None:
    settings = {"AzureWebJobsStorage__accountName": "x", "FUNCTIONS_WORKER_RUNTIME": "python"}
    assert missing_settings({"AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME", "CONTINUITY_NEW"}, settings) == \
        ["CONTINUITY_NEW"]


def test_secret_settings_are_key_vault_references() -> None:
    settings = function_app_settings()
    for key in SECRET_SETTINGS:
        v = settings[key]
        text = v.text if isinstance(v, Expr) else v
        if key == "CONTINUITY_STORAGE_CONNECTION":
            # a variable: Key Vault reference while shared keys are on, else the endpoint alone
            text = load(INFRA / "modules" / "functionapp.bicep").variables[text].value.text
        assert KEY_VAULT_REFERENCE in text, f"{key} must be a Key Vault reference"
    assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_durable_task_hub_uses_the_host_storage_through_the_identity() -> None:
    hub = json.loads((ROOT / "host.json").read_text())["extensions"]["durableTask"]["storageProvider"]
    assert hub["type"] == "AzureStorage"
    connection = hub["connectionStringName"]
    settings = function_app_settings()
    assert dig(settings, f"{connection}__credential") == "managedidentity"
    assert dig(settings, f"{connection}__accountName").text == "hostStorage.name"
    granted = {roles_var_to_id(a) for a in role_assignments() if scope_of(a) == "hostStorage"}
    assert {ROLE_IDS[g] for g in granted} == {"Storage Blob Data Owner", "Storage Queue Data Contributor",
                                              "Storage Table Data Contributor"}


def role_assignments() -> list[Declaration]:
    return [r for _, r in resources("Microsoft.Authorization/roleAssignments")]


def scope_of(assignment: Declaration) -> str:
    scope = assignment.body.get("scope")
    return scope.text if isinstance(scope, Expr) else "resourceGroup"


def roles_var_to_id(assignment: Declaration) -> str:
    """The built-in role GUID an assignment grants (through the `roles`/literal variables of its file)."""
    ref = dig(assignment.body, "properties", "roleDefinitionId")
    f = next(f for f in all_files() if assignment in f.resources)
    for ident in ref.identifiers():
        if ident in f.variables:
            v = f.variables[ident].value
            if isinstance(v, str):
                return v
            member = re.search(rf"{ident}\.(\w+)", ref.text)
            if isinstance(v, dict) and member:
                return str(v[member.group(1)])
    return ref.text


def test_app_identity_gets_least_privilege_roles_on_each_resource() -> None:
    app_roles = {(ROLE_IDS.get(roles_var_to_id(a), roles_var_to_id(a)), scope_of(a))
                 for a in role_assignments() if dig(a.body, "properties", "principalId").text == "principalId"}
    assert app_roles == {
        ("Storage Blob Data Owner", "containers[i]"),
        ("Storage Blob Data Owner", "hostStorage"),
        ("Storage Queue Data Contributor", "hostStorage"),
        ("Storage Table Data Contributor", "hostStorage"),
        ("Key Vault Secrets User", "vault"),
        ("EventGrid Data Sender", "outgoing"),
        ("AcrPull", "registry"),
        ("flexibleServerOperator.id", "resourceGroup"),
    }
    roles_file = load(INFRA / "modules" / "roles.bicep")
    main_roles = [m for m in load(INFRA / "main.bicep").modules if m.name == "roles"][0]
    containers = dig(main_roles.body, "params", "dataContainers")
    assert [c.text for c in containers] == ["backupContainer", "attachmentContainer", "evidenceContainer"], (
        "blob data roles only on the app's three containers")
    custom = roles_file.resources_of("Microsoft.Authorization/roleDefinitions")[0]
    actions = dig(custom.body, "properties", "permissions")[0]["actions"]
    assert all(a.startswith(("Microsoft.DBforPostgreSQL/", "Microsoft.Network/")) and "*" not in a for a in actions)
    assert [s.text for s in dig(custom.body, "properties", "assignableScopes")] == ["resourceGroup().id"]
    assert dig(main_roles.body, "params", "principalId").text == "appIdentity.outputs.principalId"


def test_no_broad_role_is_granted_anywhere() -> None:
    for f in all_files():
        text = f.root.text.decode()
        for guid, name in BROAD_ROLE_IDS.items():
            assert guid not in text, f"{f.path.name} grants {name}"


# --- outputs --------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"(secret|password|passwd|key|connectionstring|token|sas|credential)", re.IGNORECASE)
SECRET_CALL = re.compile(r"^list", re.IGNORECASE)  # listKeys, listSecrets, listAccountSas, listCredentials...


def secret_output_problems(f: BicepFile) -> list[str]:
    problems = []
    for out in f.outputs:
        if SECRET_NAME.search(re.sub(r"([a-z])([A-Z])", r"\1 \2", out.name).replace(" ", "")):
            problems.append(f"output {out.name}: named like a secret")
        if out.type_text in ("secureString", "secureObject") or "secure" in out.decorators:
            problems.append(f"output {out.name}: typed secure")
        v = out.value
        if isinstance(v, Expr):
            if any(SECRET_CALL.match(c) for c in v.calls()):
                problems.append(f"output {out.name}: calls {sorted(v.calls())}")
            if re.search(r"\.(ConnectionString|InstrumentationKey|primaryKey|secondaryKey)\b", v.text):
                problems.append(f"output {out.name}: exposes a key property")
    return problems


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_no_output_exposes_a_secret(path: Path) -> None:
    assert secret_output_problems(load(path)) == []


def test_secret_output_check_catches_list_keys_and_secret_names() -> None:
    source = (b"resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {\n  name: 'x'\n}\n"
              b"output blob string = sa.listKeys().keys[0].value\n"
              b"@secure()\noutput adminPassword string = 'p'\n"
              b"output appi string = appi.properties.ConnectionString\n")
    problems = secret_output_problems(from_source(source))
    assert any("blob: calls" in p for p in problems)
    assert any("adminPassword: named like a secret" in p for p in problems)
    assert any("adminPassword: typed secure" in p for p in problems)
    assert any("appi: exposes a key property" in p for p in problems)


# --- container image ------------------------------------------------------------------------------


def dockerfile_lines() -> list[str]:
    """Dockerfile instructions with continuation lines joined and ARG defaults substituted."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    args = dict(m.groups() for ln in lines if (m := re.match(r"ARG (\w+)=(\S+)", ln)))
    return [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ln) for ln in lines]


def test_dockerfile_builds_on_functions_python311_with_the_servers_postgres_client() -> None:
    lines = dockerfile_lines()
    base = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert base[-1] == "FROM mcr.microsoft.com/azure-functions/python:4-python3.11"
    major = load(INFRA / "main.bicep").params["postgresVersion"].value
    assert load(INFRA / "modules" / "postgres.bicep").params["postgresVersion"].value == major
    for path in PARAM_FILES:
        assert load(path).variables["postgresVersion"].value == major, path.name
    text = "\n".join(lines)
    assert f"postgresql-client-{major}" in text, "the image must carry pg_dump/pg_restore of the servers' major"
    assert f"PG_BIN=/usr/lib/postgresql/{major}/bin" in text
    assert function_app_settings()["PG_BIN"].text == "'/usr/lib/postgresql/${postgresVersion}/bin'"
    assert "AzureWebJobsScriptRoot=/home/site/wwwroot" in text


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image() -> None:
    ignore = {ln.strip().strip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    for private in (".venv", ".local", "local.settings.json", "node_modules", ".git"):
        assert private in ignore, f".dockerignore must exclude {private}"


def _event_grid_functions() -> set[str]:
    import ast

    names: set[str] = set()
    for path in (ROOT / "triggers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                    isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
                    and d.func.attr == "event_grid_trigger" for d in node.decorator_list):
                names.add(node.name)
    return names


def test_event_subscriptions_deliver_to_event_grid_functions_that_exist() -> None:
    functions = _event_grid_functions()
    for f in (load(INFRA / "main.bicep"), load(INFRA / "modules" / "eventgrid-subscriptions.bicep")):
        for param in ("blobCreatedFunctionName", "backupFailedFunctionName"):
            assert f.params[param].value in functions, f"{f.path.name}: {param} names no Event Grid trigger"


def test_lifecycle_archive_status_is_the_catalogs_validated_status() -> None:
    from continuity.catalog.model import BackupStatus

    condition = dig(_rules("archiveRules"), "definition", "filters", "blobIndexMatch")
    assert f"'{BackupStatus.VALIDATED.value}'" in condition.text


# ---- deployable as written (issue 21) -------------------------------------------------------------
# Microsoft Learn, "Access tiers for blob data": "The archive tier isn't supported for ZRS, GZRS, or RA-GZRS
# accounts." Every service tier archives (archiveAfterDays), so a zone-redundant backups account would never
# archive: the lifecycle rule is accepted and silently does nothing for those blobs.
ZONE_REDUNDANT = {"Standard_ZRS", "Standard_GZRS", "Standard_RAGZRS", "Premium_ZRS"}


def _sku_values() -> list[tuple[str, str]]:
    found = [("main.bicep default", str(load(INFRA / "main.bicep").params["backupStorageSku"].value)),
             ("storage.bicep default", str(load(INFRA / "modules" / "storage.bicep").params["skuName"].value))]
    found += [(p.name, str(load(p).variables["backupStorageSku"].value)) for p in PARAM_FILES]
    return found


def test_backups_account_sku_supports_the_archive_tier_its_lifecycle_uses() -> None:
    tiers = [load(p).variables["retentionTiers"].value for p in PARAM_FILES]
    assert all(t.get("archiveAfterDays") for entries in tiers for t in entries), "every tier archives"
    bad = [(where, sku) for where, sku in _sku_values() if sku in ZONE_REDUNDANT]
    assert bad == [], f"the archive tier is not supported on zone-redundant accounts: {bad}"
    allowed = load(INFRA / "modules" / "storage.bicep").params["skuName"].node.parent
    assert allowed is not None and not [z for z in ZONE_REDUNDANT if f"'{z}'" in allowed.text.decode()]


def test_redeploys_leave_a_locked_immutability_policy_alone() -> None:
    # Storage REST "Create Or Update Immutability Policy": it "creates or updates an unlocked immutability
    # policy"; once an operator locked it (infra/README.md), every redeploy's PUT would be refused.
    storage = load(INFRA / "modules" / "storage.bicep")
    assert storage.params["immutabilityPolicyLocked"].value is False
    policies = storage.resources_of("Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies")
    assert len(policies) == 3  # backups, evidence, the WAL archive
    for policy in policies:
        condition = policy.condition.text.strip("()") if policy.condition is not None else None
        assert condition == "!immutabilityPolicyLocked", policy.name
    main = load(INFRA / "main.bicep")
    module = next(m for m in main.modules if m.target == "modules/storage.bicep")
    assert dig(module.body, "params", "immutabilityPolicyLocked").text == "immutabilityPolicyLocked"
    for path in PARAM_FILES:
        assert "immutabilityPolicyLocked" in load(path).variables, f"{path.name} must say whether the policy is locked"


def test_durable_functions_scale_out_with_vnet_restricted_host_storage() -> None:
    # Microsoft Learn, Azure Functions networking options, "Premium plan with virtual network triggers": for
    # non-HTTP triggers (Durable's included) behind a virtual network the platform's scale controller cannot see
    # the trigger sources; without runtime scale monitoring the app never scales past its prewarmed instances.
    site = one("Microsoft.Web/sites")
    assert dig(site.body, "properties", "siteConfig", "functionsRuntimeScaleMonitoringEnabled") is True


def test_sandbox_subnet_reaches_entra_id_for_its_authentication() -> None:
    # The sandbox server uses Microsoft Entra authentication, which needs outbound 443 to the
    # AzureActiveDirectory service tag (Flexible Server networking docs); the NSG denied everything but Storage.
    nsg = load(INFRA / "modules" / "network.bicep").resources_of("Microsoft.Network/networkSecurityGroups")[0]
    rules = [r["properties"] for r in dig(nsg.body, "properties", "securityRules")]
    deny = min(r["priority"] for r in rules if r["direction"] == "Outbound" and r["access"] == "Deny")
    entra = [r for r in rules if r["direction"] == "Outbound" and r["access"] == "Allow"
             and r["destinationAddressPrefix"] == "AzureActiveDirectory"]
    assert len(entra) == 1 and entra[0]["destinationPortRange"] == "443" and entra[0]["priority"] < deny


def test_geo_replica_storage_autogrows_like_its_primary() -> None:
    # Flexible Server read replicas: storage auto-grow on the primary must also be on the replica, and a
    # replica smaller than its primary stops replicating when the primary grows past it.
    primary = dig(one("Microsoft.DBforPostgreSQL/flexibleServers", "primary").body, "properties", "storage")
    replica = dig(one("Microsoft.DBforPostgreSQL/flexibleServers", "replica").body, "properties", "storage")
    assert replica["autoGrow"] == primary["autoGrow"] == "Enabled"
    assert replica["storageSizeGB"].text == primary["storageSizeGB"].text


def test_event_grid_webhook_is_excluded_from_app_service_authentication_as_documented() -> None:
    # Event Grid delivers to /runtime/webhooks/EventGrid (the documented casing) and cannot sign in.
    auth = one("Microsoft.Web/sites/config", "auth")
    excluded = dig(auth.body, "properties", "globalValidation", "excludedPaths")
    assert "/runtime/webhooks/EventGrid" in excluded


def test_app_identity_exists_and_holds_its_roles_before_the_app_first_starts() -> None:
    # Key Vault references, the registry image pull and identity-based host storage are all resolved at the
    # app's first start. A system-assigned identity exists only with the app, so its roles come after it and
    # the first start fails. A user-assigned identity is created and granted first, and named explicitly:
    # keyVaultReferenceIdentity, acrUserManagedIdentityID, AzureWebJobsStorage__clientId (Microsoft Learn: Key
    # Vault references "Access vaults with a user-assigned identity"; "Use managed identity to pull images";
    # Functions "Connecting to host storage with an identity").
    identities = resources("Microsoft.ManagedIdentity/userAssignedIdentities")
    assert len(identities) == 1
    site = one("Microsoft.Web/sites")
    assert dig(site.body, "identity", "type") == "UserAssigned"
    props = site.body["properties"]
    assert props["keyVaultReferenceIdentity"].text == "identityId"
    assert dig(props, "siteConfig", "acrUserManagedIdentityID").text == "identityClientId"
    settings = function_app_settings()
    assert settings["AzureWebJobsStorage__clientId"].text == "identityClientId"
    assert settings["AZURE_CLIENT_ID"].text == "identityClientId"  # DefaultAzureCredential in the app
    main = load(INFRA / "main.bicep")
    app = next(m for m in main.modules if m.target == "modules/functionapp.bicep")
    roles = next(m for m in main.modules if m.target == "modules/roles.bicep")
    assert "functionApp." not in roles.node.text.decode(), "the roles must not wait for the app"
    assert "roles" in [getattr(d, "text", d) for d in app.body.get("dependsOn", [])], "the app waits for its roles"


def test_pitr_validation_gets_an_isolated_network_azure_accepts_for_public_access_primaries() -> None:
    # The primaries are public-access servers (no delegated subnet). Azure restores such a source only to public
    # access ("You can't perform PITR across public and private access", Microsoft Learn, Flexible Server backup and
    # restore), so the restored server is reached through a private endpoint of its own, registered in the
    # privatelink zone: the app must be given that subnet and zone (main passed none, refusing every run), and its
    # role must be allowed to make, approve and delete the endpoint.
    primary = dig(one("Microsoft.DBforPostgreSQL/flexibleServers", "primary").body, "properties", "network")
    assert "delegatedSubnetResourceId" not in primary
    main = load(INFRA / "main.bicep")
    app = next(m for m in main.modules if m.target == "modules/functionapp.bicep")
    params = dig(app.body, "params")
    assert params["pitrSubnetId"].text == "primaryNetwork.outputs.privateEndpointsSubnetId"
    assert params["pitrDnsZoneId"].text == "postgresZone.outputs.zoneId"
    zone = next(m for m in main.modules if m.name == "postgresZone")
    assert dig(zone.body, "params", "zoneName") == "privatelink.postgres.database.azure.com"
    role = one("Microsoft.Authorization/roleDefinitions")
    actions = set(dig(role.body, "properties", "permissions")[0]["actions"])
    assert {"Microsoft.DBforPostgreSQL/flexibleServers/privateEndpointConnectionsApproval/action",
            "Microsoft.Network/privateEndpoints/write", "Microsoft.Network/privateEndpoints/delete",
            "Microsoft.Network/privateEndpoints/privateDnsZoneGroups/write",
            "Microsoft.Network/locations/operations/read"} <= actions


# --- Azure Monitor: alert rules, action group, workbook ---------------------------------------------

ALERTS = INFRA / "modules" / "alerts.bicep"
ALERTED_EVENTS = {  # alert rule -> the custom event it counts
    "rpoBreached": "rpo.breached", "validationFailed": "validation.failed",
    "recoveryChainBroken": "recovery_chain.broken", "replicationLag": "replication.lag",
}


def test_alert_rules_count_the_custom_events_the_app_sends_and_page_the_action_group() -> None:
    from continuity.kernel.events import EventType, custom_event_name

    rules = {r.name: r for r in load(ALERTS).resources_of("Microsoft.Insights/scheduledQueryRules")}
    assert set(rules) == set(ALERTED_EVENTS)
    for name, event in ALERTED_EVENTS.items():
        body = rules[name].body
        assert body["kind"] == "LogAlert"
        props = dig(body, "properties")
        assert props["enabled"] is True and props["severity"] <= 2, name
        assert [s.text for s in props["scopes"]] == ["appInsightsId"], name
        criterion = dig(props, "criteria", "allOf")[0]
        query = criterion["query"] if isinstance(criterion["query"], str) else criterion["query"].text
        assert query.startswith("'customEvents") or query.startswith("customEvents"), name
        assert f'where name == "{event}"' in query, name
        assert (criterion["timeAggregation"], criterion["operator"], criterion["threshold"]) == (
            "Count", "GreaterThan", 0), name
        assert [g.text for g in dig(props, "actions", "actionGroups")] == ["actionGroup.id"], name
    # The two the app publishes today are its own outgoing event types, as the publisher logs them.
    assert custom_event_name(EventType.RPO_BREACHED) == ALERTED_EVENTS["rpoBreached"]
    assert custom_event_name(EventType.VALIDATION_FAILED) == ALERTED_EVENTS["validationFailed"]
    lag = dig(rules["replicationLag"].body, "properties", "criteria", "allOf")[0]["query"]
    assert "${replicationLagSeconds}" in lag.text  # the threshold is a parameter


def test_per_tenant_alerts_split_by_tenant() -> None:
    f = load(ALERTS)
    assert f.variables["perTenant"].value == [{"name": "tenant", "operator": "Include", "values": ["*"]}]
    for rule in f.resources_of("Microsoft.Insights/scheduledQueryRules"):
        criterion = dig(rule.body, "properties", "criteria", "allOf")[0]
        if rule.name != "replicationLag":  # the replica is the platform's, not a tenant's
            assert criterion["dimensions"].text == "perTenant", rule.name


def test_action_group_receivers_come_from_parameters() -> None:
    f = load(ALERTS)
    group = one("Microsoft.Insights/actionGroups")
    props = dig(group.body, "properties")
    assert props["enabled"] is True
    for field_name, param in (("emailReceivers", "emailReceivers"), ("webhookReceivers", "webhookReceivers")):
        loop = props[field_name]
        assert isinstance(loop, Loop) and loop.iterable.text == param, field_name
        assert loop.body["useCommonAlertSchema"] is True
        assert f.params[param].value == []  # nobody is paged by default: the deployment names its receivers
    main = load(INFRA / "main.bicep")
    call = [m for m in main.modules if m.name == "alerts"][0]
    assert dig(call.body, "params", "emailReceivers").text == "alertEmailReceivers"
    assert dig(call.body, "params", "webhookReceivers").text == "alertWebhookReceivers"
    assert dig(call.body, "params", "appInsightsId").text == "monitoring.outputs.appInsightsId"


def test_workbook_shows_the_estate_from_application_insights_worst_first() -> None:
    from continuity.validation.estate import LABELS, WORST_FIRST

    workbook = one("Microsoft.Insights/workbooks")
    props = dig(workbook.body, "properties")
    assert props["sourceId"].text == "appInsightsId" and props["category"] == "workbook"
    assert props["serializedData"].text == "loadTextContent('../workbooks/estate.workbook.json')"
    content = json.loads((INFRA / "workbooks" / "estate.workbook.json").read_text())
    assert content["version"] == "Notebook/1.0"
    queries = {i["name"]: i["content"] for i in content["items"] if i["type"] == 3}
    estate = queries["estate"]
    assert estate["resourceType"] == "microsoft.insights/components" and estate["visualization"] == "table"
    assert estate["query"].startswith("customEvents")
    ranks = [estate["query"].index(f'"{LABELS[s]}"') for s in WORST_FIRST]  # the dashboard's words and order
    assert ranks == sorted(ranks)
    assert "order by rank asc" in estate["query"]
