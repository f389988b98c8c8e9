"""The replay engine and live scoring of lmanet_ros.evaluation over DDS: replay_bag publishes
frames and /clock at the recorded rate, lock-step fails clearly without a node, LiveVideo pairs
inputs and overlays by stamp. The end-to-end run against lmanet_node through the commands
(`lmanet eval --live`, `lmanet score`) is test/tools/test_live_commands.py.
"""
import time

import numpy as np
import pytest

from eval_helpers import FRAME_H as H
from eval_helpers import FRAME_W as W
from eval_helpers import IMAGE, PERIOD, T0, frames
from eval_helpers import write_frames_bag as write_bag
from lmanet_ros.bags import IMAGE as IMAGE_TYPE
from lmanet_ros.bags import decode_label, header_of, image_cdr, typestore
from lmanet_ros.evaluation import (LiveVideo, ReplayError, ReplayOptions, parse_remaps,
                                   recorded_fps, replay_bag)
from lmanet_ros.stamps import stamp_ns
from video_helpers import read_video

pytestmark = pytest.mark.ros


def test_recorded_fps_ignores_pauses_and_equal_stamps():
    stamps = [T0 + i * PERIOD for i in range(5)] + [T0 + 4 * PERIOD] + \
        [T0 + 5 * 10**9 + i * PERIOD for i in range(5)]
    assert recorded_fps(stamps) == pytest.approx(17.0, rel=1e-3)
    assert recorded_fps([T0]) == 17.0 and recorded_fps([T0, T0], default=5.0) == 5.0


def test_live_video_pairs_equal_stamps_in_order_and_skips_missing_overlays(tmp_path):
    """Two frames with one stamp (the node counts them as duplicates), a 5 s pause, an overlay
    that never comes, overlays arriving late: every frame lands once, beside its own overlay."""
    stamps = [T0 + i * PERIOD for i in range(10)] + [T0 + 9 * PERIOD] + \
        [T0 + 5 * 10**9 + i * PERIOD for i in range(9)]
    inputs = [np.full((16, 32, 3), 12 * i, np.uint8) for i in range(len(stamps))]
    video = LiveVideo(tmp_path / "overlay.mp4")
    for stamp, image in zip(stamps, inputs):
        video.add_input(stamp, image)
    assert video.frames == 0 and video.pending == len(stamps)
    for stamp, image in list(zip(stamps, inputs))[:-1]:  # the last overlay never comes
        video.add_overlay(stamp, 255 - image)
    video.close()
    assert video.frames == len(stamps) - 1 and video.missing == 1 and video.pending == 0
    shown, fps = read_video(tmp_path / "overlay.mp4")
    assert fps == pytest.approx(17.0, abs=0.1)
    assert len(shown) == len(stamps) - 1
    for rgb, image in zip(shown, inputs):  # left: the input, right: its own overlay
        assert abs(float(rgb[:, :32].mean()) - image.mean()) < 6
        assert abs(float(rgb[:, 32:].mean()) - (255 - image.mean())) < 6


def test_replay_publishes_frames_and_clock(ros, tmp_path):
    from rosgraph_msgs.msg import Clock
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    bag = write_bag(tmp_path / "bag", frames(4), storage="sqlite3")
    images = ros.subscribe(Image, "/replayed/image")
    clock = ros.subscribe(Clock, "/clock",
                          QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    outcome = replay_bag(ReplayOptions(bag=bag, remap={IMAGE: "/replayed/image"}, rate=0.0,
                                       wait_for_subscribers=20.0))
    assert outcome.frames == 4 and outcome.published == 4
    received = images.wait_for(4, timeout=20)
    stamps = [stamp_ns(m.header) for m in received]
    assert stamps == [T0 + i * PERIOD for i in range(4)]
    np.testing.assert_array_equal(
        np.frombuffer(bytes(received[2].data), np.uint8).reshape(H, W, 3), frames(4)[2])
    recorded = [T0 + i * PERIOD + 10**6 for i in range(4)]   # the recording times
    clock.wait_for(1, timeout=20, predicate=lambda t: stamp_ns(t.clock) == recorded[-1])
    ticks = [stamp_ns(t.clock) for t in clock.messages]
    assert ticks == recorded[-len(ticks):]   # in order (the first may precede the match)


def test_replay_rate_follows_recorded_timing(tmp_path):
    bag = write_bag(tmp_path / "bag", frames(4))
    start = time.monotonic()
    replay_bag(ReplayOptions(bag=bag, rate=0.5))         # 3 periods of 1/17 s at half speed
    assert time.monotonic() - start >= 3 * 2 / 17 * 0.95


@pytest.mark.parametrize("subscribed, message", [(False, "nobody subscribes"),
                                                 (True, "no publisher of")])
def test_lockstep_without_node_fails_clearly(ros, tmp_path, subscribed, message):
    from sensor_msgs.msg import Image
    bag = write_bag(tmp_path / "bag", frames(2))
    topic = f"/lockstep_{int(subscribed)}/image"
    if subscribed:
        ros.subscribe(Image, topic)
    # the replay's own node must discover the test's subscription first: allow for a busy host
    options = ReplayOptions(bag=bag, remap={IMAGE: topic}, lockstep=True, rate=0.0,
                            node_labels_topics=["/nobody/labels"], startup_timeout=8.0)
    with pytest.raises(ReplayError, match=message):
        replay_bag(options)


def test_helpers():
    data = image_cdr(T0 + 5, "cam_front", np.zeros((2, 3), np.uint8), "mono8")
    assert header_of(data, "sensor_msgs/msg/Image") == (T0 + 5, "cam_front")
    assert header_of(b"\x00\x01\x00\x00", "std_msgs/msg/String") == (None, "")
    msg = typestore().deserialize_cdr(data, "sensor_msgs/msg/Image")
    assert decode_label(IMAGE_TYPE, msg).shape == (2, 3)
    assert parse_remaps(["/a:=/b"]) == {"/a": "/b"}
    with pytest.raises(ReplayError):
        parse_remaps(["/a=/b"])
