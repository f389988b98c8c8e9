"""lmanet_node over real DDS: every encoding in, any size, headers copied, outputs aligned with the
input, label_info, runtime parameters, bad inputs followed by good frames, compressed input, the
input subscriptions logged when their parameters change.

One node (random weights, lmanet_erfnet) serves the whole module, in the replay configuration
(processing_mode all, reliable keep-all input) so every frame published is processed in order.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from ros_helpers import (Rig, make_compressed, make_image, pixels_of, set_header, stamp_of,
                         wait_until)
from lmanet_ros import imaging
from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES, CITYSCAPES_COLORS

pytestmark = pytest.mark.ros

RELIABLE_ALL = QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL,
                          reliability=ReliabilityPolicy.RELIABLE)
OUTPUTS = ("labels", "color", "overlay", "confidence")
_stamps = itertools.count(1)


def next_stamp() -> float:
    """Increasing stamps 50 ms apart (no gap reset between test frames)."""
    return 1000.0 + next(_stamps) * 0.05


@pytest.fixture(scope="module")
def rig(ros, node_factory):
    node = node_factory(params={"processing_mode": "all", "input.reliability": "reliable",
                                "input.depth": 0, "publish.confidence": True,
                                "diagnostics_period": 0.25})
    rig = Rig(ros, node, outputs=OUTPUTS, input_qos=RELIABLE_ALL)
    # The node renders colour/overlay/confidence only once it sees our subscriptions: send
    # frames until every output of one frame has come back.
    image = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)

    def all_outputs():
        msg = make_image(image, stamp=next_stamp())
        try:
            return rig.send(msg, timeout=5.0)
        except AssertionError:
            return None
    wait_until(all_outputs, 60.0, interval=0.0, what="all four outputs of one frame")
    return rig


def random_image(height: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_label_info_is_latched_with_the_classes(rig):
    info = rig.node.label_info
    assert info.model_name == "lmanet_erfnet"
    assert info.checkpoint_id == "random-init"
    assert info.memory_length == 4
    assert [c.name for c in info.classes] == list(CITYSCAPES_CLASS_NAMES)
    assert [c.id for c in info.classes] == list(range(19))
    colors = [tuple(int(v) for v in rgb) for rgb in CITYSCAPES_COLORS]
    assert [(c.r, c.g, c.b) for c in info.classes] == colors


@pytest.mark.parametrize("encoding", imaging.SUPPORTED_ENCODINGS)
def test_every_encoding_is_segmented(rig, encoding):
    image = random_image(64, 128, seed=len(encoding))
    msg = make_image(image, encoding, stamp=next_stamp(), frame_id=f"cam_{encoding}")
    labels = rig.send(msg, outputs=("labels",))["labels"]
    assert (labels.encoding, labels.height, labels.width) == ("mono8", 64, 128)
    assert labels.header.frame_id == f"cam_{encoding}"
    assert pixels_of(labels).max() < 19


def test_row_padding_is_honoured(rig):
    image = random_image(64, 128, seed=7)
    padded = make_image(image, "rgb8", stamp=next_stamp(), row_padding=13)
    assert padded.step == 128 * 3 + 13
    out = rig.send(padded, outputs=("overlay", "labels"))
    expected = imaging.overlay(image, imaging.colorize(pixels_of(out["labels"]),
                                                       CITYSCAPES_COLORS), 0.5)
    assert np.array_equal(pixels_of(out["overlay"]), expected)


@pytest.mark.parametrize("height, width", [(67, 131), (64, 128), (97, 255), (128, 256), (8, 8)])
def test_outputs_have_the_input_size(rig, height, width):
    msg = make_image(random_image(height, width), "bgr8", stamp=next_stamp())
    out = rig.send(msg)
    for name, encoding in (("labels", "mono8"), ("color", "rgb8"), ("overlay", "rgb8"),
                           ("confidence", "mono8")):
        assert (out[name].height, out[name].width, out[name].encoding) == \
            (height, width, encoding), name


def test_headers_are_copied_unchanged(rig):
    msg = make_image(random_image(64, 128), stamp=0.0, frame_id="front_camera_optical")
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1200, 123456789  # not a float round trip
    out = rig.send(msg)
    for name, output in out.items():
        assert output.header.stamp.sec == 1200, name
        assert output.header.stamp.nanosec == 123456789, name
        assert output.header.frame_id == "front_camera_optical", name


def test_color_and_overlay_are_aligned_with_input_and_labels(rig):
    image = random_image(67, 131, seed=3)
    # a known pattern: a bright square on a dark background must appear where it was drawn
    image[10:30, 40:80] = 255
    out = rig.send(make_image(image, "rgb8", stamp=next_stamp()))
    labels = pixels_of(out["labels"])
    color = imaging.colorize(labels, CITYSCAPES_COLORS)
    assert np.array_equal(pixels_of(out["color"]), color)
    assert np.array_equal(pixels_of(out["overlay"]), imaging.overlay(image, color, 0.5))
    # pixel (r, c) of the overlay is made of input pixel (r, c): the square is where it was
    overlay = pixels_of(out["overlay"]).astype(int)
    assert np.all(overlay[10:30, 40:80] >= 127)
    confidence = pixels_of(out["confidence"])
    assert confidence.shape == labels.shape and confidence.max() > 0


def test_overlay_alpha_changes_at_run_time(rig):
    results = rig.ros.set_parameters(rig.node.fqn, {"overlay_alpha": 0.25})
    assert results[0].successful, results[0].reason
    try:
        image = random_image(64, 128, seed=11)
        out = rig.send(make_image(image, stamp=next_stamp()), outputs=("labels", "overlay"))
        color = imaging.colorize(pixels_of(out["labels"]), CITYSCAPES_COLORS)
        assert np.array_equal(pixels_of(out["overlay"]), imaging.overlay(image, color, 0.25))
    finally:
        rig.ros.set_parameters(rig.node.fqn, {"overlay_alpha": 0.5})


def test_fixed_network_input_size_keeps_outputs_at_the_input_size(rig):
    # one after the other, as `ros2 param set` does; the size applies once both are set
    for name, value in (("input_height", 64), ("input_width", 128)):
        result = rig.ros.set_parameters(rig.node.fqn, {name: value})[0]
        assert result.successful, result.reason
    try:
        image = random_image(67, 131, seed=9)
        out = rig.send(make_image(image, stamp=next_stamp()), outputs=("labels", "overlay"))
        assert (out["labels"].height, out["labels"].width) == (67, 131)
        color = imaging.colorize(pixels_of(out["labels"]), CITYSCAPES_COLORS)
        assert np.array_equal(pixels_of(out["overlay"]), imaging.overlay(image, color, 0.5))
    finally:
        result = rig.ros.set_parameters(rig.node.fqn, {"input_height": 0, "input_width": 0},
                                        atomic=True)[0]
        assert result.successful, result.reason


def _bad_inputs():
    good = make_image(random_image(16, 32), "rgb8")
    cases = {}

    def variant(name, **fields):
        msg = make_image(random_image(16, 32), "rgb8")
        for key, value in fields.items():
            setattr(msg, key, value)
        cases[name] = msg

    variant("step_shorter_than_row", step=32 * 3 - 1)
    variant("data_shorter_than_claimed", data=good.data[:-1])
    variant("zero_size", height=0, width=0, step=0, data=good.data[:0])
    variant("unsupported_encoding", encoding="32FC1")
    variant("empty_encoding", encoding="")
    variant("claimed_bytes_do_not_exist", height=16000, width=16000, step=48000)
    variant("absurd_size", height=2**31 - 1, width=2**31 - 1, step=2**32 - 1)
    variant("odd_width_yuv422", encoding="yuv422", width=31, step=62)
    return cases


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_counted_and_the_next_good_frame_processed(rig, case):
    before = rig.status(lambda v: True)[1]
    bad = BAD_INPUTS[case]
    set_header(bad, next_stamp(), "camera")
    rig.pub.publish(bad)
    good = make_image(random_image(64, 128), stamp=next_stamp())
    out = rig.send(good, outputs=("labels",))
    assert out["labels"].width == 128
    assert not any(stamp_of(m) == stamp_of(bad) for m in rig.outputs["labels"].messages)
    count = int(before["bad_inputs"])
    status, values = rig.status(lambda v: int(v["bad_inputs"]) > count)
    assert int(values["bad_inputs"]) == count + 1
    assert values["last_bad_input"]
    assert "bad input on" in rig.node.log()


def test_diagnostics_report_the_camera(rig):
    rig.send(make_image(random_image(64, 128), stamp=next_stamp()), outputs=("labels",))
    status, values = rig.status(lambda v: int(v["frames_processed"]) > 0)
    for key in ("input_rate_hz", "processing_ms_mean", "drops", "memory_fill", "resets",
                "bad_inputs", "topic", "latency_ms_mean", "queued", "input_delay_ms_max"):
        assert key in values, key
    assert values["topic"] == rig.node.input_topic("image")
    assert 1 <= int(values["memory_fill"]) <= 4
    assert int(values["frames_rendered"]) > 0  # colour and overlay are subscribed here


def send_compressed(rig, msg, outputs):
    stamp = stamp_of(msg)
    rig.compressed_pub.publish(msg)
    return {name: rig.outputs[name].wait_for(1, 30.0, lambda m: stamp_of(m) == stamp)[0]
            for name in outputs}


def input_line(rig, topic: str, described: str) -> str:
    """The node's log line that says what its input subscription is now."""
    return f"input now: camera 'image': {rig.node.input_topic(topic)} ({described})"


def test_compressed_input_after_switching_transport(rig):
    results = rig.ros.set_parameters(rig.node.fqn, {"input.transport": "compressed"})
    assert results[0].successful, results[0].reason
    try:
        rig.node.wait_log(input_line(rig, "image/compressed",
                                     "sensor_msgs/CompressedImage, reliable, keep all"))
        rig.compressed_pub = rig.ros.publisher(
            CompressedImage, rig.node.input_topic("image/compressed"), RELIABLE_ALL)
        for fmt in ("jpeg", "png"):
            image = random_image(67, 131, seed=5)
            out = send_compressed(rig, make_compressed(image, fmt, stamp=next_stamp()), OUTPUTS)
            assert (out["labels"].height, out["labels"].width) == (67, 131)
            if fmt == "png":  # lossless: the overlay is made of exactly these pixels
                color = imaging.colorize(pixels_of(out["labels"]), CITYSCAPES_COLORS)
                assert np.array_equal(pixels_of(out["overlay"]),
                                      imaging.overlay(image, color, 0.5))
        # corrupt and truncated data are bad inputs; the next good frame is processed
        count = int(rig.status(lambda v: True)[1]["bad_inputs"])
        jpeg = make_compressed(random_image(32, 32), "jpeg", stamp=next_stamp())
        for data in (jpeg.data[: len(jpeg.data) // 2], b"\xff\xd8garbage" * 10, b""):
            bad = make_compressed(random_image(8, 8), "jpeg", stamp=next_stamp())
            bad.data = type(jpeg.data)("B", bytes(data))
            rig.compressed_pub.publish(bad)
        out = send_compressed(rig, make_compressed(random_image(64, 128), "jpeg",
                                                   stamp=next_stamp()), ("labels",))
        assert out["labels"].width == 128
        rig.status(lambda v: int(v["bad_inputs"]) >= count + 3)
    finally:
        results = rig.ros.set_parameters(rig.node.fqn, {"input.transport": "raw"})
        assert results[0].successful


def test_input_qos_changes_are_logged(rig):
    try:
        assert rig.ros.set_parameters(rig.node.fqn, {"input.depth": 5})[0].successful
        rig.node.wait_log(input_line(rig, "image", "sensor_msgs/Image, reliable, depth 5"))
        assert rig.ros.set_parameters(rig.node.fqn, {"input.reliability": "best_effort"})[0] \
            .successful
        rig.node.wait_log(input_line(rig, "image", "sensor_msgs/Image, best_effort, depth 5"))
    finally:
        results = rig.ros.set_parameters(rig.node.fqn, {"input.reliability": "reliable",
                                                        "input.depth": 0}, atomic=True)
        assert results[0].successful, results[0].reason
    rig.node.wait_log(input_line(rig, "image", "sensor_msgs/Image, reliable, keep all"))
    rig.send(make_image(random_image(64, 128), stamp=next_stamp()), ("labels",))
