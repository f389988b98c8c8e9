"""What a synthetic bag holds besides the camera and labels: with a corruption recipe, the clean
version of every frame (``/camera/image_clean``) and the per-frame corruption log
(``/camera/corruption``, diagnostic_msgs/DiagnosticArray); the camera and label messages are the
same bytes as without them."""
from __future__ import annotations

import numpy as np
import pytest

from lmanet_ros.bags import DIAGNOSTIC_ARRAY, IMAGE, BagReader, BagWriter, image_cdr
from lmanet_ros.stamps import stamp_ns
from lmanet_ros.synthetic import FRAME_ID, IMAGE_TOPIC, LABEL_TOPIC, SynthSequence, generate
from lmanet_ros.synthetic.output import (CLEAN_IMAGE_TOPIC, CORRUPTION_STATUS,
                                         CORRUPTION_TOPIC)
from synthetic_helpers import H, W

FRAMES, SEQUENCES, SEED = 24, 2, 3


def _bag(tmp_path, corruption):
    return generate(tmp_path / corruption, frames=FRAMES, height=H, width=W,
                    sequences=SEQUENCES, seed=SEED, corruption=corruption, bag=BagWriter,
                    folder=False, show_progress=False).bag


def test_robot_bag_has_the_clean_frames_and_the_corruption_log(tmp_path):
    bag = _bag(tmp_path, "robot-v2")
    frames = [frame for k in range(SEQUENCES) for frame in SynthSequence(
        SEED + k, height=H, width=W, n_frames=FRAMES, corruption="robot-v2")]
    assert any(frame.corruptions for frame in frames)
    with BagReader(bag) as reader:
        topics = reader.topics
        assert topics[CLEAN_IMAGE_TOPIC] == (IMAGE, len(frames))
        assert topics[CORRUPTION_TOPIC] == (DIAGNOSTIC_ARRAY, len(frames))
        images = {r.stamp_ns: r for r in reader.images([IMAGE_TOPIC])}
        clean = list(reader.images([CLEAN_IMAGE_TOPIC]))
        log = [msg for _, _, _, msg in reader.messages([CORRUPTION_TOPIC])]
    assert [r.stamp_ns for r in clean] == sorted(images)
    for record, msg, frame in zip(clean, log, frames):
        assert record.frame_id == FRAME_ID and record.encoding == "rgb8"
        np.testing.assert_array_equal(record.image, frame.clean_image)
        np.testing.assert_array_equal(images[record.stamp_ns].image, frame.image)
        assert stamp_ns(msg.header) == record.stamp_ns and msg.header.frame_id == FRAME_ID
        (status,) = msg.status
        assert status.name == CORRUPTION_STATUS and status.hardware_id == "robot-v2"
        assert status.message == ",".join(frame.corruptions)


@pytest.mark.parametrize("corruption, extra", [("none", False), ("standard", True)])
def test_camera_and_labels_are_the_frames_bytes(tmp_path, corruption, extra):
    """Only topics are added: the camera and label messages are those of the frames."""
    bag = _bag(tmp_path, corruption)
    video = SynthSequence(SEED, height=H, width=W, n_frames=FRAMES, corruption=corruption)
    with BagReader(bag) as reader:
        assert (CLEAN_IMAGE_TOPIC in reader.topics, CORRUPTION_TOPIC in reader.topics) \
            == (extra, extra)
        raw = {topic: [(data, c) for c, _, data in reader.raw([topic])]
               for topic in (IMAGE_TOPIC, LABEL_TOPIC)}
        stamps = [r.stamp_ns for r in reader.images([IMAGE_TOPIC])]
    for i, frame in enumerate(video):
        assert bytes(raw[IMAGE_TOPIC][i][0]) == image_cdr(stamps[i], FRAME_ID, frame.image)
        assert bytes(raw[LABEL_TOPIC][i][0]) == image_cdr(stamps[i], FRAME_ID, frame.labels,
                                                          "mono8")
