"""Start lmanet_node: ros2 launch lmanet_ros lmanet.launch.py image:=/camera/image_raw ...

The arguments, parameter overrides and remappings come from ``lmanet_ros.node.launch_args``, which
the process-level tests use to start the node the same way (``lmanet_node --ros-args ...``).

Examples::

    ros2 launch lmanet_ros lmanet.launch.py image:=/camera/image_raw checkpoint:=/w/lmanet.pth
    ros2 launch lmanet_ros lmanet.launch.py cameras:=front,rear namespace:=perception
    ros2 launch lmanet_ros lmanet.launch.py params_file:=/my/lmanet.yaml use_sim_time:=true
    ros2 launch lmanet_ros lmanet.launch.py managed:=true autostart:=true checkpoint:=demo

``managed:=true`` starts the lifecycle node ``lmanet_lifecycle_node`` (launch_ros's LifecycleNode
action): unconfigured, for a lifecycle manager, or configured and then activated by this file
with ``autostart:=true``.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from lmanet_ros.node.launch_args import ARGUMENTS, resolve


def _change_state(node: LifecycleNode, transition_id: int) -> EmitEvent:
    """The action that asks the lifecycle node ``node`` for a transition."""
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                       transition_id=transition_id))


def _autostart(node: LifecycleNode) -> list:
    """Configure ``node`` now and activate it when its first configure succeeds."""
    activate = OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                 goal_state="inactive", handle_once=True,
                                 entities=[_change_state(node, Transition.TRANSITION_ACTIVATE)])
    return [RegisterEventHandler(activate),
            _change_state(node, Transition.TRANSITION_CONFIGURE)]


def _start_node(context, *args, **kwargs):
    """Resolve the launch arguments into the node action (same rules as the process tests)."""
    values = {arg.name: LaunchConfiguration(arg.name).perform(context) for arg in ARGUMENTS}
    launch = resolve(values)
    if not launch.managed:
        return [Node(**launch.node_kwargs())]
    node = LifecycleNode(**launch.node_kwargs())
    return [node, *(_autostart(node) if launch.autostart else [])]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments of lmanet_ros.node.launch_args.ARGUMENTS and start the node."""
    declared = [DeclareLaunchArgument(arg.name, default_value=arg.default,
                                      description=arg.description) for arg in ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=_start_node)])
