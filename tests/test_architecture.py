"""The library's structure is checked, not assumed: subpackages in layers that point down, no import cycle,
no private names used across modules, few modules outside the subpackages (docs/architecture.md)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aep_lib"


def test_the_layers_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_there_is_no_import_cycle_in_the_library():
    graph = grimp.build_graph("aep_lib")
    modules = sorted(m for m in graph.modules if m != "aep_lib")
    cycles = [(a, b) for a in modules for b in modules
              if a < b and graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)]
    assert not cycles, f"import cycles between: {cycles[:5]}"


def _private_reach_ins(path: Path) -> list[str]:
    """``from .x import _name`` and ``module._name`` where ``module`` is an aep_lib module imported here."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("aep_lib")):
            for alias in node.names:
                if alias.name.startswith("_") and alias.name != "__version__":
                    found.append(f"{path.name}:{node.lineno} imports {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name.startswith("aep_lib"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_uses_another_modules_private_names(path):
    assert not _private_reach_ins(path)


def test_the_private_name_check_can_fail(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from .score import _forward\nfrom . import store\nstore._refresh()\n")
    assert len(_private_reach_ins(sample)) == 2


def contract_layers() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]


def test_the_layers_are_few_and_name_subpackages():
    """The contract reads as the data flow: at most 8 layers, and every subpackage of aep_lib sits in one."""
    layers = contract_layers()
    assert len(layers) <= 8
    placed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    subpackages = {f"aep_lib.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages <= placed
    assert len(subpackages) >= 7


def test_only_a_few_modules_stay_at_the_top_of_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, f"modules outside a subpackage: {top}"


def test_every_module_has_a_place_in_the_layers():
    """A module missing from the contract is checked by nothing: each one must sit in a layer."""
    placed = {name.strip() for layer in contract_layers() for name in layer.replace(":", "|").split("|")}
    modules = {f"aep_lib.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    modules |= {f"aep_lib.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert not modules - placed, f"not in any layer: {sorted(modules - placed)}"
