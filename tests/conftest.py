import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.model import config  # noqa: E402
from components.model.stack import stack_file_keys  # noqa: E402


def require_tool(tool: str, package: str) -> None:
    """A real tool scripts/install.sh installs: without it the test fails, never skips silently."""
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run scripts/install.sh (it installs {package})")


def prod_raw() -> dict:
    """The prod stack's `ray-cluster:*` keys, namespace stripped (a fresh copy)."""
    return stack_file_keys("prod")


@pytest.fixture
def raw() -> dict:
    return prod_raw()


@pytest.fixture(scope="session")
def prod_config() -> config.ClusterConfig:
    return config.load(prod_raw())
