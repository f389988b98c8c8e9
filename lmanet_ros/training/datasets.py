"""Clip datasets for training and validating LMANet: a synthetic folder or Cityscapes.

A sample is a clip of ``clip_length`` consecutive frames of one sequence that ends at a labelled
frame (the target); only the target's label is returned. ``clip_length`` is T + 1 for LMANet
with a memory of T frames, 1 for single-frame ERFNet.

Two folder layouts are read:

- the synthetic layout written by ``lmanet synth``:
  ``leftImg8bit/<split>/<seq>/<seq>_<frame:06d>_leftImg8bit.png`` for every frame and
  ``gtFine/<split>/<seq>/<seq>_<frame:06d>_gtFine_labelTrainIds.png`` (trainIds, 255 void) for
  the labelled ones;
- Cityscapes: ``leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` (the
  30-frame snippets) and ``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`` (the
  annotated frame, ``_000019``); labelIds become trainIds through
  :data:`lmanet_ros.classes.LABEL_ID_TO_TRAIN_ID` (cityscapesScripts' table).

Augmentation (training only) is the release's: horizontal flip with p = 0.5 and a translation by
an integer number of pixels in [-2, 2] on each axis, drawn once per clip and applied identically
to every frame and to the label (uncovered pixels: black image, void label). Draws depend only on
(seed, epoch, sample index), so they are the same with any number of data-loader workers or DDP
processes and after a resume. An optional working size resizes images (area / linear) and labels
(nearest) before augmentation.

Samples are ``(frames, label)``: ``frames`` uint8 (clip_length, 3, H, W) RGB, oldest first;
``label`` uint8 (H, W) trainIds with :data:`~lmanet_ros.classes.IGNORE_INDEX` for void.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lmanet_ros.classes import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID

__all__ = [
    "DATASET_KINDS", "MAX_TRANSLATION", "Clip", "ClipDataset", "DatasetError",
    "build_clip_dataset", "cityscapes_clips", "label_histogram", "synth_clips",
]

#: Names accepted by :func:`build_clip_dataset` (and ``lmanet train --dataset``).
DATASET_KINDS = ("synth", "cityscapes")
#: Largest translation of the augmentation, in pixels of the working size.
MAX_TRANSLATION = 2
#: Number of trainIds (classes 0..18); everything else in a label is void.
NUM_TRAIN_IDS = 19

_FRAME_RE = re.compile(r"^(?P<seq>.+)_(?P<frame>\d{6})_leftImg8bit\.png$")
_CS_LABEL_RE = re.compile(r"^(?P<seq>.+)_(?P<frame>\d{6})_gtFine_labelIds\.png$")
_SYNTH_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


class DatasetError(ValueError):
    """A dataset folder is missing, empty or inconsistent."""


@dataclass(frozen=True)
class Clip:
    """One sample: the frames of a clip (oldest first) and the label of its last frame.

    Attributes:
        frames: image paths, oldest first; the last one is the labelled frame.
        label: label image path of the last frame.
        sequence: the sequence name (``<city>_<seq>`` for Cityscapes).
        frame: the frame number of the labelled frame.
    """

    frames: tuple[Path, ...]
    label: Path
    sequence: str
    frame: int


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_label(path: Path) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"cannot read label {path}")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetError(f"label {path} must be a single-channel 8-bit image, got shape "
                           f"{label.shape} dtype {label.dtype}")
    return label


def _shift(array: np.ndarray, dy: int, dx: int, fill: int) -> np.ndarray:
    """Translate the first two axes by (dy, dx) pixels, filling the uncovered border."""
    if dy == 0 and dx == 0:
        return array
    out = np.full_like(array, fill)
    height, width = array.shape[:2]
    src_y = slice(max(0, -dy), min(height, height - dy))
    dst_y = slice(max(0, dy), min(height, height + dy))
    src_x = slice(max(0, -dx), min(width, width - dx))
    dst_x = slice(max(0, dx), min(width, width + dx))
    out[dst_y, dst_x] = array[src_y, src_x]
    return out


class ClipDataset(Dataset):
    """Clips of consecutive frames with the label of the last one (see the module docstring).

    Args:
        clips: the samples.
        label_ids: labels hold Cityscapes labelIds (converted to trainIds); otherwise trainIds.
        size: working (height, width), or None for the files' own size (which must then be the
            same for every file, so that samples batch).
        augment: apply the clip-wide flip and translation.
        seed: seed of the augmentation draws.
    """

    def __init__(self, clips: Sequence[Clip], *, label_ids: bool = False,
                 size: tuple[int, int] | None = None, augment: bool = False,
                 seed: int = 0) -> None:
        if len(clips) == 0:
            raise DatasetError("a clip dataset needs at least one clip")
        lengths = {len(clip.frames) for clip in clips}
        if len(lengths) != 1:
            raise DatasetError(f"clips of different lengths: {sorted(lengths)}")
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if size[0] <= 0 or size[1] <= 0:
                raise ValueError(f"size must be positive, got {size}")
        self.clips = list(clips)
        self.clip_length = lengths.pop()
        self.label_ids = bool(label_ids)
        self.size = size
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before creating the loader iterator)."""
        self.epoch = int(epoch)

    def augmentation(self, index: int) -> tuple[bool, int, int]:
        """The (flip, dy, dx) drawn for sample ``index`` in the current epoch."""
        if not self.augment:
            return False, 0, 0
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        flip = bool(rng.random() < 0.5)
        dy, dx = (int(v) for v in rng.integers(-MAX_TRANSLATION, MAX_TRANSLATION + 1, size=2))
        return flip, dy, dx

    def _resize(self, array: np.ndarray, nearest: bool) -> np.ndarray:
        if self.size is None or array.shape[:2] == self.size:
            return array
        height, width = self.size
        if nearest:
            interpolation = cv2.INTER_NEAREST
        elif height < array.shape[0] and width < array.shape[1]:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_LINEAR
        return cv2.resize(array, (width, height), interpolation=interpolation)

    def load_label(self, index: int) -> np.ndarray:
        """The label of sample ``index`` as trainIds (void 255), working size, no augmentation."""
        label = _read_label(self.clips[index].label)
        if self.label_ids:
            label = LABEL_ID_TO_TRAIN_ID[label]
        return self._resize(label, nearest=True)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clip = self.clips[index]
        flip, dy, dx = self.augmentation(index)
        frames = []
        for path in clip.frames:
            image = self._resize(_read_rgb(path), nearest=False)
            if flip:
                image = image[:, ::-1]
            frames.append(_shift(image, dy, dx, 0))
        label = self.load_label(index)
        if flip:
            label = label[:, ::-1]
        label = _shift(label, dy, dx, IGNORE_INDEX)
        shapes = {f.shape[:2] for f in frames}
        if len(shapes) != 1 or label.shape != frames[0].shape[:2]:
            raise DatasetError(f"clip ending at {clip.label} mixes sizes: frames {sorted(shapes)}, "
                               f"label {label.shape}")
        stacked = np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2))
        return torch.from_numpy(stacked), torch.from_numpy(np.ascontiguousarray(label))


def _check_future_frames(future_frames: int, clip_length: int) -> int:
    if not 0 <= future_frames < clip_length:
        raise ValueError(f"future_frames must be in [0, clip_length), got {future_frames}")
    return int(future_frames)


def _clip_numbers(target: int, clip_length: int, future_frames: int) -> range:
    """Frame numbers of the clip of ``target``, oldest first, the last ``future_frames`` after
    it."""
    return range(target - clip_length + 1 + future_frames, target + 1 + future_frames)


def _frames_by_sequence(image_root: Path) -> dict[str, dict[int, Path]]:
    """Map sequence name -> frame number -> image path for every ``*_leftImg8bit.png`` below."""
    sequences: dict[str, dict[int, Path]] = {}
    for path in image_root.rglob("*_leftImg8bit.png"):
        match = _FRAME_RE.match(path.name)
        if match is None:
            continue
        sequences.setdefault(match.group("seq"), {})[int(match.group("frame"))] = path
    return sequences


def _check_clip_length(clip_length: int) -> int:
    clip_length = int(clip_length)
    if clip_length < 1:
        raise ValueError(f"clip_length must be >= 1, got {clip_length}")
    return clip_length


def corrupted_frames(root: str | Path) -> dict[str, set[int]]:
    """Sequence name -> frame numbers whose image is corrupted, from ``root/sequences.json``
    (the per-frame corruption log ``lmanet synth`` writes); empty when there is no such file."""
    path = Path(root) / "sequences.json"
    if not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text())["runs"]
        return {sequence["name"]: {int(index) for index in sequence["corrupted_frames"]}
                for run in runs for sequence in run["sequences"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not an lmanet synth description ({exc})") from None


def synth_clips(root: str | Path, split: str, clip_length: int, *,
                first_target: int | None = None, target_stride: int = 1,
                hit_repeat: int = 1, future_frames: int = 0) -> list[Clip]:
    """Clips of the synthetic layout (``lmanet synth``) of one split.

    Every labelled frame whose ``clip_length - 1`` predecessors exist is a target, except frames
    before ``first_target`` (position in its sequence, 0-based; default ``clip_length - 1``), so
    that models with different clip lengths can be trained and validated on the same targets.
    ``target_stride`` keeps every n-th eligible target of each sequence. ``hit_repeat`` lists a
    target whose image is corrupted (:func:`corrupted_frames`) that many times, so that training
    sees the frames a memory has to bridge more often (1: as often as the others).
    ``future_frames`` ends each clip that many frames AFTER its target (a model whose output
    lags its input by that many frames, the delayed STF: 1); the target must then have them.
    """
    clip_length = _check_clip_length(clip_length)
    future_frames = _check_future_frames(future_frames, clip_length)
    if first_target is None:
        first_target = clip_length - 1
    if first_target < clip_length - 1:
        raise ValueError(f"first_target ({first_target}) must be >= clip_length - 1 "
                         f"({clip_length - 1}): earlier frames lack a full clip")
    if target_stride < 1:
        raise ValueError(f"target_stride must be >= 1, got {target_stride}")
    if hit_repeat < 1:
        raise ValueError(f"hit_repeat must be >= 1, got {hit_repeat}")
    root = Path(root)
    hits = corrupted_frames(root) if hit_repeat > 1 else {}
    image_root, label_root = root / "leftImg8bit" / split, root / "gtFine" / split
    for folder in (image_root, label_root):
        if not folder.is_dir():
            raise DatasetError(f"synthetic dataset: missing folder {folder}")
    clips = []
    for sequence, frames in sorted(_frames_by_sequence(image_root).items()):
        numbers = sorted(frames)
        eligible = []
        for position, number in enumerate(numbers):
            label = label_root / sequence / f"{sequence}_{number:06d}{_SYNTH_LABEL_SUFFIX}"
            if position < first_target or not label.is_file():
                continue
            wanted = _clip_numbers(number, clip_length, future_frames)
            if all(n in frames for n in wanted):
                eligible.append(Clip(tuple(frames[n] for n in wanted), label, sequence, number))
        for clip in eligible[::target_stride]:
            repeat = hit_repeat if clip.frame in hits.get(sequence, ()) else 1
            clips.extend([clip] * repeat)
    if not clips:
        raise DatasetError(f"synthetic dataset {root} split '{split}': no labelled frame with "
                           f"{clip_length - 1} preceding frames (first_target {first_target})")
    return clips


def cityscapes_clips(root: str | Path, split: str, clip_length: int, *,
                     future_frames: int = 0) -> list[Clip]:
    """Cityscapes clips: for every gtFine labelIds file of ``split``, ``clip_length`` frames of
    ``leftImg8bit_sequence`` ending ``future_frames`` after the annotated one (0: at it)."""
    clip_length = _check_clip_length(clip_length)
    future_frames = _check_future_frames(future_frames, clip_length)
    root = Path(root)
    image_root, label_root = root / "leftImg8bit_sequence" / split, root / "gtFine" / split
    for folder in (image_root, label_root):
        if not folder.is_dir():
            raise DatasetError(f"Cityscapes: missing folder {folder} (needs leftImg8bit_sequence "
                               "and gtFine)")
    clips = []
    for label in sorted(label_root.rglob("*_gtFine_labelIds.png")):
        match = _CS_LABEL_RE.match(label.name)
        if match is None:
            continue
        sequence, number = match.group("seq"), int(match.group("frame"))
        city = label.parent.name
        paths = []
        for n in _clip_numbers(number, clip_length, future_frames):
            path = image_root / city / f"{sequence}_{n:06d}_leftImg8bit.png"
            if not path.is_file():
                raise DatasetError(f"Cityscapes: {label.name} needs frame {path} of "
                                   "leftImg8bit_sequence, which is missing")
            paths.append(path)
        clips.append(Clip(tuple(paths), label, sequence, number))
    if not clips:
        raise DatasetError(f"Cityscapes: no *_gtFine_labelIds.png under {label_root}")
    return clips


def build_clip_dataset(kind: str, root: str | Path, split: str, *, clip_length: int,
                       size: tuple[int, int] | None = None, augment: bool = False,
                       seed: int = 0, first_target: int | None = None,
                       target_stride: int = 1, hit_repeat: int = 1,
                       future_frames: int = 0) -> ClipDataset:
    """The clip dataset of ``kind`` (``synth`` or ``cityscapes``) for one split.

    ``first_target``, ``target_stride`` and ``hit_repeat`` apply to the synthetic layout only
    (Cityscapes has one annotated frame per snippet and no corruption log); ``future_frames``
    to both (see :func:`synth_clips`).
    """
    if kind == "synth":
        clips = synth_clips(root, split, clip_length, first_target=first_target,
                            target_stride=target_stride, hit_repeat=hit_repeat,
                            future_frames=future_frames)
        return ClipDataset(clips, size=size, augment=augment, seed=seed)
    if kind == "cityscapes":
        clips = cityscapes_clips(root, split, clip_length, future_frames=future_frames)
        return ClipDataset(clips, label_ids=True, size=size, augment=augment, seed=seed)
    raise ValueError(f"dataset kind must be one of {DATASET_KINDS}, got '{kind}'")


def label_histogram(dataset: ClipDataset, *, max_labels: int | None = None) -> np.ndarray:
    """Pixel counts of trainIds 0..18 over the (unaugmented) labels of ``dataset``.

    ``max_labels`` reads only that many labels, evenly spread over the dataset.
    """
    count = len(dataset)
    if max_labels is not None and 0 < max_labels < count:
        indices = np.linspace(0, count - 1, max_labels).round().astype(int)
    else:
        indices = np.arange(count)
    histogram = np.zeros(NUM_TRAIN_IDS, dtype=np.int64)
    for index in indices:
        label = dataset.load_label(int(index))
        histogram += np.bincount(label[label < NUM_TRAIN_IDS].ravel(),
                                 minlength=NUM_TRAIN_IDS)[:NUM_TRAIN_IDS]
    return histogram
