"""launch/lmanet.launch.py under launch_pytest, as installed: the file in the lmanet_ros ament
prefix (a robot's colcon install; here build_msgs/install/lmanet_ros, which scripts/setup_venv.sh
lays out and scripts/ros_env.sh puts on AMENT_PREFIX_PATH), included with launch arguments. The
node it starts from lib/lmanet_ros/lmanet_node gets ready, segments the remapped camera with the
input header copied, and exits 0 when launch shuts down.

Skipped, with the reason, where launch, launch_ros and launch_pytest are not installed (ROS 2
from PyPI has none; scripts/setup_venv.sh installs them from ../shared/wheels where that folder
exists) or the prefix is missing.
"""
from __future__ import annotations

import importlib.util

import pytest

from process_helpers import installed_launch_file, needs_tools, require_module, segment_once
from ros_helpers import READY_TIMEOUT, ROOT, wait_until
from lmanet_ros.node.launch_args import ARGUMENTS, resolve

launch = require_module("launch")
launch_pytest = require_module("launch_pytest")

from launch.actions import IncludeLaunchDescription, RegisterEventHandler  # noqa: E402
from launch.event_handlers import OnProcessExit, OnProcessIO  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

pytestmark = pytest.mark.ros

NAMESPACE = "/lmanet_launch_test"
LAUNCH_VALUES = {"namespace": NAMESPACE, "image": "camera/image_raw", "device": "cpu"}
NODE = resolve(LAUNCH_VALUES).fully_qualified_name


def test_launch_file_declares_the_shared_arguments():
    spec = importlib.util.spec_from_file_location("lmanet_launch", ROOT / "launch" /
                                                  "lmanet.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [entity.name for entity in description.entities
                if isinstance(entity, launch.actions.DeclareLaunchArgument)]
    assert declared == [arg.name for arg in ARGUMENTS]


@needs_tools
def test_the_prefix_installs_this_launch_file():
    assert installed_launch_file().resolve() == (ROOT / "launch" / "lmanet.launch.py").resolve()


@pytest.fixture
def processes() -> dict:
    """What the launch's event handlers saw: the processes' output and exit codes."""
    return {"output": [], "exit_codes": []}


@launch_pytest.fixture
def launch_description(processes):
    """The installed launch file with LAUNCH_VALUES, and handlers recording its processes."""
    def record_output(event) -> None:
        processes["output"].append(event.text.decode(errors="replace"))

    def record_exit(event, context) -> None:
        processes["exit_codes"].append(event.returncode)

    return launch.LaunchDescription([
        RegisterEventHandler(OnProcessIO(on_stdout=record_output, on_stderr=record_output)),
        RegisterEventHandler(OnProcessExit(on_exit=record_exit)),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(installed_launch_file())),
                                 launch_arguments=LAUNCH_VALUES.items()),
        launch_pytest.actions.ReadyToTest()])


@needs_tools
@pytest.mark.launch(fixture=launch_description)
def test_node_segments_a_remapped_camera(processes, ros):
    from lmanet_ros.msg import LabelInfo
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    label_info = ros.subscribe(LabelInfo, f"{NODE}/label_info", latched)
    try:
        label_info.wait_for(1, timeout=READY_TIMEOUT)  # the node's readiness
    finally:
        ros.unsubscribe(label_info)
    wait_until(lambda: any("ready:" in text for text in processes["output"]), 10.0,
               what="'ready:' in the node's output")  # logged right after label_info
    segment_once(ros, f"{NAMESPACE}/camera/image_raw", f"{NODE}/labels", stamp=7.5,
                 frame_id="launch_cam")
    yield
    assert processes["exit_codes"] == [0], "".join(processes["output"])[-3000:]
