"""The first hour with a stack file: typos a person makes, each a one-line change to Pulumi.prod.yaml,
and the exact message every tool prints for it (no traceback, exit code 2, a node named by its name).

The messages are written out in full on purpose: a change to one is a change a person reads.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from components.model.errors import CONFIG_ERROR_EXIT
from scripts import render

ROOT = Path(__file__).resolve().parents[1]
PROD = (ROOT / "Pulumi.prod.yaml").read_text()

# (what a person did, a line of Pulumi.prod.yaml, what they wrote instead, every problem the tools print)
TYPOS = [
    ('tab indent',
     '    cidr: 10.20.0.0/24',
     '\tcidr: 10.20.0.0/24',
     ["Pulumi.prod.yaml, line 17, column 1: found character '\\t' that cannot start any token: indent with spaces, YAML does not allow tabs"]),
    ('host bits set',
     '    cidr: 10.20.0.0/24',
     '    cidr: 10.20.0.5/24',
     ["ray-cluster:network.cidr: '10.20.0.5/24' has host bits set: did you mean 10.20.0.0/24?"]),
    ('cidr without prefix length',
     '    cidr: 10.20.0.0/24',
     '    cidr: 10.20.0.0/33',
     ["ray-cluster:network.cidr: '10.20.0.0/33' has no valid prefix length: write a network like 10.20.0.0/24"]),
    ('gateway outside the network',
     '    gateway: 10.20.0.1',
     '    gateway: 10.20.1.1',
     ['ray-cluster:network.gateway: 10.20.1.1 is outside network.cidr 10.20.0.0/24']),
    ('dns server typo',
     '    dnsServers: [10.20.0.2, 10.20.0.3]',
     '    dnsServers: [10.20.0.2, 10.20.0.300]',
     ["ray-cluster:network.dnsServers[1]: '10.20.0.300' is not an IPv4 address like 10.20.0.11"]),
    ('admins open to the world',
     '    adminCidrs: [10.30.0.0/24]',
     '    adminCidrs: [0.0.0.0/0]',
     ['ray-cluster:network.adminCidrs[0]: 0.0.0.0/0 would open SSH and dashboards to everyone; name the admin networks']),
    ('search domains not a list',
     '    searchDomains: [dc1.example.internal]',
     '    searchDomains: dc1.example.internal',
     ["ray-cluster:network.searchDomains: must be a list, like [a, b] or one `- item` per line (got 'dc1.example.internal')"]),
    ('root ssh user',
     '    user: rayops',
     '    user: root',
     ['ray-cluster:ssh.user: must not be root: cloud-init creates a sudo user for the program']),
    ('ssh user with a space',
     '    user: rayops',
     '    user: ray ops',
     ["ray-cluster:ssh.user: 'ray ops' is not a Linux user name: lowercase letters, digits, _ and -, starting with a letter or _, at most 32"]),
    ('public key without its type',
     '    publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1y8cG9b0ZbC0Jp8m4t6FvYk2mY3o7lq0m2Zc1vXyQ ops@ray-cluster',
     '    publicKey: AAAAC3NzaC1lZDI1NTE5AAAAIHk1y8cG9b0ZbC0Jp8m4t6FvYk2mY3o7lq0m2Zc1vXyQ ops@ray-cluster',
     ['ray-cluster:ssh.publicKey: is not an OpenSSH public key: paste the one line of the .pub file, like `ssh-ed25519 AAAAC3Nza... you@host` (ssh-ed25519, ssh-rsa or ecdsa-sha2-nistp256/384/521)']),
    ('latest image',
     '    image: rayproject/ray:2.60.0-py311',
     '    image: rayproject/ray:latest',
     ["ray-cluster:ray.image: image 'rayproject/ray:latest' must be pinned to an exact version tag (like rayproject/ray:2.60.0-py311), never latest or a bare name"]),
    ('image of another ray',
     '    image: rayproject/ray:2.60.0-py311',
     '    image: rayproject/ray:2.59.0-py311',
     ['ray-cluster:ray.image: Ray 2.59.0 in the image must equal the pinned Ray client 2.60.0 (requirements.txt)']),
    ('short digest',
     '    image: rayproject/ray:2.60.0-py311',
     '    image: rayproject/ray:2.60.0-py311\n    imageDigest: sha256:abc',
     ["ray-cluster:ray.imageDigest: 'sha256:abc' is not an image digest: sha256: and 64 lowercase hex digits, as `docker images --digests` shows"]),
    ('drain grace zero',
     '    drainGraceMinutes: 10',
     '    drainGraceMinutes: 0',
     ['ray-cluster:ray.drainGraceMinutes: must be greater than 0']),
    ('drain grace in words',
     '    drainGraceMinutes: 10',
     '    drainGraceMinutes: ten',
     ["ray-cluster:ray.drainGraceMinutes: must be a whole number (got 'ten')"]),
    ('object store as a percentage',
     '    drainGraceMinutes: 10',
     '    drainGraceMinutes: 10\n    objectStoreFraction: 30',
     ["ray-cluster:ray.objectStoreFraction: 30 is too much: at most 0.8 (a fraction of the VM's memory, like 0.3; Ray and the tasks need the rest)"]),
    ('vcpu beyond vSphere',
     '      vcpu: 32',
     '      vcpu: 100000',
     ['ray-cluster:tiers.always-on.vcpu: 100000 is too much: at most 768 (vSphere 8 gives a VM at most 768 vCPUs)']),
    ('memory beyond vSphere',
     '      memoryGb: 350',
     '      memoryGb: 30000',
     ['ray-cluster:tiers.heavy-compute.memoryGb: 30000 is too much: at most 24560 (vSphere 8 gives a VM at most 24560 GB of memory)']),
    ('disk zero',
     '      diskGb: 400',
     '      diskGb: 0',
     ['ray-cluster:tiers.always-on.diskGb: must be greater than 0']),
    ('key case typo',
     '      memoryGb: 350',
     '      memoryGB: 350',
     ['ray-cluster:tiers.heavy-compute.memoryGB: unknown key: did you mean memoryGb?']),
    ('unknown schedule word',
     '      schedule: always',
     '      schedule: nightly',
     ['ray-cluster:tiers.always-on.schedule: \'nightly\' is not a schedule: write always, or a daily window like {start: "18:00", end: "06:00", timezone: Europe/Berlin}']),
    ('override yes',
     '      schedule: always',
     '      schedule: always\n      override: yes',
     ['ray-cluster:tiers.always-on.override: \'yes\' is not an override: write "on" or "off" (quoted), or leave override out']),
    ('override true',
     '      schedule: always',
     '      schedule: always\n      override: true',
     ['ray-cluster:tiers.always-on.override: true is a YAML boolean (true/false; some YAML readers also take yes/no/on/off unquoted as booleans): write the word in quotes, like "on"']),
    ('window start in words',
     '        start: "18:00"',
     '        start: "6pm"',
     ["ray-cluster:tiers.heavy-compute.schedule.start: '6pm' must be a 24-hour HH:MM time like 18:00"]),
    ('timezone typo',
     '        timezone: Europe/Berlin',
     '        timezone: Europe/Berln',
     ["ray-cluster:tiers.heavy-compute.schedule.timezone: unknown timezone 'Europe/Berln': use an IANA name like Europe/Berlin"]),
    ('empty window',
     '        end: "06:00"',
     '        end: "18:00"',
     ['ray-cluster:tiers.heavy-compute.schedule.end: must differ from start (use schedule: always for 24/7)']),
    ('drain lead longer than the window',
     '        drainLeadMinutes: 15',
     '        drainLeadMinutes: 720',
     ['ray-cluster:tiers.heavy-compute.schedule.drainLeadMinutes: must be shorter than the window (12:00:00)']),
    ('window end in the DST gap',
     '        end: "06:00"',
     '        end: "02:30"',
     ['ray-cluster:tiers.heavy-compute.schedule.end: 02:30 does not exist on 2026-03-29 in Europe/Berlin (daylight saving): pick another time']),
    ('node name with underscores',
     '        - name: ray-hc-2',
     '        - name: ray_hc_2',
     ["ray-cluster:tiers.heavy-compute.nodes[ray_hc_2].name: 'ray_hc_2' is not a host name: use 1 to 63 lowercase letters, digits and dashes, starting and ending with a letter or digit (like ray-hc-1)"]),
    ('node ip typo',
     '          ip: 10.20.0.22',
     '          ip: 10.20.0.322',
     ["ray-cluster:tiers.heavy-compute.nodes[ray-hc-2].ip: '10.20.0.322' is not an IPv4 address like 10.20.0.11"]),
    ('duplicate ip',
     '          ip: 10.20.0.23',
     '          ip: 10.20.0.22',
     ['ray-cluster:tiers.heavy-compute.nodes[ray-hc-3].ip: duplicate IP 10.20.0.22 (also tiers.heavy-compute.nodes[ray-hc-2])']),
    ('ip outside the network',
     '          ip: 10.20.0.23',
     '          ip: 10.21.0.23',
     ['ray-cluster:tiers.heavy-compute.nodes[ray-hc-3].ip: 10.21.0.23 is outside network.cidr 10.20.0.0/24']),
    ('ip is the gateway',
     '          ip: 10.20.0.13',
     '          ip: 10.20.0.1',
     ['ray-cluster:tiers.always-on.nodes[ray-ao-3].ip: 10.20.0.1 is the gateway']),
    ('duplicate node name',
     '        - name: ray-hc-3',
     '        - name: ray-hc-2',
     ["ray-cluster:tiers.heavy-compute.nodes[ray-hc-2].name: duplicate node name 'ray-hc-2' (also in tiers.heavy-compute)"]),
    ('no head',
     '          head: true',
     '          head: false',
     ['ray-cluster:tiers: exactly one node must have head: true, found 0']),
    ('section without the namespace',
     '  ray-cluster:monitoring:',
     '  monitoring:',
     ['monitoring: a stack key without a namespace is ignored: write ray-cluster:monitoring']),
    ('namespace typo',
     '  ray-cluster:ray:',
     '  ray_cluster:ray:',
     ["ray_cluster:ray: unknown namespace 'ray_cluster': did you mean ray-cluster:ray?", 'ray-cluster:ray: required, but not set']),
    ('provider key typo',
     '  vsphere:user: svc-ray-cluster@vsphere.local',
     '  vsphere:username: svc-ray-cluster@vsphere.local',
     ['vsphere:username is not a setting of the vSphere provider (it has allowUnverifiedSsl, apiTimeout, clientDebug, clientDebugPath, clientDebugPathRun, password, persistSession, restSessionPath, user, vcenterServer, vimKeepAlive, vimSessionPath, vsphereServer); where VMs go is ray-cluster:vsphere, like ray-cluster:vsphere.datacenter']),
    ('placement key typo',
     '    computeCluster: compute-01',
     '    computeClster: compute-01',
     ['ray-cluster:vsphere.computeClster: unknown key: did you mean computeCluster?']),
    ('retention negative',
     '    retentionDays: 30',
     '    retentionDays: -1',
     ['ray-cluster:monitoring.retentionDays: must be greater than 0']),
    ('monitoring on a night node',
     '    retentionDays: 30',
     '    retentionDays: 30\n    host: ray-hc-1',
     ["ray-cluster:monitoring.host: 'ray-hc-1' must be in an always-on tier, or monitoring vanishes with its tier"]),
    ('data disk in megabytes',
     '  ray-cluster:dataDiskGb: 100',
     '  ray-cluster:dataDiskGb: 100000',
     ['ray-cluster:dataDiskGb: 100000 GB is outside 10..2048: the data disk keeps Prometheus, Grafana and Redis data (at least 10 GB) on an MBR partition (at most 2 TiB)']),
    ('data disk with a unit',
     '  ray-cluster:dataDiskGb: 100',
     '  ray-cluster:dataDiskGb: 100GB',
     ["ray-cluster:dataDiskGb: must be a whole number (got '100GB')"]),
    ('data disk key case',
     '  ray-cluster:dataDiskGb: 100',
     '  ray-cluster:dataDiskGB: 100',
     ['ray-cluster:dataDiskGB: unknown key: did you mean dataDiskGb?']),
    ('instant without offset',
     '  ray-cluster:monitoring:',
     '  ray-cluster:at: "2026-11-22T22:00:00"\n  ray-cluster:monitoring:',
     ["ray-cluster:at: '2026-11-22T22:00:00' has no UTC offset: add one, like 2026-11-22T22:00:00+01:00 (or Z for UTC)"]),
    ('extra port open to the world',
     '      schedule: always',
     '      schedule: always\n      extraPorts: [{port: 8000, from: [0.0.0.0/0]}]',
     ['ray-cluster:tiers.always-on.extraPorts[0].from[0]: 0.0.0.0/0 would open the port to the world: name the networks (or cluster / admins)']),
    ("extra port on the dashboard's",
     '      schedule: always',
     '      schedule: always\n      extraPorts: [{port: 8265, from: [admins]}]',
     ["ray-cluster:tiers.always-on.extraPorts[0]: 8265 is Ray's dashboard port, which the firewall already opens to whom it belongs: pick another port"]),
    ('ray flag that moves a pinned port',
     '      schedule: always',
     '      schedule: always\n      rayStartArgs: [--node-manager-port=7000]',
     ['ray-cluster:tiers.always-on.rayStartArgs: --node-manager-port is set by the program (ports, addresses, sizes, labels and auth are pinned): leave it out']),
    ('ray env that turns auth off',
     '      schedule: always',
     '      schedule: always\n      rayEnv: {RAY_AUTH_MODE: disabled}',
     ['ray-cluster:tiers.always-on.rayEnv: RAY_AUTH_MODE is set by the program (auth, TLS, addresses and ports are pinned): leave it out']),
    ('proxy without scheme',
     '    retentionDays: 30',
     '    retentionDays: 30\n  ray-cluster:proxy: {http: proxy.dc1:3128}',
     ["ray-cluster:proxy.http: 'proxy.dc1:3128' is not a proxy URL: write http://host:port, like http://proxy.dc1.example.internal:3128"]),
    ('registry with a scheme',
     '    retentionDays: 30',
     '    retentionDays: 30\n  ray-cluster:registry: {mirror: https://harbor.dc1/hub}',
     ["ray-cluster:registry.mirror: 'https://harbor.dc1/hub': write the registry without a scheme, like harbor.dc1.example.internal/hub"]),]


def typo_stack(tmp_path: Path, line: str, replacement: str) -> Path:
    """A project directory whose Pulumi.prod.yaml differs from prod in that one line."""
    assert PROD.count(line + "\n") == 1, f"not one line of Pulumi.prod.yaml: {line!r}"
    assert replacement.count("\n") <= 1, f"a typo changes one line (or adds one next to it): {replacement!r}"
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.prod.yaml").write_text(PROD.replace(line + "\n", replacement + "\n"))
    return project


@pytest.mark.parametrize("line,replacement,expected", [case[1:] for case in TYPOS], ids=[case[0] for case in TYPOS])
def test_a_typo_gets_its_exact_message_and_exit_2(tmp_path, capsys, line, replacement, expected):
    project = typo_stack(tmp_path, line, replacement)
    code = render.main(["--stack", "prod", "--project-dir", str(project), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    header, *problems = err.splitlines()
    assert (code, out) == (CONFIG_ERROR_EXIT, "")
    assert re.fullmatch(rf"invalid \S.* \({len(expected)} problems?\):", header), header
    assert problems == [f"  {problem}" for problem in expected]
    assert not re.search(r"nodes\[\d+\]", err), "a node named by its index"
    assert not (tmp_path / "out").exists()


def test_an_unknown_stack_lists_the_stacks(tmp_path, capsys):
    code = render.main(["--stack", "prd", "--out", str(tmp_path / "out")])
    assert code == CONFIG_ERROR_EXIT
    assert capsys.readouterr().err.splitlines()[1] == (
        f"  no stack 'prd': {ROOT / 'Pulumi.prd.yaml'} does not exist; stacks here: prod"
    )


@pytest.mark.parametrize("tool", [
    ["scripts.render", "--out", "{out}", "--project-dir", "{project}"],
    ["scripts.rehearse", "--project-dir", "{project}"],
    ["scripts.scheduler", "plan", "--work-dir", "{project}"],
], ids=lambda argv: argv[0])
def test_every_tool_says_it_the_same_way_without_a_traceback(tmp_path, tool):
    project = typo_stack(tmp_path, "    cidr: 10.20.0.0/24", "\tcidr: 10.20.0.0/24")
    argv = [arg.format(out=tmp_path / "out", project=project) for arg in tool] + ["--stack", "prod"]
    result = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == CONFIG_ERROR_EXIT, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "  Pulumi.prod.yaml, line 17, column 1: found character '\\t' that cannot start any token: "
        "indent with spaces, YAML does not allow tabs"
    ) in result.stderr.splitlines()


def test_unquoted_words_mean_what_they_mean_to_pulumi(tmp_path):
    # go-yaml v3, which the Pulumi CLI reads stack files with, keeps `on` and 18:00 as text.
    from components.model.stack import read_stack_file

    project = typo_stack(tmp_path, '        start: "18:00"', "        start: 18:00")
    stack_file = project / "Pulumi.prod.yaml"
    stack_file.write_text(stack_file.read_text().replace("      vcpu: 80\n", "      vcpu: 80\n      override: on\n"))
    tier = read_stack_file("prod", project).tiers["heavy-compute"]
    assert (tier.override, f"{tier.schedule.start:%H:%M}") == ("on", "18:00")


def test_the_program_ends_with_a_run_error_before_any_resource(tmp_path, monkeypatch):
    # `pulumi up` prints a RunError's message alone; any other exception with its traceback
    # (pulumi/pulumi sdk/python/cmd/pulumi-language-python-exec: `except pulumi.RunError`).
    import pulumi

    from scripts.ops import program_mocks
    from tests.conftest import prod_raw

    from pulumi.runtime import settings

    registered, register = [], program_mocks.RecordingMonitor.RegisterResource

    def recording(self, request):
        if self is settings.SETTINGS.monitor:  # this run's: a previous failed run may still be finishing its own
            registered.append(request.type)
        return register(self, request)

    monkeypatch.setattr(program_mocks.RecordingMonitor, "RegisterResource", recording)
    raw = prod_raw()
    raw["tiers"]["heavy-compute"]["nodes"][1]["ip"] = "10.20.0.322"
    with pytest.raises(pulumi.RunError) as caught:
        program_mocks.run_program(raw, tmp_path)
    assert str(caught.value).splitlines()[1:] == [
        "  ray-cluster:tiers.heavy-compute.nodes[ray-hc-2].ip: '10.20.0.322' is not an IPv4 address like 10.20.0.11"
    ]
    assert [t for t in registered if t != "pulumi:pulumi:Stack"] == []


@pytest.mark.parametrize("tool", [["scripts.render", "--stack", "prod", "--out", "unused"], ["scripts.scheduler", "plan"]],
                         ids=lambda argv: argv[0])
def test_a_naive_instant_is_worded_alike_by_every_tool(tool):
    result = subprocess.run([sys.executable, "-m", *tool, "--at", "2026-11-22T22:00:00"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == CONFIG_ERROR_EXIT
    assert result.stderr.splitlines()[-1].endswith(
        "'2026-11-22T22:00:00' has no UTC offset: add one, like 2026-11-22T22:00:00+01:00 (or Z for UTC)"
    )
