# shellcheck shell=bash
# Source it (bash, after `. .venv/bin/activate`) for the ros2 command line of this checkout:
#   . scripts/ros_env.sh && ros2 launch lmanet_ros lmanet.launch.py checkpoint:=demo
# It puts on AMENT_PREFIX_PATH, ahead of what is there: the lmanet_ros prefix
# (build_msgs/install/lmanet_ros: messages, launch, config, lib/lmanet_ros/lmanet_node), the
# built composition_interfaces (build_ros_tools/) and the venv (the ROS wheels' ament index,
# where the ros2 command finds its verbs); each only where scripts/setup_venv.sh made it.
# scripts/test.sh sources it.
_lmanet_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
for _lmanet_prefix in "$_lmanet_root/.venv" \
    "$_lmanet_root/build_ros_tools/install/composition_interfaces" \
    "$_lmanet_root/build_msgs/install/lmanet_ros"; do
  if [ -d "$_lmanet_prefix" ] && [[ ":${AMENT_PREFIX_PATH:-}:" != *":$_lmanet_prefix:"* ]]; then
    AMENT_PREFIX_PATH="$_lmanet_prefix${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  fi
done
export AMENT_PREFIX_PATH
unset _lmanet_root _lmanet_prefix
