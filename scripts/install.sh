#!/usr/bin/env bash
# Installs everything the program, its tools and its tests need, into ./venv
# (the virtualenv Pulumi.yaml names) plus the Debian packages whose real tools
# check what we ship: promtool/prometheus, cloud-init, ufw, iproute2.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    prometheus cloud-init ufw iproute2 iptables procps
fi
python3 -m venv venv
venv/bin/pip install -q --upgrade pip
venv/bin/pip install -q -r requirements.txt
