"""The tree's layers, checked: what ships is pure, the operator tools never lean on the tests.

components/model     the typed stack config and the schedule (no Pulumi)
components/render    every text a VM receives, rendered from the model (no Pulumi)
components/resources the Pulumi components that wire those texts into resources
scripts/ops          operator libraries; scripts/*.py their thin command lines
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("components/model", "components/render")
MAX_LINES = 420
# A module may pass MAX_LINES only with a reason written here.
LONG_MODULES: dict[str, str] = {
    "tests/test_render.py": "one offline render per module: each rendered file against its real consumer",
    "tests/test_scheduler.py": "one stand-in stack per module: every scheduler verb against it",
}


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", python_files(*PURE_PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_what_ships_imports_no_pulumi(path):
    pulumi = sorted(m for m in imported_modules(path) if m.split(".")[0].startswith("pulumi"))
    assert pulumi == [], f"{path.relative_to(ROOT)} is in a pure layer but imports {pulumi}"


@pytest.mark.parametrize("path", python_files(*PURE_PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_what_ships_never_imports_the_wiring(path):
    wiring = sorted(m for m in imported_modules(path) if m.startswith(("components.resources", "scripts")))
    assert wiring == []


def test_scripts_import_nothing_from_tests():
    test_modules = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tests"}
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] in test_modules)
        for path in python_files("scripts", "policy", "components")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_detector_sees_a_nested_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import pulumi_docker as d\n    from conftest import prod_raw\n")
    assert imported_modules(sample) == {"pulumi_docker", "conftest"}


def test_no_module_is_too_long_without_a_reason():
    long = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in python_files("components", "scripts", "policy", "tests")
    }
    too_long = {name: lines for name, lines in long.items() if lines > MAX_LINES and name not in LONG_MODULES}
    assert too_long == {}, f"split these by concern, or state why in LONG_MODULES: {too_long}"
    stale = sorted(name for name in LONG_MODULES if long.get(name, 0) <= MAX_LINES)
    assert stale == [], f"no longer long (or gone): drop them from LONG_MODULES: {stale}"


def test_every_component_type_token_names_its_class():
    """`ray-cluster:index:<Class>`: the type in a URN says which class registered it."""
    found = {}
    for path in python_files("components/resources"):
        tree = ast.parse(path.read_text())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            tokens = [
                c.args[0].value for c in ast.walk(cls)
                if isinstance(c, ast.Call) and c.args and isinstance(c.args[0], ast.Constant)
                and isinstance(c.args[0].value, str) and c.args[0].value.startswith("ray-cluster:index:")
            ]
            if tokens:
                found[cls.name] = tokens
    assert found and all(tokens == [f"ray-cluster:index:{name}"] for name, tokens in found.items()), found
