"""Which settings the code reads, found in its syntax trees (ast), for the settings tests.

A read is ``settings.get("X")``, ``get_int("X")``, ``os.environ.get("X")``, ``os.environ["X"]``, ``os.getenv("X")``
or a ``"%X%"`` binding expression (a timer schedule: the Functions host reads setting X for the code). A read
whose key is a variable counts when the variable runs over literal names (``for key in ("A", "B")``, or over
``KEYS.items()`` / ``.values()`` of a module-level dict of literals); any other computed read is reported as
unresolved, so a test can insist that each one is known.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("continuity", "devhost", "triggers", "orchestrations", "activities")
SETTINGS_MODULE = ROOT / "continuity" / "kernel" / "settings.py"
_BINDING_REF = re.compile(r"^%([A-Za-z_][A-Za-z0-9_]*)%$")
# Process environment the code reads that is not an app setting: none today. Add a name here only with
# the reason it is not a setting.
NOT_SETTINGS: dict[str, str] = {}


@dataclass
class SettingsReads:
    """Names read with a known key, and the computed reads whose key could not be resolved."""

    names: set[str] = field(default_factory=set)
    unresolved: set[str] = field(default_factory=set)  # the key expressions, as source text


def _is_os_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os") or (
        isinstance(node, ast.Name) and node.id == "environ")


def _reads_setting(call: ast.Call, bare_get: bool) -> bool:
    fn = call.func
    if isinstance(fn, ast.Name):
        return fn.id in ("get_int", "getenv") or (bare_get and fn.id == "get")
    if not isinstance(fn, ast.Attribute):
        return False
    owner = fn.value
    owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
    if fn.attr in ("get", "get_int") and owner_name == "settings":
        return True
    if fn.attr == "get" and _is_os_environ(owner):
        return True
    return fn.attr == "getenv" and owner_name == "os"


def _literal_strings(node: ast.expr) -> set[str] | None:
    if isinstance(node, ast.Tuple | ast.List | ast.Set) and node.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return {str(e.value) for e in node.elts if isinstance(e, ast.Constant)}
    return None


def _module_literals(tree: ast.Module) -> tuple[dict[str, set[str]], dict[str, tuple[set[str], set[str]]]]:
    """Module-level ``NAME = ("A", "B")`` sequences and ``NAME = {"k": "A"}`` dicts of string literals."""
    sequences: dict[str, set[str]] = {}
    dicts: dict[str, tuple[set[str], set[str]]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        strings = _literal_strings(value)
        if strings is not None:
            sequences[target.id] = strings
        elif isinstance(value, ast.Dict) and all(
                isinstance(x, ast.Constant) and isinstance(x.value, str) for x in [*value.keys, *value.values]):
            dicts[target.id] = ({str(k.value) for k in value.keys if isinstance(k, ast.Constant)},
                                {str(v.value) for v in value.values if isinstance(v, ast.Constant)})
    return sequences, dicts


def _names_bound(target: ast.expr, source: ast.expr, name: str, sequences: dict[str, set[str]],
                 dicts: dict[str, tuple[set[str], set[str]]]) -> set[str] | None:
    """The literal names ``name`` runs over when ``for target in source`` binds it, else None."""
    if isinstance(target, ast.Name) and target.id == name:
        names = _literal_strings(source)
        if names is None and isinstance(source, ast.Name):
            names = sequences.get(source.id)
        if (names is None and isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute)
                and source.func.attr in ("values", "keys") and isinstance(source.func.value, ast.Name)
                and source.func.value.id in dicts):
            keys, values = dicts[source.func.value.id]
            names = values if source.func.attr == "values" else keys
        return names
    if (isinstance(target, ast.Tuple) and len(target.elts) == 2 and isinstance(source, ast.Call)
            and isinstance(source.func, ast.Attribute) and source.func.attr == "items"
            and isinstance(source.func.value, ast.Name) and source.func.value.id in dicts):
        for element, names in zip(target.elts, dicts[source.func.value.id], strict=True):
            if isinstance(element, ast.Name) and element.id == name:
                return names
    return None


def _loop_names(node: ast.Name, parents: dict[ast.AST, ast.AST], sequences: dict[str, set[str]],
                dicts: dict[str, tuple[set[str], set[str]]]) -> set[str] | None:
    """The literal names a loop variable runs over, from the innermost loop around ``node`` that binds it."""
    current: ast.AST = node
    while current in parents:
        current = parents[current]
        loops: list[tuple[ast.expr, ast.expr]] = []
        if isinstance(current, ast.For | ast.AsyncFor):
            loops = [(current.target, current.iter)]
        elif isinstance(current, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            loops = [(g.target, g.iter) for g in current.generators]
        for target, source in reversed(loops):
            names = _names_bound(target, source, node.id, sequences, dicts)
            if names is not None:
                return names
        if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return None
    return None


def scan_source(source: str, *, bare_get: bool = False) -> SettingsReads:
    """The settings this Python source reads.

    :param bare_get: count ``get("X")`` too (in continuity/kernel/settings.py, where ``get`` is the reader itself).
    """
    tree = ast.parse(source)
    sequences, dicts = _module_literals(tree)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = SettingsReads()

    def key(node: ast.expr) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.names.add(node.value)
            return
        names = _loop_names(node, parents, sequences, dicts) if isinstance(node, ast.Name) else None
        if names is None:
            found.unresolved.add(ast.unparse(node))
        else:
            found.names.update(names)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _reads_setting(node, bare_get) and node.args:
            key(node.args[0])
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value) and isinstance(node.ctx, ast.Load):
            key(node.slice)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (ref := _BINDING_REF.match(node.value)):
            found.names.add(ref.group(1))
    return found


def settings_reads(source: str, *, bare_get: bool = False) -> set[str]:
    """Names of settings this Python source reads (see :func:`scan_source`)."""
    return scan_source(source, bare_get=bare_get).names


def scanned_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py")) + [ROOT / "function_app.py"]


def scan_code() -> dict[str, SettingsReads]:
    """Each scanned file (relative path) and what it reads."""
    return {str(path.relative_to(ROOT)): scan_source(path.read_text(), bare_get=path == SETTINGS_MODULE)
            for path in scanned_files()}


def settings_read_by_code() -> dict[str, set[str]]:
    """Setting name -> files reading it, over the scanned packages and function_app.py."""
    reads: dict[str, set[str]] = {}
    for path, found in scan_code().items():
        for name in found.names:
            reads.setdefault(name, set()).add(path)
    return reads


def unresolved_reads() -> dict[str, set[str]]:
    """File -> key expressions of its settings reads whose names the scanner cannot tell."""
    return {path: found.unresolved for path, found in scan_code().items() if found.unresolved}
