"""``ros2 launch lmanet_ros lmanet.launch.py managed:=true autostart:=true``: the launch file
starts lmanet_lifecycle_node (launch_ros's LifecycleNode action), configures it and activates it
once configured; the node then segments with the input header copied, and Ctrl-C (SIGINT to the
process group) ends launch and the node cleanly. Without ``autostart`` the node waits
unconfigured for a lifecycle manager.

Skipped, with the reason, where the tools or the prefix are missing (see process_helpers.py).
"""
from __future__ import annotations

import pytest
from lifecycle_msgs.srv import GetState

from process_helpers import (CLEAN_CODES, EXIT_WITHIN_S, ctrl_c, failure_marks, kill_group,
                             needs_tools, segment_once, start_ros2_launch)
from ros_helpers import wait_ready, write_params_file

pytestmark = [pytest.mark.ros, needs_tools]

NAMESPACE = "/lmanet_lifecycle_launch"


def _state(ros, fqn: str, timeout: float = 60.0) -> str:
    response, _ = ros.call(GetState, f"{fqn}/get_state", timeout=timeout)
    return response.current_state.label


@pytest.mark.parametrize("autostart", ["true", "false"])
def test_managed_launch(ros, tmp_path, autostart):
    params_file = write_params_file(tmp_path, {"input_height": 32, "input_width": 64})
    process = start_ros2_launch(tmp_path, {
        "namespace": NAMESPACE + ("_auto" if autostart == "true" else ""),
        "image": "camera/image_raw", "managed": "true", "autostart": autostart,
        "params_file": params_file, "device": "cpu"})
    try:
        if autostart == "true":
            wait_ready(ros, process)  # label_info: published on activate
            assert _state(ros, process.fqn) == "active"
            segment_once(ros, process.input_topic("camera/image_raw"), process.topic("labels"),
                         stamp=3.5, frame_id="managed_cam")
        else:
            assert _state(ros, process.fqn) == "unconfigured"
            assert "loaded lmanet_erfnet" not in process.log()
        code, seconds = ctrl_c(process)
    finally:
        if process.alive():
            kill_group(process)
    log = process.log()
    assert code in CLEAN_CODES and seconds < EXIT_WITHIN_S, log[-3000:]
    assert "lmanet_lifecycle_node" in log and not failure_marks(log), log[-3000:]
