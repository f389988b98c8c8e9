"""Writing synthetic sequences to disk: a Cityscapes-like PNG folder for ``lmanet train``, a
rosbag2 through an injected writer, and ``sequences.json`` describing every run.

The bag ``OUT/bag_<first sequence>`` holds ``/camera/image`` (sensor_msgs/msg/Image rgb8) and
``/camera/labels`` (mono8 Cityscapes trainIds, 255 void) with the same header stamps and frame_id
``camera``; the sequences follow one another with a gap of ``SEQUENCE_GAP_S``, so a memory-gap
reset triggers between them. With a corruption recipe (not ``none``) it also holds, for EVERY
frame and with the frame's header: ``/camera/image_clean`` (``CLEAN_IMAGE_TOPIC``), the frame
before corruption (rgb8; the convention: a topic ``X_clean`` is the clean reference of camera
``X``, not a camera), and ``/camera/corruption`` (``CORRUPTION_TOPIC``), the corruption log as a
``diagnostic_msgs/msg/DiagnosticArray`` of one status named ``corruption`` whose ``message`` is
the frame's kinds joined by ``,`` (``""``: a clean frame) and ``hardware_id`` the recipe name
(e.g. ``robot-v2``). Images and labels are the same with or without them. The folder follows
the layout read by ``lmanet train``:
``OUT/leftImg8bit/<split>/<seq>/<seq>_<frame:06d>_leftImg8bit.png`` and
``OUT/gtFine/<split>/<seq>/<seq>_<frame:06d>_gtFine_labelTrainIds.png``, the split being ``val``
for the held-out seeds (``HELDOUT_SEEDS``) and ``train`` otherwise. ``OUT/sequences.json``
describes every run written into OUT (seeds, size, rate, corruption recipe, per-frame corruption
log, scene parameters); several runs may share one OUT as long as their sequences differ.

This package does not depend on the bag layer: :func:`generate` takes a factory of
:class:`ImageBagWriter` (``lmanet_ros.bags.BagWriter`` is one).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lmanet_ros.progress import progress
from lmanet_ros.stamps import seconds_to_ns
from lmanet_ros.synthetic.corruption import recipe_name
from lmanet_ros.synthetic.sequence import (DEFAULT_RATE_HZ, HELDOUT_SEEDS, SEQUENCE_GAP_S,
                                           START_TIME_NS, TRAIN_SEEDS, SynthSequence,
                                           frame_stamps, sequence_name, split_for_seed)

__all__ = ["CLEAN_IMAGE_TOPIC", "CLEAN_SUFFIX", "CORRUPTION_STATUS", "CORRUPTION_TOPIC",
           "FRAME_ID", "IMAGE_TOPIC", "LABEL_TOPIC", "ImageBagWriter", "SynthError",
           "SynthOutput", "bag_path", "generate"]

IMAGE_TOPIC = "/camera/image"
LABEL_TOPIC = "/camera/labels"
FRAME_ID = "camera"
#: A topic ``X + CLEAN_SUFFIX`` holds the clean (uncorrupted) version of camera ``X``'s frames.
CLEAN_SUFFIX = "_clean"
CLEAN_IMAGE_TOPIC = IMAGE_TOPIC + CLEAN_SUFFIX
#: The per-frame corruption log (diagnostic_msgs/msg/DiagnosticArray), and its status name.
CORRUPTION_TOPIC = "/camera/corruption"
CORRUPTION_STATUS = "corruption"
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
#: Receive latency of the image messages: 8 ms plus up to 4 ms; labels follow 1 ms later.
_LATENCY_NS = (8_000_000, 4_000_000)
_LABEL_AFTER_NS = 1_000_000
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]
#: PNGs are compressed by this many threads (OpenCV releases the GIL) while the next frame
#: renders; at most _PNG_BACKLOG writes wait.
_PNG_THREADS = 1
_PNG_BACKLOG = 16


class SynthError(Exception):
    """The output cannot be written as asked (existing bag, sequence already generated...)."""


@dataclasses.dataclass
class SynthOutput:
    """What :func:`generate` wrote and how long it took."""

    bag: Path | None
    image_folders: list[Path]
    label_folders: list[Path]
    description: Path | None
    frames: int
    render_s: float
    total_s: float


class ImageBagWriter(Protocol):
    """The part of ``lmanet_ros.bags.BagWriter`` that :func:`generate` uses: a new bag at a path,
    opened, given image topics, written (stamps and log times in int nanoseconds), closed."""

    storage: str

    def open(self) -> None:
        """Create the bag (fails when it exists)."""

    def close(self) -> None:
        """Finish the bag; safe to call twice."""

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` with message type ``msgtype``."""

    def write_image(self, topic: str, stamp_ns: int, frame_id: str, array: np.ndarray,
                    encoding: str = "rgb8", *, log_time_ns: int | None = None) -> None:
        """Write ``array`` ((H, W, 3) rgb8 or (H, W) mono8) as a sensor_msgs/msg/Image."""

    def write_status(self, topic: str, stamp_ns: int, frame_id: str, *, name: str, message: str,
                     hardware_id: str = "", log_time_ns: int | None = None) -> None:
        """Write a diagnostic_msgs/msg/DiagnosticArray of one status."""


def bag_path(out: str | Path, seed: int) -> Path:
    """Where :func:`generate` writes the bag of a run whose first sequence has ``seed``."""
    return Path(out) / f"bag_{sequence_name(seed)}"


def _load_description(path: Path) -> dict:
    if not path.is_file():
        return {"generator": "lmanet_ros.synth", "runs": []}
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SynthError(f"{path} exists but cannot be read as JSON ({exc}); move it away") \
            from None
    if not isinstance(description, dict) or not isinstance(description.get("runs"), list):
        raise SynthError(f"{path} is not a description written by `lmanet synth`; move it away")
    return description


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array, _PNG):
        raise SynthError(f"cannot write {path}")


def generate(out: str | Path, *, frames: int, height: int, width: int, sequences: int = 1,
             seed: int = 0, corruption: str = "none", rate: float = DEFAULT_RATE_HZ,
             bag: Callable[[Path], ImageBagWriter] | None = None, folder: bool = True,
             show_progress: bool = True) -> SynthOutput:
    """Generate ``sequences`` sequences of ``frames`` frames of ``height`` x ``width`` pixels at
    ``rate`` Hz into ``out``; see the module docstring for the layout.

    Args:
        bag: makes the (not yet opened) bag writer for a path, e.g. ``BagWriter`` or
            ``functools.partial(BagWriter, storage="sqlite3")``; None writes no bag.
        folder: write the PNG folder and ``sequences.json``.

    Raises:
        ValueError: a bad argument (size, frames, seed, storage, corruption...).
        SynthError: the bag exists already, a sequence is already in the folder, or a file
            cannot be written.
        BagError: (from ``bag``'s writer) the bag cannot be created.
    """
    if bag is None and not folder:
        raise ValueError("nothing to write: bag and folder are both disabled")
    if sequences < 1:
        raise ValueError(f"sequences must be >= 1, got {sequences}")
    started = time.monotonic()
    out = Path(out)
    seeds = [seed + k for k in range(sequences)]

    def make(sequence_seed: int) -> SynthSequence:
        return SynthSequence(sequence_seed, height=height, width=width, n_frames=frames,
                             rate=rate, corruption=corruption)

    first = make(seeds[0])  # validates the arguments before anything is written
    recipe = recipe_name(corruption)
    names = [sequence_name(s) for s in seeds]
    bag_file = bag_path(out, seeds[0]) if bag is not None else None
    writer = bag(bag_file) if bag_file is not None else None  # checks its settings, writes nothing
    json_path = out / "sequences.json"
    description = _load_description(json_path) if folder else None
    if bag_file is not None and bag_file.exists():
        raise SynthError(f"{bag_file} exists already; remove it or pass --no-bag")
    image_dirs = [out / "leftImg8bit" / split_for_seed(s) / n for s, n in zip(seeds, names)]
    label_dirs = [out / "gtFine" / split_for_seed(s) / n for s, n in zip(seeds, names)]
    if folder:
        known = {seq["name"] for run in description["runs"] for seq in run["sequences"]}
        for name, image_dir in zip(names, image_dirs):
            if name in known or image_dir.exists():
                raise SynthError(f"sequence {name} is already in {out}; pick other seeds "
                                 "(--seed) or another OUT")
    out.mkdir(parents=True, exist_ok=True)

    render_s = 0.0
    run_sequences = []
    start_ns = START_TIME_NS
    bar = progress(sequences * frames, "synth") if show_progress else None
    pool = concurrent.futures.ThreadPoolExecutor(_PNG_THREADS) if folder else None
    pending: collections.deque[concurrent.futures.Future] = collections.deque()

    def write_png(path: Path, array: np.ndarray) -> None:
        pending.append(pool.submit(_write_png, path, array))
        while len(pending) > _PNG_BACKLOG or (pending and pending[0].done()):
            pending.popleft().result()  # re-raises a failed write

    try:
        if writer is not None:
            writer.open()
            writer.add_topic(IMAGE_TOPIC, "sensor_msgs/msg/Image")
            writer.add_topic(LABEL_TOPIC, "sensor_msgs/msg/Image")
            if recipe is not None:
                writer.add_topic(CLEAN_IMAGE_TOPIC, "sensor_msgs/msg/Image")
                writer.add_topic(CORRUPTION_TOPIC, DIAGNOSTIC_ARRAY)
        for k, (name, image_dir, label_dir) in enumerate(zip(names, image_dirs, label_dirs)):
            video = first if k == 0 else make(seeds[k])
            stamps = frame_stamps(frames, rate, start_ns, video.seed)
            latency = np.random.default_rng([video.seed, 7]).integers(
                0, _LATENCY_NS[1], frames) + _LATENCY_NS[0]
            if folder:
                image_dir.mkdir(parents=True)
                label_dir.mkdir(parents=True)
            for index in range(frames):
                tick = time.perf_counter()
                frame = video.frame(index)
                render_s += time.perf_counter() - tick
                stamp = int(stamps[index])
                if writer is not None:
                    log = stamp + int(latency[index])
                    writer.write_image(IMAGE_TOPIC, stamp, FRAME_ID, frame.image, "rgb8",
                                       log_time_ns=log)
                    writer.write_image(LABEL_TOPIC, stamp, FRAME_ID, frame.labels, "mono8",
                                       log_time_ns=log + _LABEL_AFTER_NS)
                    if recipe is not None:
                        writer.write_image(CLEAN_IMAGE_TOPIC, stamp, FRAME_ID, frame.clean_image,
                                           "rgb8", log_time_ns=log + 2 * _LABEL_AFTER_NS)
                        writer.write_status(CORRUPTION_TOPIC, stamp, FRAME_ID,
                                            name=CORRUPTION_STATUS,
                                            message=",".join(frame.corruptions),
                                            hardware_id=recipe,
                                            log_time_ns=log + 3 * _LABEL_AFTER_NS)
                if folder:
                    stem = f"{name}_{index:06d}"
                    write_png(image_dir / f"{stem}_leftImg8bit.png",
                              cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
                    write_png(label_dir / f"{stem}_gtFine_labelTrainIds.png", frame.labels)
                if bar is not None:
                    bar.update(1)
            log_entry = video.corruption_log
            run_sequences.append({
                "name": name, "seed": video.seed, "split": split_for_seed(video.seed),
                "frames": frames, "first_stamp_ns": int(stamps[0]),
                "last_stamp_ns": int(stamps[-1]),
                "corrupted_frames": {str(i): list(kinds) for i, kinds in enumerate(log_entry)
                                     if kinds},
                "scene": video.describe()["scene"],
            })
            start_ns = int(stamps[-1]) + seconds_to_ns(SEQUENCE_GAP_S)
        while pending:
            pending.popleft().result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()

    json_out = None
    if folder:
        description["runs"].append({
            "created_by": "lmanet synth",
            "base_seed": seed, "sequences": run_sequences, "size": [height, width],
            "rate_hz": rate, "frames_per_sequence": frames, "corruption": corruption,
            "corruption_recipe": recipe,
            "sequence_gap_s": SEQUENCE_GAP_S,
            "bag": str(bag_file.relative_to(out)) if writer is not None else None,
            "storage": writer.storage if writer is not None else None,
            "topics": {"image": IMAGE_TOPIC, "labels": LABEL_TOPIC, "frame_id": FRAME_ID,
                       **({"clean_image": CLEAN_IMAGE_TOPIC, "corruption": CORRUPTION_TOPIC}
                          if recipe is not None else {})},
            "label_format": "Cityscapes trainIds, 255 void",
            "train_seeds": [TRAIN_SEEDS.start, TRAIN_SEEDS.stop],
            "heldout_seeds": [HELDOUT_SEEDS.start, HELDOUT_SEEDS.stop],
        })
        _write_json(json_path, description)
        json_out = json_path
    elif bag_file is not None:
        # Without a folder the run is still described, next to the bag.
        _write_json(bag_file.with_name(bag_file.name + ".json"), {
            "generator": "lmanet_ros.synth", "base_seed": seed, "sequences": run_sequences,
            "size": [height, width], "rate_hz": rate, "corruption": corruption,
            "corruption_recipe": recipe})
        json_out = bag_file.with_name(bag_file.name + ".json")
    return SynthOutput(bag=bag_file, image_folders=image_dirs if folder else [],
                       label_folders=label_dirs if folder else [], description=json_out,
                       frames=frames * sequences, render_s=render_s,
                       total_s=time.monotonic() - started)
