"""Logs outlive the VM: the rendered rsyslog configs run by real rsyslogd, a "heavy node" and the
monitoring host in one loopback-only namespace (its own hostname), and the wiring."""
from __future__ import annotations

import subprocess
import time

import pytest

from components.model.ports import MONITORING
from components.render import firewall_rules, log_shipping, ray_start
from conftest import require_tool
from test_program import COMMAND

NODE = "ray-hc-1"

# In a namespace with only `lo` and its own hostname: the monitoring host's rsyslog, then the
# node's; a task's line written to a Ray worker file and a line the Ray container printed (the
# journal's forward, as a local syslog socket); then the node's rsyslog is killed and its disk
# removed, as at 06:00. The archive is read afterwards, by the test.
NIGHT_SCRIPT = r"""
set -eu
dir=$1
ip link set lo up
hostname {node}
rsyslogd -n -f "$dir/receiver.conf" -i "$dir/receiver.pid" & receiver=$!
sleep 1
rsyslogd -n -f "$dir/node.conf" -i "$dir/node.pid" & node=$!
sleep 1
mkdir -p "$dir/vm/tmp/session_2026-06-10_18-00-05_1/logs"
echo "task 7 of job 02000000 on the heavy tier: epoch 3 loss 0.125" >> "$dir/vm/tmp/session_2026-06-10_18-00-05_1/logs/worker-9f8e-ffff-4242.out"
logger -u "$dir/journal.sock" -t {container} "raylet exited, the node leaves the cluster"
for i in $(seq 1 100); do
    [ "$(cat "$dir"/archive/*/{node}/*.log 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.1
done
kill -9 $node
rm -rf "$dir/vm"
kill $receiver; wait $receiver || true
"""


def _configs(cfg, tmp_path) -> None:
    """The shipped fragments, with only the paths moved into tmp_path and the receiver on loopback."""
    work = tmp_path / "work"
    (work / "node").mkdir(parents=True)
    (work / "receiver").mkdir()
    port = MONITORING.log_archive
    ray_logs = log_shipping.RAY_LOGS.replace(log_shipping.HOST_DATA_DIR, str(tmp_path / "vm"))
    (tmp_path / "node.conf").write_text(
        f'global(workDirectory="{work}/node")\n'
        # What the journal forwards to rsyslog on Ubuntu, here a socket of our own.
        f'module(load="imuxsock" SysSock.Use="off")\ninput(type="imuxsock" Socket="{tmp_path}/journal.sock")\n'
        + log_shipping.node_config(cfg, ray_logs=ray_logs, receiver="127.0.0.1", port=port)
    )
    (tmp_path / "receiver.conf").write_text(
        f'global(workDirectory="{work}/receiver")\n' + log_shipping.receiver_config(cfg, archive_dir=str(tmp_path / "archive"), port=port)
    )


def test_the_shipped_configs_pass_rsyslogs_own_check(prod_config, tmp_path):
    require_tool("rsyslogd", "rsyslog")
    for name, text in {"node": log_shipping.node_config(prod_config), "receiver": log_shipping.receiver_config(prod_config)}.items():
        # As Ubuntu's /etc/rsyslog.conf includes /etc/rsyslog.d/*.conf, after setting its work directory.
        fragments = tmp_path / name
        fragments.mkdir()
        (fragments / "60-ray-cluster.conf").write_text(text)
        main = tmp_path / f"{name}-rsyslog.conf"
        main.write_text(f"$WorkDirectory {tmp_path}\n$IncludeConfig {fragments}/*.conf\n")
        result = subprocess.run(["rsyslogd", "-N1", "-f", str(main)], capture_output=True, text=True)
        assert result.returncode == 0 and "End of config validation run" in result.stderr, result.stderr


@pytest.mark.netns
def test_a_nights_lines_are_read_on_the_monitoring_host_after_the_node_is_gone(prod_config, tmp_path):
    require_tool("rsyslogd", "rsyslog")
    require_tool("logger", "bsdutils")
    _configs(prod_config, tmp_path)
    script = NIGHT_SCRIPT.replace("{node}", NODE).replace("{container}", ray_start.CONTAINER_NAME)
    started = time.monotonic()
    result = subprocess.run(
        ["unshare", "-n", "-u", "sh", "-c", script, "sh", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "vm").exists()
    [day] = list((tmp_path / "archive").iterdir())
    node_dir = day / NODE  # per day, then per node, by the node's hostname
    ray_lines = (node_dir / f"{log_shipping.RAY_TAG}.log").read_text().splitlines()
    assert len(ray_lines) == 1
    assert ray_lines[0].split(" ", 1)[1] == (
        "worker-9f8e-ffff-4242.out task 7 of job 02000000 on the heavy tier: epoch 3 loss 0.125"
    )
    container_lines = (node_dir / f"{log_shipping.CONTAINER_TAG}.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in container_lines] == [
        f"{ray_start.CONTAINER_NAME} raylet exited, the node leaves the cluster"
    ]
    assert time.monotonic() - started < 30


def test_only_the_clusters_nodes_reach_the_log_archive(prod_config):
    node_ips = {str(p.node.ip) for p in prod_config.placed_nodes}
    for placed in prod_config.placed_nodes:
        sources = {r.source for r in firewall_rules.firewall_rules(prod_config, placed) if MONITORING.log_archive in r.opened}
        assert sources == (node_ips if placed.node.name == prod_config.monitoring_host.node.name else set())


def test_the_archive_ages_out_after_the_metrics_retention(prod_config):
    path, mode, user, group, age = log_shipping.tmpfiles_config(prod_config).split()[1:]
    assert (path, age) == (log_shipping.ARCHIVE_DIR, f"{prod_config.monitoring.retention_days}d")
    assert user == "syslog"  # Ubuntu's rsyslog writes as syslog after dropping root



def test_every_node_ships_and_the_monitoring_host_archives(night, prod_config):
    host = prod_config.monitoring_host.node.name
    archive = night.one(COMMAND, f"{host}-log-archive")
    assert log_shipping.receiver_config(prod_config) in _staged(night, archive.name)
    assert "systemctl restart rsyslog" in archive.inputs["create"]
    for placed in prod_config.placed_nodes:
        ship = night.one(COMMAND, f"{placed.node.name}-log-shipping")
        assert _staged(night, ship.name) == [log_shipping.node_config(prod_config)]
        assert night.one(COMMAND, f"{placed.node.name}-ufw").urn in ship.dependencies
        ray = night.one("docker:index/container:Container", f"{placed.node.name}-ray")
        assert (ray.inputs["logDriver"], ray.inputs["logOpts"]) == ("journald", {"tag": ray_start.CONTAINER_NAME})


def _staged(run, command: str) -> list[str]:
    """The texts the install command `command` installs, as staged by their CopyToRemote."""
    return [copy.inputs["source"]["text"] for copy in run.staged_copies(command)]
