import gc
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.model import config  # noqa: E402
from components.model.stack import stack_file_keys  # noqa: E402
from scripts.ops import loopback_netns  # noqa: E402

# Why this session could not get a loopback-only network namespace (None: it has one).
NO_OWN_NETWORK = "not configured yet"


def pytest_configure(config: pytest.Config) -> None:
    """The whole session moves into a network namespace with only `lo`, before anything starts:
    real Ray clusters, their drivers and tools, Prometheus and the rehearsal all live there,
    never listen beyond loopback, and another run's ports are never ours."""
    global NO_OWN_NETWORK
    NO_OWN_NETWORK = loopback_netns.enter()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ray") and NO_OWN_NETWORK is not None:
        pytest.skip(f"real Ray runs only in a loopback-only network namespace: {NO_OWN_NETWORK}")


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """__main__.py turns the cyclic GC off for a program run, as for a process that ends with it; the
    test process runs the program again and again, so the next test starts with it on."""
    gc.enable()


@pytest.fixture(scope="session", autouse=True)
def empty_home(tmp_path_factory):
    """The suite never relies on, or writes into, the real home: every test runs with an empty one."""
    import os

    home = tmp_path_factory.mktemp("home")
    real, os.environ["HOME"] = os.environ.get("HOME"), str(home)
    yield home
    if real is None:
        os.environ.pop("HOME", None)
    else:
        os.environ["HOME"] = real


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
def night(tmp_path_factory):
    """The prod program under mocks at a night instant, every tier live (read it, never change it:
    every module that asks shares it; a module may define its own `night`)."""
    from scripts.ops.program_mocks import run_program

    raw = prod_raw()
    raw["at"] = "2026-11-22T22:00:00+01:00"
    return run_program(raw, tmp_path_factory.mktemp("night"))


@pytest.fixture(scope="session")
def prod_config() -> config.ClusterConfig:
    return config.load(prod_raw())
