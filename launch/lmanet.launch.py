"""Start lmanet_node: ros2 launch lmanet_ros lmanet.launch.py image:=/camera/image_raw ...

The arguments, parameter overrides and remappings come from ``lmanet_ros.node.launch_args``, which
the process-level tests use to start the node the same way (``lmanet_node --ros-args ...``).

Examples::

    ros2 launch lmanet_ros lmanet.launch.py image:=/camera/image_raw checkpoint:=/w/lmanet.pth
    ros2 launch lmanet_ros lmanet.launch.py cameras:=front,rear namespace:=perception
    ros2 launch lmanet_ros lmanet.launch.py params_file:=/my/lmanet.yaml use_sim_time:=true
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from lmanet_ros.node.launch_args import ARGUMENTS, resolve


def _start_node(context, *args, **kwargs):
    """Resolve the launch arguments into the node action (same rules as the process tests)."""
    values = {arg.name: LaunchConfiguration(arg.name).perform(context) for arg in ARGUMENTS}
    return [Node(**resolve(values).node_kwargs())]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments of lmanet_ros.node.launch_args.ARGUMENTS and start the node."""
    declared = [DeclareLaunchArgument(arg.name, default_value=arg.default,
                                      description=arg.description) for arg in ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=_start_node)])
