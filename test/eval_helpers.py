"""Bags and stand-ins shared by the evaluation tests (test/evaluation) and the tests of the
`lmanet eval` / `replay` / `score` commands (test/tools). Import as ``from eval_helpers import``.

Two kinds of bags: a toy street whose red channel is the trainId (:func:`write_scene_bag`, with
an :func:`identity` network that scores it perfectly), and textured frames with a moving square
(:func:`frames`, :func:`write_frames_bag`) for the runs through a real network and a node.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from lmanet_ros.bags import BagWriter
from lmanet_ros.classes import CITYSCAPES_LABELS
from lmanet_ros.pipeline import Result, SegmentationPipeline, StageTimes

T0 = 1_700_000_000_000_000_000
PERIOD = 1_000_000_000 // 17
IMAGE, LABELS = "/camera/image", "/camera/labels"
#: Size of the toy street frames.
H, W = 32, 64
TRAIN_TO_LABEL_ID = {label.train_id: label.id for label in CITYSCAPES_LABELS
                     if label.train_id != 255 and label.id >= 0}


def scene(i: int, height: int = H, width: int = W) -> tuple[np.ndarray, np.ndarray]:
    """Frame i of a toy street: (RGB image, trainIds). The red channel is the trainId."""
    labels = np.zeros((height, width), np.uint8)          # road
    labels[: height // 3] = 10                            # sky
    labels[height // 3: height // 2] = 2                  # building
    x = (4 * i) % (width - width // 4)
    labels[height // 2: height // 2 + height // 4, x: x + width // 4] = 13   # a car driving by
    labels[-2:] = 255                                     # ego hood: void
    image = np.stack([labels, labels * 7, np.full_like(labels, 90)], axis=2)  # uint8 wraps
    return image.astype(np.uint8), labels


def write_scene_bag(path, *, n=6, storage="mcap", topics=(IMAGE,), labels=True,
                    label_first=False, stamps=None, label_ids=False, size=(H, W)):
    """A bag of n toy street frames per topic (labels for the first topic); recording times
    increase even where the stamps go back, as a recorder's clock does."""
    stamps = list(stamps) if stamps is not None else [T0 + i * PERIOD for i in range(n)]
    with BagWriter(path, storage=storage) as bag:
        for i, stamp in enumerate(stamps):
            image, gt = scene(i, *size)
            if label_ids:
                lut = np.zeros(256, np.uint8)
                for train, label_id in TRAIN_TO_LABEL_ID.items():
                    lut[train] = label_id
                gt = lut[gt]                                # void 255 -> 0 (unlabeled)
            records = [(topic, image) for topic in topics]
            if labels:
                records.insert(0 if label_first else 1, (LABELS, gt))
            for k, (topic, array) in enumerate(records):
                bag.write_image(topic, stamp, "cam", array, "mono8" if array.ndim == 2 else "rgb8",
                                log_time_ns=T0 + i * PERIOD + 1_000_000 + k * 1000)
    return path


def load(out):
    """The metrics.json of an evaluation directory."""
    return json.loads((out / "metrics.json").read_text())


def expected_gt_pixels(n, stride=1):
    """Labelled (non-void) pixels of the toy street frames 0, stride, ... < n."""
    return sum(int(np.count_nonzero(scene(i)[1] != 255)) for i in range(0, n, stride))


@pytest.fixture
def identity(monkeypatch):
    """Replace the network by a perfect one: the prediction is the image's red channel (the
    memory rules still apply: tests of the tool need not wait for the network)."""
    def process(self, frames, *, want_confidence=False):
        out = []
        for frame in frames:
            state = self._state(frame.stream)
            admission = state.admit(frame.stamp_ns, frame.image.shape[:2], frame.frame_id,
                                    self.policy)
            out.append(Result(frame.stream, np.ascontiguousarray(frame.image[..., 0]), None,
                              admission.reset_reason, admission.duplicate, 1, 1,
                              StageTimes(0.1, 1.0, 0.1)))
        return out
    monkeypatch.setattr(SegmentationPipeline, "process", process)
    monkeypatch.setattr(SegmentationPipeline, "warmup", lambda self, h, w: None)


def interrupt_at_call(monkeypatch, n: int) -> None:
    """Make the ``n``-th call of ``SegmentationPipeline.process`` raise KeyboardInterrupt (Ctrl-C
    during frame n: frames 1..n-1 are done)."""
    original = SegmentationPipeline.process
    calls = {"n": 0}

    def interrupted(self, frames, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(self, frames, **kwargs)

    monkeypatch.setattr(SegmentationPipeline, "process", interrupted)


#: Size of the textured frames.
FRAME_H, FRAME_W = 64, 128
#: Textured frames per bag.
N = 10


def frames(n=N):
    """Textured frames with a bright square moving across (enough for a varied prediction)."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (FRAME_H, FRAME_W, 3)).astype(np.uint8)
    out = []
    for i in range(n):
        image = np.roll(base, 3 * i, axis=1).copy()
        image[20:44, 8 * i: 8 * i + 24] = (250, 240, 30)
        out.append(image)
    return out


def write_frames_bag(path, images, labels=None, storage="mcap"):
    """A bag of ``images`` (and mono8 ``labels``) at 17 Hz, recorded 1 (2) ms after the stamp."""
    with BagWriter(path, storage=storage) as bag:
        for i, image in enumerate(images):
            stamp = T0 + i * PERIOD
            bag.write_image(IMAGE, stamp, "cam", image, "rgb8", log_time_ns=stamp + 10**6)
            if labels is not None:
                bag.write_image(LABELS, stamp, "cam", labels[i], "mono8",
                                log_time_ns=stamp + 2 * 10**6)
    return path
