#!/usr/bin/env bash
# The test suite (README "Quick start", second command): unit, pipeline, bags, node-over-DDS and
# (where ../shared/wheels gave the tools) ros2 launch / ros2 param / ros2 service tests; slow
# ones are excluded (run them with: scripts/test.sh -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup_venv.sh
# the compiled attention kernel for the current source (a no-op when up to date; its tests
# would otherwise skip in a venv made before the source changed)
.venv/bin/python -m lmanet_ros.models._attention_ext build >/dev/null || true
# the ros2 command line and launch (where set up): AMENT_PREFIX_PATH of the lmanet_ros prefix
# shellcheck source=scripts/ros_env.sh
. scripts/ros_env.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( $$ % 90 + 5 ))}
exec .venv/bin/python -m pytest "$@"
