"""lmanet_node with the real ROS 2 tools, used as the README tells users to: ``ros2 launch
lmanet_ros lmanet.launch.py`` through the lmanet_ros ament prefix with arguments (a remapped camera,
``checkpoint:=demo``, a parameter file), ``ros2 param list/get/set``, ``ros2 service call
/lmanet/reset_memory std_srvs/srv/Trigger``, and Ctrl-C as a terminal sends it: SIGINT to the
whole process group (launch and the node each get it, and launch forwards one more to the node).

The node runs under its README name ``/lmanet`` (this test session's ROS domain is its own).
Skipped, with the reason, where the tools or the prefix are missing (ROS 2 from PyPI has no
tools; scripts/setup_venv.sh installs them from ../shared/wheels where that folder exists).
"""
from __future__ import annotations

import pytest
from sensor_msgs.msg import Image

from process_helpers import (CLEAN_CODES, EXIT_WITHIN_S, FrameStream, ctrl_c, failure_marks,
                             kill_group, needs_tools, ros2, segment_once, start_ros2_launch)
from ros_helpers import wait_ready, write_params_file

pytestmark = [pytest.mark.ros, needs_tools]

NODE = "/lmanet"
CAMERA = "/camera/image_raw"
#: Set by the parameter file given as the params_file launch argument (default 0.5).
OVERLAY_ALPHA = 0.35


@pytest.fixture(scope="module")
def launched(ros, tmp_path_factory):
    """``ros2 launch lmanet_ros lmanet.launch.py image:=... checkpoint:=demo params_file:=...``,
    ready; the ``ros2`` daemon that the ros2 commands start is stopped at the end."""
    directory = tmp_path_factory.mktemp("ros2_launch")
    params_file = write_params_file(directory, {"overlay_alpha": OVERLAY_ALPHA})
    process = start_ros2_launch(directory, {"image": CAMERA, "checkpoint": "demo",
                                            "params_file": params_file, "device": "cpu"})
    try:
        assert process.fqn == NODE
        wait_ready(ros, process)
        yield process
    finally:
        if process.alive():
            kill_group(process)
        ros2("daemon", "stop")


def test_labels_arrive_with_the_input_header(ros, launched):
    assert "demo weights of lmanet_erfnet" in launched.log()  # the checkpoint:=demo argument
    msg = segment_once(ros, CAMERA, f"{NODE}/labels", stamp=7.25, frame_id="ros2_launch_cam")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (7, 250_000_000)


def test_ros2_param_list_get_set(launched):
    listed = ros2("param", "list", NODE, expect=lambda out: "processing_mode" in out)
    for name in ("checkpoint", "memory.length", "input.reliability", "overlay_alpha"):
        assert f"  {name}\n" in listed, listed
    assert f"Double value is: {OVERLAY_ALPHA}" in ros2("param", "get", NODE, "overlay_alpha")
    # the README's bag replay settings
    assert "Set parameter successful" in ros2("param", "set", NODE, "processing_mode", "all")
    assert "Set parameter successful" in ros2("param", "set", NODE, "input.reliability",
                                              "reliable")
    assert "String value is: all" in ros2("param", "get", NODE, "processing_mode")
    # ros2 param set exits 0 when the node refuses a value: the output says so
    refused = ros2("param", "set", NODE, "memory.length", "99")
    assert "Setting parameter failed" in refused and "memory.length" in refused, refused


def test_ros2_service_call_reset_memory(launched):
    answer = ros2("service", "call", f"{NODE}/reset_memory", "std_srvs/srv/Trigger")
    assert "success=True" in answer and "memory reset requested for 1 camera(s)" in answer, \
        answer


def test_ctrl_c_ends_launch_and_node_cleanly(ros, launched):
    """Ctrl-C while frames are being segmented: everything exits within 5 s, cleanly."""
    labels = ros.subscribe(Image, f"{NODE}/labels")
    stream = FrameStream(ros, CAMERA, (256, 512))
    try:
        labels.wait_for(2, timeout=60.0)
        code, seconds = ctrl_c(launched)
    finally:
        stream.close()
        ros.unsubscribe(labels)
    log = launched.log()
    print(f"ros2 launch exited {code}, every process gone {seconds:.2f} s after Ctrl-C")
    assert code in CLEAN_CODES, log[-3000:]
    assert seconds < EXIT_WITHIN_S, log[-3000:]
    assert "SIGINT: shutting down" in log and "process has finished cleanly" in log, log[-3000:]
    assert not failure_marks(log), log[-3000:]
