"""launch/lmanet.launch.py on a robot (launch, launch_ros and launch_pytest installed).

Here (ROS 2 from PyPI) these packages do not exist and the module is skipped with that reason;
the process-level tests (test/node/test_node_*.py) start ``lmanet_node`` with the command line that
the same launch arguments give (lmanet_ros.node.launch_args), so what they check holds for the
launch file.
"""
from __future__ import annotations

import importlib.util

import pytest


def _require(name: str):
    """Import a ROS launch package or skip this module, saying why."""
    reason = (f"{name} is not installed here (ROS 2 from PyPI has no launch packages); "
              f"robots have it")
    module = pytest.importorskip(name, reason=reason)
    if getattr(module, "__file__", None) is None:  # the repository's launch/ folder, not ROS's
        pytest.skip(reason, allow_module_level=True)
    return module


launch = _require("launch")
launch_ros = _require("launch_ros")
launch_pytest = _require("launch_pytest")

import numpy as np  # noqa: E402
from launch_pytest.tools import process as process_tools  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ros_helpers import ROOT, make_image, stamp_of, wait_until  # noqa: E402
from lmanet_ros.node.launch_args import ARGUMENTS, resolve  # noqa: E402

pytestmark = pytest.mark.ros

NAMESPACE = "/lmanet_launch_test"
LAUNCH_VALUES = {"namespace": NAMESPACE, "image": "camera/image_raw", "device": "cpu"}


def _launch_file_module():
    spec = importlib.util.spec_from_file_location("lmanet_launch", ROOT / "launch" /
                                                  "lmanet.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_declares_the_shared_arguments():
    description = _launch_file_module().generate_launch_description()
    declared = [entity.name for entity in description.entities
                if isinstance(entity, launch.actions.DeclareLaunchArgument)]
    assert declared == [arg.name for arg in ARGUMENTS]


@pytest.fixture
def lmanet_node_action():
    """The Node action the launch file's OpaqueFunction builds for LAUNCH_VALUES."""
    return launch_ros.actions.Node(**resolve(LAUNCH_VALUES).node_kwargs(), cached_output=True)


@launch_pytest.fixture
def launch_description(lmanet_node_action):
    return launch.LaunchDescription([lmanet_node_action, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=launch_description)
def test_node_segments_a_remapped_camera(lmanet_node_action, launch_context, ros):
    process_tools.wait_for_start_sync(launch_context, lmanet_node_action, timeout=30)
    process_tools.assert_output_sync(
        launch_context, lmanet_node_action, lambda output: "ready:" in output, timeout=120)
    labels = ros.subscribe(Image, f"{NAMESPACE}/lmanet/labels")
    ros.wait_for_publishers(labels)
    publisher = ros.publisher(Image, f"{NAMESPACE}/camera/image_raw")
    image = np.random.default_rng(0).integers(0, 256, (67, 131, 3), dtype=np.uint8)

    def segmented():
        publisher.publish(make_image(image, "bgr8", stamp=7.5, frame_id="launch_cam"))
        return any(stamp_of(m) == 7.5 for m in labels.messages)
    wait_until(segmented, 60.0, interval=1.0, what="labels of the published frame")
    msg = next(m for m in labels.messages if stamp_of(m) == 7.5)
    assert (msg.encoding, msg.height, msg.width) == ("mono8", 67, 131)
    assert msg.header.frame_id == "launch_cam"
    yield
    assert lmanet_node_action.return_code == 0
