"""The layout's rules, enforced: which package may import which, file sizes, no nested classes.

Every module of ``lmanet_ros`` belongs to one layer (README "Architecture"); a layer may import
only the layers listed for it in ``MAY_IMPORT``. Imports inside functions count too. Nothing
outside ``lmanet_ros/tools`` imports ``lmanet_ros.tools`` (benchmarks and tests included, except
the command line's own tests in ``test/tools``): the command line is a floor of its own, every
other caller uses the library's typed API.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lmanet_ros"

#: Top-level modules and packages of lmanet_ros -> their layer.
LAYER_OF = {
    "classes": "core", "imaging": "core", "sizes": "core", "stamps": "core",
    "progress": "core", "metrics": "core", "ros_env": "core", "streams": "core",
    "devices": "core", "threads": "core", "device_imaging": "core",
    "models": "models", "pipeline": "pipeline", "pipeline_device": "pipeline", "bags": "bags",
    "synthetic": "synthetic",
    "training": "training", "evaluation": "evaluation", "node": "node", "tools": "tools",
    "msg": "msg",  # generated from msg/ by colcon
    "runtime": "runtime",
}
#: Layer -> the layers it may import (besides itself).
MAY_IMPORT = {
    "core": {"core"},
    "models": {"classes"},   # one core module: the class tables (pure data)
    "pipeline": {"core", "models", "runtime"},
    "runtime": {"core", "models"},
    "bags": {"core"},
    "synthetic": {"core"},
    "training": {"core", "models", "synthetic"},
    "evaluation": {"core", "pipeline", "bags", "synthetic", "msg"},
    "node": {"core", "models", "pipeline", "msg"},
    "tools": set(LAYER_OF.values()),
}
#: Largest Python file under lmanet_ros/, in lines.
MAX_LINES = 700


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(path: Path) -> set[str]:
    """Absolute names of the lmanet_ros modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "lmanet_ros" or name.startswith("lmanet_ros.")}


def _layer(dotted: str) -> str | None:
    parts = dotted.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None


@pytest.mark.parametrize("path", _modules(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_what_its_layer_may(path: Path):
    dotted = _dotted(path)
    if dotted == "lmanet_ros":
        return
    layer = _layer(dotted)
    assert layer is not None, (f"{dotted} belongs to no layer: add it to LAYER_OF here and to "
                               f"the README Architecture section")
    allowed = MAY_IMPORT[layer] | {layer}
    wrong = sorted(name for name in _imported(path)
                   if _layer(name) is not None and _layer(name) not in allowed
                   and not (layer == "models" and name.split(".")[1] == "classes"))
    assert not wrong, f"{dotted} (layer {layer}) may import {sorted(allowed)}, imports {wrong}"


@pytest.mark.parametrize("folder", ["benchmarks", "test", "launch"])
def test_nothing_outside_tools_imports_the_command_line(folder: str):
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imported(p)
                                                  if n.startswith("lmanet_ros.tools"))
                 for p in _modules(ROOT / folder)
                 if not p.is_relative_to(ROOT / "test" / "tools")}
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize("path", _modules(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_small_and_classes_live_at_module_level(path: Path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines (split it along a real seam)"
    tree = ast.parse(path.read_text())
    nested = [node.name for func in ast.walk(tree)
              if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(func) if isinstance(node, ast.ClassDef)]
    assert not nested, f"{path.name}: classes defined inside functions: {nested}"


def test_the_rules_see_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch):
    """The checker itself: a lazy import and a relative import are both found."""
    package = tmp_path / "lmanet_ros" / "models"
    package.mkdir(parents=True)
    probe = package / "probe.py"
    probe.write_text("def f():\n    from lmanet_ros.tools import cli\n    from ..node import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert {"lmanet_ros.tools", "lmanet_ros.node"} <= _imported(probe)
