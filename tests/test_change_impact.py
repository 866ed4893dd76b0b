"""What a change does to a running cluster, said before anyone runs it: both trees' programs
under mocks, through the engine-rules model (scripts/ops/change_impact.py)."""
from __future__ import annotations

import shutil
import sys
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts.ops import change_impact, engine_rules

ROOT = Path(__file__).resolve().parents[1]
NIGHT = "2026-11-22T22:00:00+01:00"


def tree_copy(into: Path) -> Path:
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, into / name)
    return into


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> list[engine_rules.Resource]:
    return change_impact.graph(tree_copy(tmp_path_factory.mktemp("base")), "prod", NIGHT)


def changed_tree(tmp_path: Path, key: str, value) -> Path:
    tree = tree_copy(tmp_path)
    stack_file = tree / "Pulumi.prod.yaml"
    document = yaml.safe_load(stack_file.read_text())
    target = document["config"]
    *parents, last = key.split(".")
    for part in parents:
        target = target[part]
    target[last] = value
    stack_file.write_text(yaml.safe_dump(document, sort_keys=False))
    return tree


def impact_of(base, tree: Path) -> change_impact.Impact:
    plan = engine_rules.up(engine_rules.refreshed(base), change_impact.graph(tree, "prod", NIGHT))
    return change_impact.impact(plan, "ray-ao-1")


def test_a_ray_upgrade_says_the_head_restarts_and_every_worker_drains(base, tmp_path):
    found = impact_of(base, changed_tree(tmp_path, "ray-cluster:ray.image", "rayproject/ray:2.60.0-py312"))
    assert found.head_restarts == ["ray-ao-1-ray"]
    assert found.drains == ["ray-ao-2", "ray-ao-3", "ray-hc-1", "ray-hc-2", "ray-hc-3"]
    assert found.vm_reboots == found.vm_replacements == []
    text = change_impact.markdown(found, "origin/main", NIGHT)
    assert "**Head restart**: YES: ray-ao-1-ray replaced" in text and "**VMs rebooted**: none" in text


def test_a_tier_resize_says_which_vms_are_replaced_after_their_drain(base, tmp_path):
    found = impact_of(base, changed_tree(tmp_path, "ray-cluster:tiers.heavy-compute.memoryGb", 384))
    assert found.vm_replacements == found.drains == ["ray-hc-1", "ray-hc-2", "ray-hc-3"]
    assert found.head_restarts == found.vm_reboots == []


def test_a_new_ssh_key_touches_no_running_vm(base, tmp_path):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRotatedKeyRotatedKeyRotatedKeyRotated ops@ray-cluster"
    found = impact_of(base, changed_tree(tmp_path, "ray-cluster:ssh.publicKey", key))
    assert found.vm_reboots == found.vm_replacements == found.head_restarts == []


def test_no_change_says_nothing_happens(base, tmp_path):
    found = impact_of(base, tree_copy(tmp_path))
    assert found.quiet
    assert "Nothing: `pulumi up` would change no resource." in change_impact.markdown(found, "HEAD", NIGHT)


def test_a_program_that_does_not_run_is_reported(tmp_path):
    tree = changed_tree(tmp_path, "ray-cluster:network.cidr", "not-a-network")
    with pytest.raises(RuntimeError, match="did not run under mocks"):
        change_impact.graph(tree, "prod", NIGHT)


def render_against(base: str, out: Path) -> tuple[str, str]:
    """`scripts.render --impact-against base` into `out`: its impact.md and summary.md."""
    done = subprocess.run(
        [sys.executable, "-m", "scripts.render", "--stack", "prod", "--out", str(out), "--at", NIGHT, "--impact-against", base],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return (out / "impact.md").read_text(), (out / "summary.md").read_text()


def test_the_offline_render_says_what_deploying_it_would_do(tmp_path):
    impact, summary = render_against("HEAD", tmp_path / "render")
    assert impact.startswith(f"### What this change does to a running cluster (against `HEAD`, at {NIGHT})")
    assert impact in summary


def test_a_base_the_tool_cannot_run_is_said_not_known(tmp_path):
    impact, _ = render_against("no-such-revision", tmp_path / "render")
    assert "Not known:" in impact
