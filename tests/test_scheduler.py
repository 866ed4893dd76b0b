"""The scheduler's orchestration, against a stand-in for the Automation API stack,
and the timer examples against the prod schedule."""
import datetime as dt
import fcntl
import functools
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from pulumi import automation as auto

from components.model.stack import AT_ENVIRONMENT
from components.render import drain
from scripts import scheduler
from scripts.ops import night_report, scheduling
from scripts.ops.ray_state import RayNodeView
from components.render.drain_over_ssh import drain_over_ssh
from conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
EVENING = "2026-06-10T18:00:00+02:00"
LATER_EVENING = "2026-06-10T18:05:00+02:00"
MORNING = "2026-06-11T05:45:00+02:00"
NOON = "2026-06-10T12:00:00+02:00"
RESOURCES_PER_NODE = 7  # VM, host key, firewall, provider, image, container, drain
# The program's secret outputs, as the Automation API returns them (it reads with --show-secrets).
SECRET_OUTPUTS = {"rayToken": "tok-3f9a1c-plaintext", "grafanaAdminPassword": "pw-77e2b0-plaintext"}


def program_outputs(cfg, at: dt.datetime) -> dict:
    """What the Pulumi program exports at `at` (the stack outputs the scheduler reads)."""
    return {
        "at": at.isoformat(),
        "liveTiers": cfg.live_tiers(at),
        "nodes": [{"name": p.node.name, "tier": p.tier_name, "ip": str(p.node.ip)} for p in cfg.live_nodes(at)],
        "dashboardUrl": "http://head.invalid:8265",
        "rayClientAddress": "ray://head.invalid:10001",
        "hostKeys": {p.node.name: f"ssh-ed25519 AAAAHostKeyOf{p.node.name.replace('-', '')}" for p in cfg.live_nodes(at)},
    }


@functools.cache
def cluster_key() -> str:
    """A real key: the scheduler hands it to a real ssh-agent."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        return path.read_text()


class Result:
    def __init__(self, **fields):
        self.__dict__.update(fields)


class StandInStack:
    """Records every call in order and behaves like the program: the pinned `at` decides."""

    def __init__(
        self, cfg, deployed_at: str | None = None, locked: dict[str, int] | None = None, drain_alarm: str = "", ssh_key: str = "",
        drain_reports: dict[str, dict] | None = None,
    ):
        self.drain_reports = drain_reports or {}  # node -> what its drain program reports
        self.cfg, self.ssh_key = cfg, ssh_key or cluster_key()
        self.environments: list[dict[str, str]] = []  # what each engine operation saw
        self.drain_alarm = drain_alarm  # what a drain prints when it cannot finish
        self.calls: list[tuple] = []
        self.config: dict[str, str] = {}
        self.deployed = program_outputs(cfg, dt.datetime.fromisoformat(deployed_at)) if deployed_at else {}
        self.locked = dict(locked or {})  # operation -> how many times it finds the stack locked

    def _engine(self, operation: str, on_output) -> dict:
        self.calls.append((operation,))
        if self.locked.get(operation, 0) > 0:
            self.locked[operation] -= 1
            raise auto.ConcurrentUpdateError("error: the stack is currently locked by 1 lock(s)")
        assert AT_ENVIRONMENT in os.environ, "the program would read the clock: the instant must be handed over first"
        listed = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True)  # the agent, as the providers' ssh sees it
        self.environments.append({**os.environ, "agent keys": listed.stdout if listed.returncode == 0 else ""})
        on_output(f"{operation} (prod)")
        wanted = program_outputs(self.cfg, dt.datetime.fromisoformat(os.environ[AT_ENVIRONMENT]))
        have = {n["name"] for n in self.deployed.get("nodes", [])}
        want = {n["name"] for n in wanted["nodes"]}
        summary = {
            "same": len(have & want) * RESOURCES_PER_NODE,
            "create": len(want - have) * RESOURCES_PER_NODE,
            "delete": len(have - want) * RESOURCES_PER_NODE,
        }
        self.wanted = wanted
        if operation == "up" and self.drain_alarm:
            for name in sorted(have - want):  # as pulumi-command relays the remote stderr
                on_output(f"    command:remote:Command ({name}-drain): {drain.ALARM_PREFIX} {name}: {self.drain_alarm}")
        if operation == "up":
            for name in sorted((have - want) & set(self.drain_reports)):  # as pulumi-command relays the drain's output
                report = json.dumps({"node": name, **self.drain_reports[name]})
                on_output(f"    command:local:Command ({name}-drain-on-delete): {night_report.DRAIN_REPORT_PREFIX} {report}")
        return {op: n for op, n in summary.items() if n}

    def get_config(self, key):
        assert key == "ray-cluster:sshPrivateKey"
        return auto.ConfigValue(value=self.ssh_key, secret=True)

    def outputs(self):
        self.calls.append(("outputs",))
        plain = {key: auto.OutputValue(value, secret=False) for key, value in self.deployed.items()}
        secret = {key: auto.OutputValue(value, secret=True) for key, value in SECRET_OUTPUTS.items()}
        return {**plain, **secret} if self.deployed else {}

    def refresh(self, on_output):
        self._engine("refresh", on_output)
        return Result(summary=Result(resource_changes={}))

    def preview(self, refresh, on_output):
        assert refresh, "a preview must see refreshed state"
        return Result(change_summary=self._engine("preview", on_output))

    def up(self, on_output):
        changes = self._engine("up", on_output)
        self.deployed = self.wanted
        return Result(summary=Result(resource_changes=changes))

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


class FakeTime:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeRay:
    """Ray as the probe sees it: the stack's nodes join after `joins_after` probes."""

    def __init__(self, stack: StandInStack, joins_after: int = 1, never: tuple[str, ...] = ()):
        self.stack, self.joins_after, self.never = stack, joins_after, never
        self.probes: list[str] = []

    def __call__(self, address: str) -> list[RayNodeView]:
        self.probes.append(address)
        if len(self.probes) < self.joins_after:
            return []
        return [
            RayNodeView(node_id=f"id-{n['name']}", name=n["name"], ip=n["ip"], tier=n["tier"], is_head=n["name"] == "ray-ao-1")
            for n in self.stack.deployed["nodes"]
            if n["name"] not in self.never
        ]


class Harness:
    def __init__(self, stack: StandInStack, tmp_path: Path, ray: FakeRay | None = None):
        self.stack, self.time = stack, FakeTime()
        self.ray = ray or FakeRay(stack)
        self.lock_file = tmp_path / "scheduler.lock"
        self.opened = 0
        self.ran: list[list[str]] = []
        self.log_stream = io.StringIO()
        self.checkout_problem: str | None = None  # what the git check finds (tests of it use real git)
        self.captured: list[list[str]] = []
        self.smoke_ok = True  # what the smoke test on a new tier finds
        self.archived_lines = "42"  # what the monitoring host counts for a node's night

    def capture(self, argv):
        self.captured.append(argv)
        if "scripts.smoke_test" in argv:
            tiers = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--tier"]
            return (0 if self.smoke_ok else 1), json.dumps([{"tier": t, "ok": self.smoke_ok} for t in tiers])
        return 0, self.archived_lines + "\n"

    def open_stack(self, name, work_dir):
        assert (name, work_dir) == ("prod", ROOT)
        self.opened += 1
        return self.stack

    def run_command(self, argv):
        self.ran.append(argv)
        return 0

    def __call__(self, *argv: str) -> tuple[int, dict]:
        out = io.StringIO()
        tools = scheduling.Tools(
            open_stack=self.open_stack,
            probe=self.ray,
            run=self.run_command,
            sleep=self.time.sleep,
            clock=self.time.clock,
            log=scheduling.JsonLog(self.log_stream),
            checkout=lambda work_dir, branch: self.checkout_problem,
            capture=self.capture,
        )
        code = scheduler.main([*argv, "--json", "--work-dir", str(ROOT), "--lock-file", str(self.lock_file)], tools, out)
        return code, (json.loads(out.getvalue()) if out.getvalue() else {})

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log_stream.getvalue().splitlines()]

    def event_names(self) -> list[str]:
        return [e["event"] for e in self.events()]


@pytest.fixture
def noon_stack(prod_config):
    return StandInStack(prod_config, deployed_at=NOON)


class TestApply:
    def test_hands_the_instant_and_the_key_to_refresh_and_up_and_writes_no_file(self, noon_stack, tmp_path):
        stack_file = ROOT / "Pulumi.prod.yaml"
        before = stack_file.read_text()
        run = Harness(noon_stack, tmp_path)
        code, report = run("apply", "--at", EVENING)
        assert code == scheduling.OK
        assert noon_stack.names() == ["outputs", "refresh", "up", "outputs"]
        for seen in noon_stack.environments:
            assert seen[AT_ENVIRONMENT] == EVENING
            assert "(ED25519)" in seen["agent keys"]  # the cluster key, in an agent
        # Afterwards: no instant left in this process, no agent, the stack file as it was.
        assert AT_ENVIRONMENT not in os.environ
        assert not Path(noon_stack.environments[0]["SSH_AUTH_SOCK"]).exists()
        assert stack_file.read_text() == before
        assert report["difference"]["bringUp"] == ["heavy-compute"]
        assert report["changes"] == {"create": 3 * RESOURCES_PER_NODE}
        assert report["nodes"]["heavy-compute"] == {"joined": ["ray-hc-1", "ray-hc-2", "ray-hc-3"], "missing": []}
        assert noon_stack.deployed["liveTiers"] == ["always-on", "heavy-compute"]

    def test_second_run_with_nothing_to_do_changes_nothing(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        assert run("apply", "--at", EVENING)[0] == scheduling.OK
        deployed, probes = noon_stack.deployed, len(run.ray.probes)

        code, report = run("apply", "--at", LATER_EVENING)
        assert code == scheduling.OK
        assert report["changes"] == {}
        assert report["difference"] == {"bringUp": [], "remove": [], "addNodes": [], "removeNodes": []}
        assert "no_changes" in run.event_names()
        assert noon_stack.names().count("up") == 2  # Pulumi decides; the resources stay as they are
        assert {**noon_stack.deployed, "at": None} == {**deployed, "at": None}
        assert noon_stack.deployed["at"] == LATER_EVENING  # the output records each run's instant
        assert len(run.ray.probes) == probes  # nothing brought up, nothing to wait for

    def test_drain_start_removes_the_night_tier(self, prod_config, tmp_path):
        stack = StandInStack(prod_config, deployed_at=EVENING)
        code, report = Harness(stack, tmp_path)("apply", "--at", MORNING)
        assert code == scheduling.OK
        assert report["difference"]["remove"] == ["heavy-compute"]
        assert report["changes"] == {"delete": 3 * RESOURCES_PER_NODE}
        assert stack.deployed["liveTiers"] == ["always-on"]

    def test_dry_run_previews_and_never_ups(self, noon_stack, tmp_path):
        code, report = Harness(noon_stack, tmp_path)("apply", "--at", EVENING, "--dry-run")
        assert code == scheduling.OK
        assert noon_stack.names() == ["outputs", "preview"]
        assert report["changes"] == {"create": 3 * RESOURCES_PER_NODE}
        assert noon_stack.deployed["liveTiers"] == ["always-on"]

    def test_without_at_pins_now_with_an_offset(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        assert run("apply")[0] == scheduling.OK
        pinned = dt.datetime.fromisoformat(noon_stack.environments[0][AT_ENVIRONMENT])
        assert pinned.utcoffset() is not None
        assert before <= pinned <= dt.datetime.now(dt.timezone.utc)

    def test_waits_for_new_nodes_to_join(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        run.ray.joins_after = 4
        code, report = run("apply", "--at", EVENING)
        assert code == scheduling.OK
        assert run.time.sleeps == [scheduling.JOIN_POLL_S] * 3
        assert run.ray.probes == ["http://head.invalid:8265"] * 4
        assert report["nodes"]["heavy-compute"]["missing"] == []

    def test_nodes_that_never_join_end_the_bounded_wait(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        run.ray.never = ("ray-hc-2",)
        code, report = run("apply", "--at", EVENING, "--join-timeout", "60")
        assert code == scheduling.NOT_JOINED
        assert report["nodes"]["heavy-compute"] == {"joined": ["ray-hc-1", "ray-hc-3"], "missing": ["ray-hc-2"]}
        assert sum(run.time.sleeps) == 60
        not_joined = [e for e in run.events() if e["event"] == "not_joined"]
        assert not_joined[0]["missing"] == {"heavy-compute": ["ray-hc-2"]}

    def test_a_failed_up_exits_1_and_leaves_no_instant_behind(self, noon_stack, tmp_path, monkeypatch):
        def broken_up(on_output):
            noon_stack.calls.append(("up",))
            raise auto.CommandError("error: vSphere said no")

        monkeypatch.setattr(noon_stack, "up", broken_up)
        run = Harness(noon_stack, tmp_path)
        assert run("apply", "--at", EVENING)[0] == scheduling.FAILED
        assert AT_ENVIRONMENT not in os.environ
        failed = [e for e in run.events() if e["event"] == "pulumi_failed"]
        assert failed[0]["operation"] == "up" and "vSphere said no" in failed[0]["error"]


    def test_a_drain_that_could_not_finish_is_reported_loudly(self, prod_config, tmp_path):
        alarm = "the deadline (900s) passed with work still running: ['ray::train']; removing it anyway"
        stack = StandInStack(prod_config, deployed_at=EVENING, drain_alarm=alarm)
        run = Harness(stack, tmp_path)
        code, report = run("apply", "--at", MORNING)
        assert code == scheduling.DRAIN_INCOMPLETE
        assert report["drainAlarms"] == [f"{drain.ALARM_PREFIX} {name}: {alarm}" for name in ("ray-hc-1", "ray-hc-2", "ray-hc-3")]
        errors = [e for e in run.events() if e["level"] == "error"]
        assert [e["event"] for e in errors] == ["drain_incomplete"] * 3 + ["morning"]  # and the morning report says so per node
        assert stack.deployed["liveTiers"] == ["always-on"]  # the removal went ahead, as the hardware will

    def test_a_clean_drain_raises_no_alarm(self, prod_config, tmp_path):
        code, report = Harness(StandInStack(prod_config, deployed_at=EVENING), tmp_path)("apply", "--at", MORNING)
        assert code == scheduling.OK and "drainAlarms" not in report


class TestLocking:
    def test_an_overlapping_run_is_refused_before_touching_the_stack(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        with open(run.lock_file, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run in progress
            code, report = run("apply", "--at", EVENING)
        assert code == scheduling.OVERLAP
        assert (run.opened, noon_stack.calls) == (0, [])
        assert run.event_names() == ["overlap"]
        # Once the other run is gone, the lock is free again.
        assert run("apply", "--at", EVENING)[0] == scheduling.OK

    def test_a_manual_drain_is_refused_while_a_run_holds_the_lock(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        with open(run.lock_file, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert run("drain", "ray-hc-2")[0] == scheduling.OVERLAP
        assert run.ran == []

    def test_a_locked_stack_is_retried_with_backoff(self, prod_config, tmp_path):
        stack = StandInStack(prod_config, deployed_at=NOON, locked={"refresh": 1, "up": 2})
        run = Harness(stack, tmp_path)
        code, report = run("apply", "--at", EVENING)
        assert code == scheduling.OK
        assert stack.names() == ["outputs", "refresh", "refresh", "up", "up", "up", "outputs"]
        first = scheduling.LOCK_FIRST_DELAY_S
        assert run.time.sleeps[:3] == [first, first, 2 * first]
        assert report["changes"] == {"create": 3 * RESOURCES_PER_NODE}

    def test_a_stack_that_stays_locked_gives_up(self, prod_config, tmp_path):
        stack = StandInStack(prod_config, deployed_at=NOON, locked={"up": 100})
        run = Harness(stack, tmp_path)
        code, _ = run("apply", "--at", EVENING)
        assert code == scheduling.STACK_LOCKED
        assert stack.names().count("up") == scheduling.LOCK_ATTEMPTS
        first = scheduling.LOCK_FIRST_DELAY_S
        assert run.time.sleeps == [first * 2**i for i in range(scheduling.LOCK_ATTEMPTS - 1)]
        assert AT_ENVIRONMENT not in os.environ
        assert run.event_names()[-1] == "stack_locked"


class TestPlanAndStatus:
    def test_plan_shows_desired_deployed_and_changes(self, noon_stack, tmp_path):
        code, report = Harness(noon_stack, tmp_path)("plan", "--at", EVENING)
        assert code == scheduling.OK
        assert noon_stack.names() == ["outputs", "preview"]
        assert report["desired"]["liveTiers"] == ["always-on", "heavy-compute"]
        assert report["desired"]["nextTransition"] == "2026-06-11T05:45:00+02:00"
        assert report["deployed"]["liveTiers"] == ["always-on"]
        assert report["difference"]["addNodes"] == ["ray-hc-1", "ray-hc-2", "ray-hc-3"]
        assert report["changes"] == {"create": 3 * RESOURCES_PER_NODE}

    def test_plan_without_pulumi_still_answers_from_the_schedule(self, tmp_path):
        # The real command line: no Pulumi CLI on this machine, so no stack.
        result = subprocess.run(
            [sys.executable, "-m", "scripts.scheduler", "plan", "--json", "--at", NOON, "--lock-file", str(tmp_path / "lock")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == scheduling.OK, result.stderr
        report = json.loads(result.stdout)
        assert report["desired"]["liveTiers"] == ["always-on"]
        assert report["desired"]["tiers"]["heavy-compute"]["nextTransition"] == "2026-06-10T17:30:00+02:00"  # the bring-up for 18:00
        assert report["deployed"] is None
        logs = [json.loads(line) for line in result.stderr.splitlines()]
        assert {"ts", "level", "event"} <= set(logs[0])
        assert logs[0]["event"] == "stack_unavailable" and logs[0]["level"] == "warning"

    def test_status_reports_nodes_per_tier(self, prod_config, tmp_path):
        stack = StandInStack(prod_config, deployed_at=EVENING)
        ray = FakeRay(stack, never=("ray-hc-3",))
        code, report = Harness(stack, tmp_path, ray)("status")
        assert code == scheduling.NOT_JOINED
        assert report["nodes"]["always-on"] == {"joined": ["ray-ao-1", "ray-ao-2", "ray-ao-3"], "missing": []}
        assert report["nodes"]["heavy-compute"] == {"joined": ["ray-hc-1", "ray-hc-2"], "missing": ["ray-hc-3"]}
        assert report["unexpected"] == []

    def test_status_probes_the_https_dashboard_trusting_the_ca_output(self, prod_config, tmp_path, monkeypatch):
        monkeypatch.delenv("RAY_TLS_CA_CERT", raising=False)
        stack = StandInStack(prod_config, deployed_at=EVENING)
        ca_pem = "-----BEGIN CERTIFICATE-----\nthe cluster CA\n-----END CERTIFICATE-----\n"
        stack.deployed |= {"dashboardUrl": "https://head.invalid:8443", "rayTlsCaCert": ca_pem}
        ray, trusted = FakeRay(stack), []

        def probe(address):
            trusted.append(Path(os.environ["RAY_TLS_CA_CERT"]).read_text())  # what the probe verifies HTTPS with
            return ray(address)

        code, _ = Harness(stack, tmp_path, probe)("status")
        assert code == scheduling.OK and trusted == [ca_pem] and ray.probes == ["https://head.invalid:8443"]
        assert "RAY_TLS_CA_CERT" not in os.environ  # a file for the probe only

    def test_status_names_nodes_the_stack_does_not_declare(self, prod_config, tmp_path):
        stack = StandInStack(prod_config, deployed_at=NOON)
        leftover = RayNodeView(node_id="x", name="ray-hc-1", ip="10.20.0.21", tier="heavy-compute", is_head=False)
        ray = FakeRay(stack)
        code, report = Harness(stack, tmp_path, lambda address: ray(address) + [leftover])("status")
        assert code == scheduling.OK
        assert report["unexpected"] == ["ray-hc-1"]


class TestDrain:
    def test_runs_the_drain_on_delete_script_with_the_deployed_host_key(self, prod_config, noon_stack, tmp_path):
        noon_stack.deployed = program_outputs(prod_config, dt.datetime.fromisoformat(EVENING))
        run = Harness(noon_stack, tmp_path)
        code, report = run("drain", "ray-hc-2")
        assert code == scheduling.OK
        assert report == {"drained": "ray-hc-2", "tier": "heavy-compute"}
        [argv] = run.ran
        placed = prod_config.placed("ray-hc-2")
        host_key = noon_stack.deployed["hostKeys"]["ray-hc-2"]
        assert argv == ["sh", "-c", drain_over_ssh("rayops", "ray-hc-2", "10.20.0.22", host_key, drain.drain_command(placed), unreachable_is_fatal=True)]
        assert "drained_until_next_up" in run.event_names()

    @pytest.mark.parametrize("node, event", [("ray-ao-1", "refused_head"), ("ray-xx-9", "unknown_node")])
    def test_refuses_the_head_and_unknown_nodes(self, noon_stack, tmp_path, node, event):
        run = Harness(noon_stack, tmp_path)
        assert run("drain", node)[0] == scheduling.USAGE
        assert run.ran == [] and run.event_names() == [event]

    def test_a_node_the_stack_has_not_deployed_is_not_contacted(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)  # noon: the heavy tier is not deployed
        assert run("drain", "ray-hc-1")[0] == scheduling.FAILED
        assert run.ran == [] and run.event_names() == ["not_deployed"]


class TestSecrets:
    @pytest.mark.parametrize("argv", [("plan", "--at", EVENING), ("apply", "--at", EVENING), ("status",)])
    def test_no_secret_output_reaches_the_report_or_the_log(self, noon_stack, tmp_path, argv):
        run = Harness(noon_stack, tmp_path)
        code, report = run(*argv)
        assert code == scheduling.OK
        deployed = report["deployed"]
        assert deployed["rayToken"] == deployed["grafanaAdminPassword"] == scheduling.SECRET_MASK
        assert deployed["dashboardUrl"] == "http://head.invalid:8265"  # plain outputs stay readable
        written = json.dumps(report) + run.log_stream.getvalue()
        assert not [value for value in SECRET_OUTPUTS.values() if value in written]


class TestTheNightsEdges:
    """The evening's smoke test on the new tier, and the morning's report per node."""

    def test_after_the_bring_up_the_new_tier_is_smoke_tested_and_reported(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        code, report = run("apply", "--at", EVENING)
        assert code == scheduling.OK
        [smoke] = [argv for argv in run.captured if "scripts.smoke_test" in argv]
        assert smoke[smoke.index("--address") + 1] == "ray://head.invalid:10001"
        assert [smoke[i + 1] for i, arg in enumerate(smoke) if arg == "--tier"] == ["heavy-compute"]  # the new tier only
        assert report["smokeTest"] == [{"tier": "heavy-compute", "ok": True}]

    def test_a_failed_smoke_test_fails_the_evening(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        run.smoke_ok = False
        code, report = run("apply", "--at", EVENING)
        assert code == scheduling.SMOKE_FAILED
        assert report["smokeTest"] == [{"tier": "heavy-compute", "ok": False}]
        assert any(e["event"] == "smoke_test" and e["level"] == "error" for e in run.events())

    def test_no_smoke_test_when_nothing_was_brought_up(self, prod_config, tmp_path):
        run = Harness(StandInStack(prod_config, deployed_at=EVENING), tmp_path)
        code, report = run("apply", "--at", MORNING)
        assert code == scheduling.OK and "smokeTest" not in report
        assert not [argv for argv in run.captured if "scripts.smoke_test" in argv]

    def test_the_morning_report_says_per_node_what_its_drain_saw_and_what_was_archived(self, prod_config, tmp_path):
        drained = {"drained": True, "tasksFinished": 4, "tasksCut": 0, "objectsKept": {"count": 2, "bytes": 2048}, "objectsLost": {"count": 0, "bytes": 0}}
        lost = {"drained": False, "tasksFinished": 1, "tasksCut": 2, "objectsKept": {"count": 0, "bytes": 0},
                "objectsLost": {"count": 1, "bytes": 20 * 2**20, "owners": {"02000000": 1}}}
        stack = StandInStack(prod_config, deployed_at=EVENING, drain_reports={"ray-hc-1": drained, "ray-hc-2": lost})
        run = Harness(stack, tmp_path)
        code, report = run("apply", "--at", MORNING)
        assert code == scheduling.OK
        morning = report["morning"]
        assert morning["ray-hc-1"] == {**drained, "logsArchived": 42}
        assert morning["ray-hc-2"] == {**lost, "logsArchived": 42}
        assert morning["ray-hc-3"]["drained"] is False and "no drain report" in morning["ray-hc-3"]["error"]
        # The log count ran on the monitoring host, its host key pinned, over the night's two days.
        monitor = prod_config.monitoring_host.node
        counts = [argv for argv in run.captured if argv[0] == "ssh"]
        assert len(counts) == 3
        assert f"KnownHostsCommand=/bin/echo {monitor.ip} ssh-ed25519 AAAAHostKeyOf{monitor.name.replace('-', '')}" in counts[0]
        assert counts[0][-2] == f"rayops@{monitor.ip}"
        night = dt.datetime.fromisoformat(MORNING).astimezone(dt.timezone.utc).date()
        assert f"/var/log/ray-cluster/{night - dt.timedelta(days=1)}/ray-hc-1/*.log" in counts[0][-1]
        assert f"/var/log/ray-cluster/{night}/ray-hc-1/*.log" in counts[0][-1]
        [event] = [e for e in run.events() if e["event"] == "morning"]
        assert event["level"] == "error"  # objects lost and tasks cut on ray-hc-2: not a normal morning

    def test_a_clean_morning_is_logged_as_normal(self, prod_config, tmp_path):
        clean = {"drained": True, "tasksFinished": 3, "tasksCut": 0, "objectsKept": {"count": 0, "bytes": 0}, "objectsLost": {"count": 0, "bytes": 0}}
        stack = StandInStack(prod_config, deployed_at=EVENING, drain_reports={f"ray-hc-{i}": clean for i in (1, 2, 3)})
        run = Harness(stack, tmp_path)
        assert run("apply", "--at", MORNING)[0] == scheduling.OK
        [event] = [e for e in run.events() if e["event"] == "morning"]
        assert event["level"] == "info"
        run.archived_lines = "0"
        stack.deployed = program_outputs(prod_config, dt.datetime.fromisoformat(EVENING))
        run("apply", "--at", MORNING)
        assert [e["level"] for e in run.events() if e["event"] == "morning"][-1] == "error"  # no logs arrived: not normal

    def test_a_report_line_is_found_in_pulumis_relayed_output(self):
        line = '    command:local:Command (ray-hc-1-drain-on-delete): ray-cluster drain report {"node": "ray-hc-1", "drained": true}'
        assert night_report.parse_drain_report(line) == {"node": "ray-hc-1", "drained": True}
        assert night_report.parse_drain_report("ray-cluster drain report {not json") is None
        assert night_report.parse_drain_report("an ordinary line") is None


class TestCommandLine:
    def test_the_report_is_one_json_line(self, noon_stack, tmp_path):
        out = io.StringIO()
        tools = scheduling.Tools(open_stack=lambda name, work_dir: noon_stack, probe=FakeRay(noon_stack), run=lambda argv: 0,
                                sleep=lambda s: None, clock=lambda: 0.0, log=scheduling.JsonLog(io.StringIO()))
        scheduler.main(["plan", "--json", "--at", EVENING, "--work-dir", str(ROOT), "--lock-file", str(tmp_path / "lock")], tools, out)
        assert len(out.getvalue().splitlines()) == 1 and json.loads(out.getvalue())["desired"]

    def test_plan_prints_a_table_for_a_person(self, noon_stack, tmp_path):
        out = io.StringIO()
        tools = scheduling.Tools(open_stack=lambda name, work_dir: noon_stack, probe=FakeRay(noon_stack), run=lambda argv: 0,
                                 sleep=lambda s: None, clock=lambda: 0.0, log=scheduling.JsonLog(io.StringIO()))
        code = scheduler.main(["plan", "--at", EVENING, "--work-dir", str(ROOT), "--lock-file", str(tmp_path / "lock")], tools, out)
        assert code == scheduling.OK
        lines = out.getvalue().splitlines()
        assert lines[0] == f"plan for {EVENING}"
        assert lines[2].split() == ["tier", "wanted", "deployed", "override", "next", "change"]
        assert lines[3].split() == ["always-on", "live", "live", "-", "-"]
        assert lines[4].split() == ["heavy-compute", "live", "off", "-", "2026-06-11T05:45:00+02:00"]
        assert "nodes to add: ray-hc-1, ray-hc-2, ray-hc-3; to remove: -" in lines
        assert f"resource changes an up would make: create {3 * RESOURCES_PER_NODE}" in lines

    def test_status_prints_each_node_and_whether_it_joined(self, noon_stack, tmp_path):
        out = io.StringIO()
        tools = scheduling.Tools(open_stack=lambda name, work_dir: noon_stack, probe=FakeRay(noon_stack), run=lambda argv: 0,
                                 sleep=lambda s: None, clock=lambda: 0.0, log=scheduling.JsonLog(io.StringIO()))
        scheduler.main(["status", "--work-dir", str(ROOT), "--lock-file", str(tmp_path / "lock")], tools, out)
        rows = [line.split() for line in out.getvalue().splitlines()[2:]]
        assert rows[0] == ["node", "tier", "ip", "in", "Ray"]
        assert rows[1:] == [["ray-ao-1", "always-on", "10.20.0.11", "joined"], ["ray-ao-2", "always-on", "10.20.0.12", "joined"],
                            ["ray-ao-3", "always-on", "10.20.0.13", "joined"]]


    def test_at_without_an_offset_is_a_usage_error(self, noon_stack, tmp_path, capsys):
        with pytest.raises(SystemExit) as exit_:
            Harness(noon_stack, tmp_path)("apply", "--at", "2026-06-10T18:00:00")
        assert exit_.value.code == scheduling.USAGE
        assert "has no UTC offset" in capsys.readouterr().err

    def test_an_unknown_stack_is_a_config_error(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        assert run("plan", "--stack", "nosuch")[0] == scheduling.USAGE
        assert run.event_names() == ["config_error"]

    def test_every_log_line_is_json_with_ts_level_event(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        run("apply", "--at", EVENING)
        events = run.events()
        assert len(events) > 5
        for event in events:
            assert {"ts", "level", "event"} <= set(event)
            assert dt.datetime.fromisoformat(event["ts"]).utcoffset() == dt.timedelta(0)
            assert event["level"] in ("info", "warning", "error")
        assert any(e["event"] == "pulumi" and e["line"] == "up (prod)" for e in events)

    def test_exit_codes_are_documented(self):
        doc = scheduler.__doc__
        for name in ("OK", "FAILED", "USAGE", "OVERLAP", "STACK_LOCKED", "NOT_JOINED", "DRAIN_INCOMPLETE", "SMOKE_FAILED"):
            assert re.search(rf"^    {getattr(scheduling, name)}  ", doc, re.MULTILINE), name


class TestTimers:
    """The systemd timer and the crontab fire exactly at the prod window's bring-up and drain start."""

    @pytest.fixture
    def edges(self, prod_config):
        window = prod_config.tiers["heavy-compute"].window
        day = dt.date(2026, 1, 1)
        drain_start = (dt.datetime.combine(day, window.end) - window.drain_lead).time()
        bring_up = (dt.datetime.combine(day, window.start) - window.bring_up_lead).time()
        return {bring_up, drain_start}, window.timezone

    def test_systemd_timer(self, edges):
        times, zone = edges
        timer = (ROOT / "scripts/systemd/ray-cluster-scheduler.timer").read_text()
        periodic, *calendars = re.findall(r"^OnCalendar=(.+)$", timer, re.MULTILINE)
        assert periodic == "*-*-* *:00/5:00"
        assert {dt.time.fromisoformat(c.split()[1]) for c in calendars} == times
        assert {c.split()[2] for c in calendars} == {zone}
        assert "Unit=ray-cluster-scheduler.service" in timer

    def test_crontab(self, edges):
        times, zone = edges
        crontab = (ROOT / "scripts/cron/ray-cluster.crontab").read_text()
        assert re.findall(r"^CRON_TZ=(\S+)$", crontab, re.MULTILINE) == [zone]
        jobs = re.findall(r"^(\d+) (\d+) \* \* \* (.+)$", crontab, re.MULTILINE)
        assert {dt.time(int(hour), int(minute)) for minute, hour, _ in jobs} == times
        periodic = re.findall(r"^\*/5 \* \* \* \* (.+)$", crontab, re.MULTILINE)
        assert len(periodic) == 1
        assert all("-m scripts.scheduler apply --if-due --stack prod" in command for command in [*periodic, *(c for *_, c in jobs)])

    def test_service_runs_the_scheduler(self):
        service = (ROOT / "scripts/systemd/ray-cluster-scheduler.service").read_text()
        exec_start = re.search(r"^ExecStart=(.+)$", service, re.MULTILINE).group(1)
        assert "-m scripts.scheduler apply --if-due --stack prod" in exec_start
        assert re.search(r"^Type=oneshot$", service, re.MULTILINE)

    @pytest.mark.parametrize(
        "base, expected",
        [
            # The bring-up (17:30 Berlin) the evening before the clocks go forward, and that morning's drain start.
            ("2026-03-28 12:00:00 UTC", "2026-03-28 16:30:00 UTC"),
            ("2026-03-28 18:00:00 UTC", "2026-03-29 03:45:00 UTC"),
            # The bring-up the evening before the clocks go back, and that morning's drain start.
            ("2026-10-24 12:00:00 UTC", "2026-10-24 15:30:00 UTC"),
            ("2026-10-24 17:00:00 UTC", "2026-10-25 04:45:00 UTC"),
        ],
    )
    def test_systemd_fires_at_the_schedules_next_transition_across_daylight_saving(self, prod_config, base, expected):
        require_tool("systemd-analyze", "systemd")
        timer = (ROOT / "scripts/systemd/ray-cluster-scheduler.timer").read_text()
        calendars = [c for c in re.findall(r"^OnCalendar=(.+)$", timer, re.MULTILINE) if len(c.split()) == 3]  # the edges
        result = subprocess.run(
            ["systemd-analyze", "calendar", f"--base-time={base}", *calendars],
            capture_output=True, text=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}, check=True,
        )
        elapses = re.findall(r"Next elapse: \w+ (.+)$", result.stdout, re.MULTILINE)
        assert min(elapses) == expected

        def utc(text: str) -> dt.datetime:
            return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=dt.timezone.utc)

        window = prod_config.tiers["heavy-compute"].window
        assert window.next_transition(utc(base)) == utc(expected)


class TestWhatRuns:
    def test_nothing_due_means_no_refresh_no_up_no_ssh(self, prod_config, tmp_path):
        stack = StandInStack(prod_config, deployed_at=EVENING)
        code, report = Harness(stack, tmp_path)("apply", "--at", LATER_EVENING, "--if-due")
        assert code == scheduling.OK and report["changes"] == {}
        assert stack.names() == ["outputs"]

    @pytest.mark.parametrize("deployed_at, at", [(NOON, EVENING), (EVENING, MORNING)], ids=["bring-up", "removal"])
    def test_a_missed_edge_is_still_due_minutes_later(self, prod_config, tmp_path, deployed_at, at):
        late = (dt.datetime.fromisoformat(at) + dt.timedelta(minutes=5)).isoformat()
        stack = StandInStack(prod_config, deployed_at=deployed_at)
        code, report = Harness(stack, tmp_path)("apply", "--at", late, "--if-due")
        assert code == scheduling.OK and "up" in stack.names() and report["changes"]

    def test_docker_overrides_of_the_operator_never_reach_pulumi(self, noon_stack, tmp_path, monkeypatch):
        monkeypatch.setenv("DOCKER_CONTEXT", "someone-elses")
        monkeypatch.setenv("DOCKER_HOST", "tcp://elsewhere:2375")
        assert Harness(noon_stack, tmp_path)("apply", "--at", EVENING)[0] == scheduling.OK
        assert all("DOCKER_CONTEXT" not in seen and "DOCKER_HOST" not in seen for seen in noon_stack.environments)
        assert os.environ["DOCKER_CONTEXT"] == "someone-elses"  # the scheduler's own environment is restored

    def test_a_refused_checkout_touches_nothing(self, noon_stack, tmp_path):
        run = Harness(noon_stack, tmp_path)
        run.checkout_problem = "stale: HEAD is 1234, origin/main is 5678"
        code, _ = run("apply", "--at", EVENING)
        assert code == scheduling.CHECKOUT
        assert noon_stack.calls == [] and run.event_names() == ["checkout_refused"]
        run.checkout_problem = "local changes to tracked files: Pulumi.prod.yaml"
        assert run("apply", "--at", EVENING, "--dry-run")[0] == scheduling.OK  # a preview deploys nothing


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


class TestCheckout:
    """`checkout_problem` against real git: a bare `origin` and two clones in tmp_path."""

    @pytest.fixture
    def clones(self, tmp_path, monkeypatch):
        for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
            monkeypatch.setenv(key, "scheduler-test")
        origin = tmp_path / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
        author = tmp_path / "author"
        subprocess.run(["git", "clone", "-q", str(origin), str(author)], check=True, capture_output=True)
        (author / "Pulumi.prod.yaml").write_text("config: {}\n")
        git(author, "add", ".")
        git(author, "commit", "-q", "-m", "first")
        git(author, "push", "-q", "origin", "HEAD:main")
        host = tmp_path / "scheduler-host"
        subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(host)], check=True, capture_output=True)
        return author, host

    def test_a_clean_current_checkout_is_fine(self, clones):
        _, host = clones
        (host / ".scheduler-prod.lock").write_text("")  # untracked files do not count
        assert scheduling.checkout_problem(host, "main") is None

    def test_local_changes_are_refused(self, clones):
        _, host = clones
        (host / "Pulumi.prod.yaml").write_text("config: {edited: on-the-host}\n")
        assert scheduling.checkout_problem(host, "main") == "local changes to tracked files: Pulumi.prod.yaml"

    def test_a_checkout_behind_origin_is_refused(self, clones):
        author, host = clones
        (author / "Pulumi.prod.yaml").write_text("config: {newer: true}\n")
        git(author, "commit", "-q", "-am", "second")
        git(author, "push", "-q", "origin", "HEAD:main")
        problem = scheduling.checkout_problem(host, "main")
        assert problem.startswith("stale: HEAD is ") and problem.endswith("run `git pull --ff-only`")
        git(host, "pull", "-q", "--ff-only")
        assert scheduling.checkout_problem(host, "main") is None

    def test_not_a_checkout_at_all(self, tmp_path):
        assert scheduling.checkout_problem(tmp_path, "main").startswith("not a git checkout")
