#!/usr/bin/env bash
# The test suite (README "Quick start", second command): unit, pipeline, bags and node-over-DDS
# tests; slow ones are excluded (run them with: scripts/test.sh -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup_venv.sh
# the compiled attention kernel for the current source (a no-op when up to date; its tests
# would otherwise skip in a venv made before the source changed)
.venv/bin/python -m lmanet_ros.models._attention_ext build >/dev/null || true
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( $$ % 90 + 5 ))}
exec .venv/bin/python -m pytest "$@"
