"""lmanet_node over real DDS with a delayed model (stf_delayed_erfnet, random weights): each
frame's labels and overlay come one frame late, with THAT frame's header copied, the overlay drawn
on THAT frame's image; the frame right after a reset is labelled at once and only once, the last
one before a reset never; the model's diagnostics state the delay."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from ros_helpers import Rig, make_image, pixels_of, stamp_of, wait_until
from lmanet_ros import imaging
from lmanet_ros.classes import CITYSCAPES_COLORS

pytestmark = pytest.mark.ros

RELIABLE_ALL = QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL,
                          reliability=ReliabilityPolicy.RELIABLE)


def test_labels_carry_the_previous_inputs_header(ros, node_factory):
    node = node_factory(params={"model": "stf_delayed_erfnet", "processing_mode": "all",
                                "input.reliability": "reliable", "input.depth": 0,
                                "diagnostics_period": 0.25})
    rig = Rig(ros, node, outputs=("labels", "overlay"), input_qos=RELIABLE_ALL)
    rng = np.random.default_rng(0)
    stamps = (1000.0 + 0.05 * i for i in itertools.count())
    # warm-up on frame_id "warmup" until the node renders overlays for our subscription
    wait_until(lambda: rig.pub.publish(make_image(rng.integers(0, 256, (32, 64, 3), np.uint8),
                                                  stamp=next(stamps), frame_id="warmup"))
               or len(rig.outputs["overlay"]), 60.0, interval=0.5, what="a first overlay")
    # a new frame_id resets the memory: frame 0 is labelled at once, frame k >= 1 with frame k+1
    images = [rng.integers(0, 256, (32, 64, 3), np.uint8) for _ in range(4)]
    sent = [make_image(image, stamp=next(stamps), frame_id="cam") for image in images]
    expected = [stamp_of(msg) for msg in sent[:3]]

    def outputs(name, count):
        return rig.outputs[name].wait_for(count, 60.0, lambda m: m.header.frame_id == "cam")
    for index, msg in enumerate(sent):
        rig.pub.publish(msg)
        if index != 1:  # frame 1 gives frame 0's labels again: not published
            outputs("labels", max(index, 1))
    # another frame_id: a reset, so frame 3 (the last before it) is never labelled
    rig.pub.publish(make_image(images[0], stamp=next(stamps), frame_id="end"))
    rig.outputs["labels"].wait_for(1, 60.0, lambda m: m.header.frame_id == "end")
    labels, overlays = outputs("labels", 3), outputs("overlay", 3)
    assert [stamp_of(m) for m in labels] == [stamp_of(m) for m in overlays] == expected
    for index, (label_msg, overlay_msg) in enumerate(zip(labels, overlays)):
        colors = imaging.colorize(np.ascontiguousarray(pixels_of(label_msg)), CITYSCAPES_COLORS)
        np.testing.assert_array_equal(pixels_of(overlay_msg),
                                      imaging.overlay(images[index], colors, 0.5))

    def model_values():
        for array_msg in reversed(list(rig.diagnostics.messages)):
            for status in array_msg.status:
                if status.name == f"{node.fqn}: model":
                    return {kv.key: kv.value for kv in status.values}
        return None
    assert wait_until(model_values, 10.0, what="the model's diagnostics")[
        "output_delay_frames"] == "1"


def test_lockstep_replay_refuses_a_delayed_node_by_its_label_info(ros, node_factory, tmp_path):
    """LabelInfo says output_delay_frames 1, so lock-step replay stops at once with a message
    pointing at offline evaluation, rather than timing out on the first frame."""
    from eval_helpers import IMAGE, frames, write_frames_bag
    from lmanet_ros.evaluation import ReplayError, ReplayOptions, replay_bag
    node = node_factory(params={"model": "stf_delayed_erfnet", "processing_mode": "all",
                                "input.reliability": "reliable", "input.depth": 0})
    bag = write_frames_bag(tmp_path / "bag", frames(2))
    options = ReplayOptions(bag=bag, remap={IMAGE: node.input_topic()}, lockstep=True,
                            rate=0.0, node_labels_topics=[node.topic("labels")],
                            startup_timeout=60.0)
    with pytest.raises(ReplayError, match=r"1 frame\(s\) late.*lmanet eval"):
        replay_bag(options)
