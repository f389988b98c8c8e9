#!/usr/bin/env bash
# README "Quick start", first command: set everything up in ./.venv, then run the demo.
# `lmanet demo` keeps ROS traffic on this host in a ROS_DOMAIN_ID of its own (unless one is set).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
exec .venv/bin/lmanet demo "$@"
