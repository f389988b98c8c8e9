"""The inputs of ``lmanet bag``: video files and folders of images (with their label PNGs).

:func:`open_input` checks one input and returns a :class:`VideoInput` or a :class:`FolderInput`;
their ``frames(stride)`` yield ``(index, Frame)`` in order, ``index`` being the frame's position
in the input (0-based, before the stride), so that stamps can follow the input's own timing.

- A video is read by OpenCV (``cv2.VideoCapture``, FFmpeg); its frames per second and frame
  count are what the container says (either may be missing: ``None``).
- A folder holds images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, any case, not in sub-folders),
  taken in natural order of their names (``2.png`` before ``10.png``).
- A label folder holds single-channel 8-bit PNGs of class ids (Cityscapes trainIds, 255 void),
  matched to the images by file stem. Cityscapes names match too: the image suffix
  ``_leftImg8bit`` and the label suffix ``_gtFine_labelTrainIds`` are dropped before matching.
  Images without a label are kept (listed in ``unlabelled``); other files of the label folder
  (``*_color.png``, ...) are ignored. A label that is not single-channel 8-bit, or not the size
  of its image, is an :class:`InputError` when its frame is read.

Pixels: ``Frame.rgb`` is RGB ``(H, W, 3)`` uint8 (grey images replicated, alpha dropped, 16-bit
reduced to 8), ``Frame.label`` ``(H, W)`` uint8 or None.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

__all__ = ["Frame", "FolderInput", "IMAGE_SUFFIXES", "InputError", "VideoInput", "open_input"]

#: File suffixes read as images in a folder (compared in lower case).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
#: Name endings dropped before an image and a label are matched (Cityscapes' layout).
_IMAGE_TAG = "_leftImg8bit"
_LABEL_TAG = "_gtFine_labelTrainIds"
_DIGITS = re.compile(r"(\d+)")


class InputError(Exception):
    """An input that cannot be read as asked (missing, unreadable, empty, bad label); one line."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame of an input: ``rgb`` (H, W, 3) uint8, its ``label`` (H, W) uint8 class ids or
    None, and ``name`` (the image file, or ``video#index``) for messages."""

    name: str
    rgb: np.ndarray
    label: np.ndarray | None = None


def natural_key(name: str) -> tuple:
    """Sort key of a file name in natural order: runs of digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name))


def _match_key(stem: str, tag: str) -> str:
    """``stem`` without the Cityscapes ``tag`` at its end (the key images and labels share)."""
    return stem[:-len(tag)] if stem.endswith(tag) else stem


class VideoInput:
    """A video file read by OpenCV: ``fps`` and ``count`` as the container says (None when it
    does not), checked to have a readable first frame."""

    labelled = False
    unlabelled: tuple[str, ...] = ()

    def __init__(self, path: Path) -> None:
        self.path = path
        capture = self._open()
        try:
            fps = float(capture.get(cv2.CAP_PROP_FPS))
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            if not capture.read()[0]:
                raise InputError(f"{path}: the video has no readable frame")
        finally:
            capture.release()
        self.fps = fps if 0.0 < fps <= 1000.0 else None
        self.count = count if count > 0 else None

    def _open(self) -> cv2.VideoCapture:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # quiet FFmpeg: errors are ours
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise InputError(f"{self.path}: cannot read it as a video (OpenCV/FFmpeg)")
        return capture

    def frames(self, stride: int = 1) -> Iterator[tuple[int, Frame]]:
        """Every ``stride``-th frame from the first, as ``(index in the video, Frame)``; the
        others are skipped without decoding."""
        capture = self._open()
        try:
            index = 0
            while True:
                if index % stride:
                    if not capture.grab():
                        return
                else:
                    ok, bgr = capture.read()
                    if not ok:
                        return
                    yield index, Frame(f"{self.path.name}#{index}",
                                       cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            capture.release()


class FolderInput:
    """The images of a folder in natural order, each with its label from ``labels`` (a folder,
    or None: no labels); ``fps`` is None (a folder has no rate), ``count`` the image count."""

    fps = None

    def __init__(self, path: Path, labels: Path | None = None) -> None:
        self.path = path
        self.images = sorted((p for p in path.iterdir()
                              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                             key=lambda p: natural_key(p.name))
        if not self.images:
            raise InputError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        self.count = len(self.images)
        self.labels = _label_files(labels) if labels is not None else {}
        self.labelled = labels is not None
        self.unlabelled = tuple(p.name for p in self.images if self._label_of(p) is None)
        if self.labelled and len(self.unlabelled) == self.count:
            raise InputError(f"{labels}: no label PNG matches an image of {path} by file stem "
                             f"(e.g. {self.images[0].stem}.png)")

    def _label_of(self, image: Path) -> Path | None:
        return self.labels.get(_match_key(image.stem, _IMAGE_TAG))

    def frames(self, stride: int = 1) -> Iterator[tuple[int, Frame]]:
        """Every ``stride``-th image from the first, as ``(index in the folder, Frame)``."""
        for index in range(0, self.count, stride):
            image = self.images[index]
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"{image}: cannot read the image")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            label_path = self._label_of(image)
            label = None if label_path is None else _read_label(label_path, rgb.shape[:2])
            yield index, Frame(image.name, rgb, label)


def _label_files(folder: Path) -> dict[str, Path]:
    """The label PNGs of ``folder`` by match key; two files with one key are an error."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such label folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() == ".png":
            key = _match_key(path.stem, _LABEL_TAG)
            if key in files:
                raise InputError(f"{folder}: {files[key].name} and {path.name} are both the "
                                 f"label of '{key}'")
            files[key] = path
    return files


def _read_label(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The class ids of the label PNG at ``path``, checked to be (H, W) uint8 of ``size``."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise InputError(f"{path}: cannot read the label PNG")
    if label.ndim != 2 or label.dtype != np.uint8:
        channels = 1 if label.ndim == 2 else label.shape[2]
        raise InputError(f"{path}: a label must be single-channel 8-bit class ids, got "
                         f"{channels} channel(s) of {label.dtype}")
    if label.shape != tuple(size):
        raise InputError(f"{path}: the label is {label.shape[0]}x{label.shape[1]}, its image "
                         f"{size[0]}x{size[1]} (HxW)")
    return label


def open_input(path: Path, labels: Path | None = None) -> VideoInput | FolderInput:
    """The input at ``path``: a folder of images (with ``labels``, a folder of label PNGs, or
    None) or a video file.

    Raises:
        InputError: ``path`` is missing, not a readable video, an empty folder; labels given
            for a video, a missing label folder, or labels that match no image.
    """
    if path.is_dir():
        return FolderInput(path, labels)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if labels is not None:
        raise InputError(f"{path}: labels (--labels) go with a folder of images, not a video")
    return VideoInput(path)
