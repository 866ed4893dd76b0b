"""Every script's --help prints its usage and exits 0, at once, and changes no file."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELP_BUDGET_S = 2.0
PYTHON_SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def tree_state() -> dict[str, tuple[int, int]]:
    """Every file of the checkout (bytecode caches aside) with its modification time and size."""
    skip = {".git", "venv", "__pycache__", ".pytest_cache"}
    state = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            stat = (Path(folder) / name).stat()
            state[os.path.relpath(Path(folder) / name, ROOT)] = (stat.st_mtime_ns, stat.st_size)
    return state


def test_every_python_script_is_covered():
    assert {p.stem for p in PYTHON_SCRIPTS} >= {"bench_program", "export_ray_dashboards", "rehearse", "render", "scheduler"}


@pytest.mark.parametrize(
    "argv",
    [[sys.executable, "-m", f"scripts.{p.stem}", "--help"] for p in PYTHON_SCRIPTS]
    + [[sys.executable, "scripts/bench_program.py", "--help"], ["bash", "scripts/install.sh", "--help"]],
    ids=lambda argv: " ".join(argv[1:]),
)
def test_help_prints_and_exits_at_once_changing_nothing(argv):
    before = tree_state()
    start = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:"), result.stdout[:200]
    assert seconds < HELP_BUDGET_S, f"--help took {seconds:.2f} s"
    assert tree_state() == before
