"""Shared fixtures and helpers of the training tests (test/training/) and of the ``lmanet train``
command tests (test/tools/test_train_cli.py): fake scenes in the ``lmanet synth`` layout too.

Import the fixtures into a test module to use them there:
``from training_helpers import data, erfnet_init, one_thread  # noqa: F401``.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lmanet_ros import training
from lmanet_ros.models import build_model, save_checkpoint

HEIGHT, WIDTH = 32, 64
# Classes of the fake scenes: sky on top, road below, a car box moving right by 4 px a frame.
SKY, ROAD, CAR = 10, 0, 13
COLOURS = {SKY: (70, 130, 180), ROAD: (128, 64, 128), CAR: (0, 0, 142)}


def scene(frame: int, sequence: int, height: int = HEIGHT, width: int = WIDTH):
    """(image, label) of one fake frame; pixel (0, 0) red = frame, (0, 1) red = sequence."""
    label = np.full((height, width), ROAD, np.uint8)
    label[:height // 2] = SKY
    x0 = (4 * frame + 8 * sequence) % (width - 12)
    label[height // 2:, x0:x0 + 12] = CAR
    label[-1, :] = 255  # a void row (the ego hood)
    image = np.zeros((height, width, 3), np.uint8)
    for cls, colour in COLOURS.items():
        image[label == cls] = colour
    image[..., 1] = np.arange(width, dtype=np.uint8)[None, :] * 2  # left-right asymmetric
    image[0, 0, 0], image[0, 1, 0] = frame, sequence
    return image, label


def write_synth_tree(root: Path, *, sequences: int = 2, frames: int = 8,
                     splits=("train", "val"), height: int = HEIGHT, width: int = WIDTH,
                     unlabelled=()) -> Path:
    """The ``lmanet synth`` layout: leftImg8bit/ and gtFine/ labelTrainIds per split/sequence."""
    for split_index, split in enumerate(splits):
        for s in range(sequences):
            index = 10 * split_index + s
            name = f"synth{index:05d}"
            image_dir = root / "leftImg8bit" / split / name
            label_dir = root / "gtFine" / split / name
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            for f in range(frames):
                image, label = scene(f, index, height, width)
                cv2.imwrite(str(image_dir / f"{name}_{f:06d}_leftImg8bit.png"), image[..., ::-1])
                if f not in unlabelled:
                    cv2.imwrite(str(label_dir / f"{name}_{f:06d}_gtFine_labelTrainIds.png"),
                                label)
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is as fast, and on a busy machine several are much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """2 train and 2 val sequences of 8 frames, 32x64: 8 targets per split (frames 4..7)."""
    return write_synth_tree(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def erfnet_init(tmp_path_factory) -> Path:
    """Random single-frame weights to start LMANet from (BN statistics randomised)."""
    torch.manual_seed(1)
    model = build_model("erfnet")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("init") / "erfnet.safetensors"
    save_checkpoint(model, path)
    return path


def read_log(out: Path) -> list[dict]:
    """The entries of a training run's JSON-lines log (one per epoch or stop), in order."""
    return [json.loads(line) for line in (out / training.LOG_NAME).read_text().splitlines()]


def checkpoint_state(out: Path) -> dict:
    """A training run's resumable checkpoint (model, optimizer, scheduler state, counters)."""
    return torch.load(out / training.CHECKPOINT_NAME, map_location="cpu", weights_only=True)


def train_config(data: Path, out: Path, **overrides) -> training.TrainConfig:
    """A one-epoch, quiet, validation-free :class:`TrainConfig` (erfnet unless ``model=``)."""
    settings = dict(model="erfnet", data=data, out=out, epochs=1, batch_size=2, workers=0,
                    progress=False, val_split=None)
    settings.update(overrides)
    return training.TrainConfig(**settings)
