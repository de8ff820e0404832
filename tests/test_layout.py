"""The shape of the source tree: no import cycles, the import rules, rooms of readable size, a wheel
that holds every module."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> the package it installs as (pyproject's package-dir).
PACKAGES = {"gtacity": "gtacity", "engine": "gtacity.engine", "trainer": "gtacity.trainer", "kernels": "gtacity.kernels"}


def _modules() -> dict[str, Path]:
    """Every project module's dotted name -> its file."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (function-level imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    return {t for t in targets if t in modules and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_anywhere_in_the_project():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_import_rules_between_engine_trainer_and_kernels():
    broken = []
    for name, targets in _graph().items():
        for target in targets:
            if name.startswith("gtacity.kernels") and not target.startswith("gtacity.kernels"):
                broken.append(f"{name} -> {target} (kernels import nothing of the project)")
            if name.startswith("gtacity.engine") and target.startswith("gtacity.trainer"):
                broken.append(f"{name} -> {target} (engine never imports trainer)")
            if name.startswith("gtacity.trainer") and target.startswith("gtacity.engine"):
                broken.append(f"{name} -> {target} (trainer never imports engine)")
    both = [n for n, t in _graph().items() if any(x.startswith("gtacity.engine") for x in t)
            and any(x.startswith("gtacity.trainer") for x in t)]
    assert all(n.startswith("gtacity.cli") for n in both), f"only gtacity/cli*.py imports both: {both}"
    assert broken == []


def test_engine_reads_as_rooms():
    top = sorted(p.name for p in (ROOT / "engine").glob("*.py"))
    assert len(top) <= 8, f"engine/ has {len(top)} modules at its top: {top}"
    too_long = {str(p.relative_to(ROOT)): n for p in (ROOT / "engine").rglob("*.py")
                if (n := len(p.read_text().splitlines())) > 450}
    assert too_long == {}


def test_the_public_face_resolves_every_name():
    import gtacity.engine as engine
    import gtacity.engine.translation  # noqa: F401 - a submodule bound on the package must not shadow a name

    for name in engine.__all__:
        # A submodule of the same name would replace the public object once imported.
        assert importlib.util.find_spec(f"gtacity.engine.{name}") is None, name
        assert not isinstance(getattr(engine, name), types.ModuleType), name
    assert callable(engine.translate) and callable(engine.export)
    with pytest.raises(AttributeError):
        engine.no_such_name  # noqa: B018


@pytest.mark.slow
def test_the_wheel_holds_every_source_module_and_the_bundled_models(tmp_path):
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                            "-w", str(tmp_path), str(tree)], check=True, capture_output=True, text=True)
    # A folder Python can import but the packaging does not name (setuptools: "Package would be
    # ignored") is a file some future setuptools leaves out of the wheel.
    assert "would be ignored" not in built.stdout + built.stderr
    (wheel,) = tmp_path.glob("gtacity-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"/".join(name.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")
                for name, path in _modules().items()}
    assert expected - names == set()
    assert {f"gtacity/models/{p.name}" for p in (ROOT / "gtacity" / "models").glob("*.safetensors")} <= names
    assert {f"gtacity/models/int8/{p.name}" for p in (ROOT / "gtacity" / "models" / "int8").iterdir()} <= names
