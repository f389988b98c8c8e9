#!/usr/bin/env bash
# README "Quick start", first command: set everything up in ./.venv, then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( $$ % 90 + 5 ))}
exec .venv/bin/lmanet demo "$@"
