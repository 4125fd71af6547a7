"""The README's architecture map, checked: what each folder may import, and no reaching into privates."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tradecanvas_ext"

# folder (or top-level module) -> the parts of the package it may import (besides itself): the table of
# the README's "Architecture" section
CORE = {"domain", "settings", "series_ids", "registry", "feed", "metrics"}
ALLOWED = {
    "domain": set(),
    "series_ids": {"domain"},
    "registry": {"domain"},
    "feed": {"domain"},
    "settings": {"domain", "series_ids"},
    "metrics": {"domain"},
    "store": {"domain"},
    "sources": {"domain", "store"},
    "backfill": CORE | {"store", "sources"},
    "hub": CORE | {"store"},
    "core": CORE | {"store", "sources", "backfill", "hub"},
    "runtime": CORE | {"core", "backfill", "web"},
    "web": CORE | {"store", "hub", "backfill"},
    "bot": CORE | {"core", "runtime", "store", "sources", "backfill", "hub", "history"},
    "history": {"domain", "series_ids", "store", "sources"},
    "cli": CORE | {"core", "runtime", "store", "backfill", "bot", "history", "testing"},
    "testing": {"domain"},
}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _part(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _our_imports(rel: Path, tree: ast.AST):
    """(part imported, names imported, line) for every import of our own package."""
    package = ["tradecanvas_ext", *rel.parts[:-1]]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            else:
                target = (node.module or "").split(".")
            if target[0] != "tradecanvas_ext":
                continue
            names = [a.name for a in node.names]
            if len(target) == 1:  # from tradecanvas_ext import x / from .. import x
                for n in names:
                    yield n, [], node.lineno
            else:
                yield target[1], names, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "tradecanvas_ext" and len(parts) > 1:
                    yield parts[1], [], node.lineno


def test_every_module_is_on_the_map():
    unknown = sorted({_part(rel) for rel, _ in _modules()} - set(ALLOWED) - {"__init__"})
    assert not unknown, f"add these to the README's architecture map and to ALLOWED: {unknown}"


def test_each_folder_imports_only_what_the_map_allows():
    bad = []
    for rel, tree in _modules():
        part = _part(rel)
        if part == "__init__":
            continue
        for target, _, line in _our_imports(rel, tree):
            if target != part and target not in ALLOWED[part]:
                bad.append(f"{rel}:{line} ({part}) imports {target}")
    assert not bad, "\n".join(bad)


def test_the_domain_imports_only_the_standard_library_and_numpy():
    bad = []
    for rel, tree in _modules():
        if _part(rel) != "domain":
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [(node.module or "").split(".")[0]]
            for n in names:
                if n not in sys.stdlib_module_names and n not in ("numpy", "__future__"):
                    bad.append(f"{rel}:{node.lineno} imports {n}")
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_name():
    bad = []
    for rel, tree in _modules():
        for _, names, line in _our_imports(rel, tree):
            bad.extend(f"{rel}:{line} imports {n}" for n in names if n.startswith("_") and not n.startswith("__"))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("private", ["_exchange_pool", "_dp", "_lock"])
def test_no_module_reaches_into_a_private_attribute_of_our_other_objects(private):
    """`x._lock` on an object that is not `self` (or the module's own class) is reaching into it."""
    bad = []
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr == private
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                bad.append(f"{rel}:{node.lineno} {ast.unparse(node)}")
    assert not bad, "\n".join(bad)
