"""Camera-sized images from another process reach the node started by ``ros2 launch``: a separate
process publishes 1280x720 rgb8 at 5 Hz, best effort, depth 5, with only the environment the
README tells camera users to set (FASTDDS_DEFAULT_PROFILES_FILE=.../fastdds_shm_udp.xml, the
launch file's default dds_profile), and the frames are labelled (counted by stamp): 95 of 100
with -m slow (the issue's figure), 70 % of 40 in the default run. The publisher is
benchmarks/dds_delivery.py's."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sensor_msgs.msg import Image

from process_helpers import kill_group, needs_tools, start_ros2_launch
from ros_helpers import child_env, wait_ready
from lmanet_ros.node.launch_args import config_file

pytestmark = [pytest.mark.ros, needs_tools]

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "/dds_bench/image"  # benchmarks/dds_delivery.py's topic


@pytest.fixture(scope="module")
def launched(ros, tmp_path_factory):
    """``ros2 launch lmanet_ros lmanet.launch.py image:=... checkpoint:=demo`` (default
    dds_profile), ready."""
    process = start_ros2_launch(tmp_path_factory.mktemp("large_images"),
                                {"image": TOPIC, "checkpoint": "demo", "device": "cpu"})
    try:
        wait_ready(ros, process)
        yield process
    finally:
        kill_group(process)


# (frames, share that must be labelled): the default run checks that the profile delivers
# (Fast DDS defaults deliver about 1 %; a loaded CI host loses a few frames: 31 and 39 of 40 seen);
# the slow run is the figure, 95 of 100 (benchmarks/dds_delivery.py measures it too).
@pytest.mark.parametrize("frames, share", [
    (40, 0.7), pytest.param(100, 0.95, marks=pytest.mark.slow)])
def test_camera_sized_frames_are_labelled(ros, launched, frames, share):
    labels = ros.subscribe(Image, f"{launched.fqn}/labels")
    camera_env = child_env(FASTDDS_DEFAULT_PROFILES_FILE=config_file("fastdds_shm_udp.xml"))
    try:
        ros.wait_for_publishers(labels)
        publisher = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "dds_delivery.py"), "--role", "publish",
             "--size", "1280x720", "--frames", str(frames), "--rate", "5"],
            env=camera_env, capture_output=True, text=True, timeout=frames / 5 + 90)
        assert publisher.returncode == 0, publisher.stderr[-2000:]

        def labelled() -> int:
            return len({m.header.stamp.sec for m in labels.messages})
        before = -1
        deadline = time.monotonic() + 15.0
        while labelled() != before and time.monotonic() < deadline:  # until no more arrive
            before = labelled()
            time.sleep(2.0)
        count = labelled()
    finally:
        ros.unsubscribe(labels)
    print(f"{count} of {frames} 1280x720 frames labelled")
    assert count >= share * frames, launched.log()[-3000:]
    assert "no image arrived" not in launched.log()
