"""Scores of a segmentation run: accuracy, temporal consistency, latency (numpy only, no ROS).

Conventions (what ``metrics.json`` and ``report.md`` mean):

- Labels are Cityscapes trainIds, ``0..K-1`` with K = 19 (:data:`NUM_EVAL_CLASSES`); ``255`` is
  void and ignored. Any other ground-truth value (``K..254``) is not a class either: it is
  ignored like void and counted as ``invalid_label_pixels`` (usually a labelIds topic read
  without ``--label-ids``).
- Accuracy comes from one confusion matrix over all labelled frames (rows: ground truth, columns:
  prediction). A prediction outside ``0..K-1`` on a labelled pixel is a miss of the true class.
- IoU of class c = TP / (TP + FP + FN). A class with no ground-truth pixel and no predicted pixel
  in the whole run has no IoU (NaN, ``null`` in JSON) and is left out of the mean; a class that is
  predicted but never in the ground truth has IoU 0 and counts. mIoU is the mean over the classes
  that have an IoU (the Cityscapes benchmark's rule, applied to the evaluated frames).
- Pixel accuracy = TP summed over classes / labelled (non-void) pixels.
- Temporal consistency is measured on consecutive evaluated frames of one stream: the flip rate
  is the share of pixels whose predicted class differs from the previous frame's, over all
  pixels, and over the *GT-stable* pixels only: those whose ground truth is the same valid class
  in both frames (a flip there is noise, not motion). Pairs across a scene cut (time going back,
  a size or frame_id change) are not compared. All rates are fractions in [0, 1].
- Latency percentiles use linear interpolation (``numpy.percentile``); throughput is frames per
  second of wall time.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lmanet_ros.stamps import ns_to_seconds

#: Number of Cityscapes classes scored (trainIds 0..18; training's logits add a void one).
NUM_EVAL_CLASSES = 19
#: Ground-truth value that marks a pixel without a label.
IGNORE_INDEX = 255
#: Latency percentiles reported, in percent.
PERCENTILES = (50, 90, 99)


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if gt.dtype != np.uint8 or pred.dtype != np.uint8:
        raise ValueError(f"labels must be uint8, got ground truth {gt.dtype} and prediction "
                         f"{pred.dtype}")


class ConfusionMatrix:
    """A (K, K) confusion matrix accumulated over frames, void ground truth ignored.

    Internally the full 256 x 256 table of (ground truth, prediction) byte pairs is counted with
    one ``np.bincount`` per frame (no masking, no per-pixel Python); the (K, K) matrix and the
    misses outside it are read from that table.
    """

    def __init__(self, num_classes: int = NUM_EVAL_CLASSES,
                 ignore_index: int = IGNORE_INDEX) -> None:
        """Start an empty matrix of ``num_classes`` classes (at most 255)."""
        if not 1 <= num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255, got {num_classes}")
        if not num_classes <= ignore_index <= 255:
            raise ValueError(f"ignore_index must be in {num_classes}..255 (not a class id), "
                             f"got {ignore_index}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._table = np.zeros((256, 256), dtype=np.int64)
        self.frames = 0

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame: ``gt`` and ``pred`` are (H, W) uint8 class ids of the same shape."""
        _check_pair(gt, pred)
        index = gt.astype(np.uint16).ravel()
        index <<= 8
        index |= pred.ravel()
        self._table += np.bincount(index, minlength=65536).reshape(256, 256)
        self.frames += 1

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add the counts of ``other`` (same number of classes) to this matrix."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different class counts")
        self._table += other._table
        self.frames += other.frames

    @property
    def matrix(self) -> np.ndarray:
        """(K, K) int64 counts, rows ground truth, columns prediction."""
        k = self.num_classes
        return self._table[:k, :k].copy()

    @property
    def gt_pixels(self) -> np.ndarray:
        """(K,) labelled pixels of each ground-truth class (predictions outside 0..K-1 included)."""
        return self._table[:self.num_classes].sum(axis=1)

    @property
    def labelled_pixels(self) -> int:
        """Pixels with a valid ground-truth class."""
        return int(self.gt_pixels.sum())

    @property
    def ignored_pixels(self) -> int:
        """Pixels whose ground truth is void."""
        return int(self._table[self.ignore_index].sum())

    @property
    def invalid_label_pixels(self) -> int:
        """Pixels whose ground truth is neither a class nor void (ignored too)."""
        rows = [r for r in range(self.num_classes, 256) if r != self.ignore_index]
        return int(self._table[rows].sum())

    def iou(self) -> np.ndarray:
        """(K,) float64 IoU per class; NaN where the class is neither in the GT nor predicted."""
        k = self.num_classes
        tp = np.diag(self._table)[:k].astype(np.float64)
        gt = self.gt_pixels.astype(np.float64)
        predicted = self._table[:k, :k].sum(axis=0).astype(np.float64)
        union = gt + predicted - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that have one; NaN when no class has one."""
        iou = self.iou()
        valid = ~np.isnan(iou)
        return float(iou[valid].mean()) if valid.any() else math.nan

    def pixel_accuracy(self) -> float:
        """Correct labelled pixels / labelled pixels; NaN without labelled pixels."""
        labelled = self.labelled_pixels
        if labelled == 0:
            return math.nan
        return float(np.diag(self._table)[:self.num_classes].sum() / labelled)


@dataclass
class FlipSample:
    """The flip rates of one frame against the previous frame of its stream."""

    stream: str
    index: int
    stamp_ns: int
    flip_rate: float
    flip_rate_gt_stable: float | None


class TemporalConsistency:
    """Share of pixels whose predicted class flips between consecutive frames of each stream."""

    def __init__(self, ignore_index: int = IGNORE_INDEX,
                 num_classes: int = NUM_EVAL_CLASSES) -> None:
        """Start with no stream seen."""
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self._previous: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self.pairs = 0
        self.pixels = 0
        self.flips = 0
        self.stable_pairs = 0
        self.stable_pixels = 0
        self.stable_flips = 0
        self.samples: list[FlipSample] = []

    def update(self, stream: str, pred: np.ndarray, gt: np.ndarray | None = None, *,
               continuous: bool = True, index: int = 0, stamp_ns: int = 0) -> FlipSample | None:
        """Compare ``pred`` with the stream's previous prediction; remember it for the next one.

        Args:
            stream: the stream (camera) the frame belongs to.
            pred: (H, W) uint8 predicted class ids.
            gt: (H, W) uint8 ground truth of the frame, or None (then no GT-stable rate).
            continuous: False when the frame does not follow the previous one in the scene
                (time went back, size or frame_id changed): nothing is compared.
            index: the frame's position in the run (kept in the sample, for plots).
            stamp_ns: the frame's header stamp in int nanoseconds (kept in the sample).

        Returns:
            The frame's flip rates, or None when there was nothing to compare with.
        """
        if gt is not None:
            _check_pair(gt, pred)
        previous = self._previous.get(stream)
        self._previous[stream] = (pred, gt)
        if previous is None or not continuous or previous[0].shape != pred.shape:
            return None
        prev_pred, prev_gt = previous
        changed = prev_pred != pred
        flips = int(np.count_nonzero(changed))
        self.pairs += 1
        self.pixels += pred.size
        self.flips += flips
        stable_rate = None
        if gt is not None and prev_gt is not None:
            stable = (gt == prev_gt) & (gt < self.num_classes)
            stable_pixels = int(np.count_nonzero(stable))
            stable_flips = int(np.count_nonzero(changed & stable))
            self.stable_pairs += 1
            self.stable_pixels += stable_pixels
            self.stable_flips += stable_flips
            stable_rate = stable_flips / stable_pixels if stable_pixels else None
        sample = FlipSample(stream, index, stamp_ns, flips / pred.size, stable_rate)
        self.samples.append(sample)
        return sample

    def reset_stream(self, stream: str) -> None:
        """Forget the stream's previous frame (the next one starts a new comparison)."""
        self._previous.pop(stream, None)

    @property
    def flip_rate(self) -> float:
        """Flipped pixels / compared pixels over every pair; NaN without pairs."""
        return self.flips / self.pixels if self.pixels else math.nan

    @property
    def flip_rate_gt_stable(self) -> float:
        """Flipped / compared pixels where the GT is the same valid class; NaN without any."""
        return self.stable_flips / self.stable_pixels if self.stable_pixels else math.nan

    def summary(self) -> dict:
        """Rates and counts as a JSON-ready dict (NaN as None)."""
        return {
            "flip_rate": nan_to_none(self.flip_rate),
            "flip_rate_gt_stable": nan_to_none(self.flip_rate_gt_stable),
            "consistency": nan_to_none(1.0 - self.flip_rate),
            "consistency_gt_stable": nan_to_none(1.0 - self.flip_rate_gt_stable),
            "pairs": self.pairs,
            "pixels": self.pixels,
            "gt_stable_pairs": self.stable_pairs,
            "gt_stable_pixels": self.stable_pixels,
        }


def latency_summary(samples_ms: Sequence[float] | np.ndarray) -> dict:
    """p50/p90/p99/max/mean of latencies in milliseconds (None each when there are none)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    keys = [f"p{p}" for p in PERCENTILES] + ["max", "mean"]
    if values.size == 0:
        return {**{key: None for key in keys}, "count": 0}
    out = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}
    out["max"] = float(values.max())
    out["mean"] = float(values.mean())
    out["count"] = int(values.size)
    return out


def throughput(frames: int, wall_s: float) -> float | None:
    """Frames per second of wall time (None for no time)."""
    return frames / wall_s if wall_s > 0 else None


def nan_to_none(value: float | None) -> float | None:
    """JSON has no NaN: map NaN (and None) to None, other values to float."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass
class ResetEvent:
    """A memory reset seen during a run."""

    stream: str
    index: int
    stamp_ns: int
    reason: str

    def summary(self) -> dict:
        """The event in ``metrics.json``: stream, index, stamp (seconds), reason."""
        return {"stream": self.stream, "index": self.index,
                "stamp": ns_to_seconds(self.stamp_ns), "reason": self.reason}


@dataclass
class RunScore:
    """Everything measured for one model over one run (offline eval or live scoring).

    Feed it frame by frame with :meth:`add`; :meth:`summary` gives the JSON-ready dict.
    """

    name: str
    class_names: Sequence[str]
    confusion: ConfusionMatrix = field(init=False)
    temporal: TemporalConsistency = field(init=False)
    latency_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    resets: list[ResetEvent] = field(default_factory=list)
    frames: int = 0
    labelled_frames: int = 0
    duplicates: int = 0
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        """Create the accumulators for ``len(class_names)`` classes."""
        self.confusion = ConfusionMatrix(len(self.class_names))
        self.temporal = TemporalConsistency(num_classes=len(self.class_names))

    def add(self, stream: str, pred: np.ndarray, gt: np.ndarray | None, *, stamp_ns: int,
            latency_ms: float | None = None, stages_ms: dict[str, float] | None = None,
            reset_reason: str | None = None, continuous: bool = True,
            duplicate: bool = False) -> FlipSample | None:
        """Score one frame; returns its flip sample (None for a stream's first frame).

        Args:
            stream: the frame's stream (camera topic).
            pred: (H, W) uint8 predicted class ids.
            gt: (H, W) uint8 ground-truth trainIds, or None for an unlabelled frame.
            stamp_ns: header stamp in int nanoseconds.
            latency_ms: the frame's latency, if measured.
            stages_ms: per-stage times in ms (e.g. preprocess, inference, postprocess).
            reset_reason: why the memory was cleared before this frame, or None.
            continuous: False across a scene cut (no flip comparison with the previous frame).
            duplicate: the frame repeated the previous stamp.
        """
        index = self.frames
        self.frames += 1
        self.duplicates += int(duplicate)
        if gt is not None:
            self.confusion.update(gt, pred)
            self.labelled_frames += 1
        if latency_ms is not None:
            self.latency_ms.append(float(latency_ms))
        for stage, value in (stages_ms or {}).items():
            self.stage_ms.setdefault(stage, []).append(float(value))
        if reset_reason is not None:
            self.resets.append(ResetEvent(stream, index, stamp_ns, reset_reason))
        return self.temporal.update(stream, pred, gt, continuous=continuous, index=index,
                                    stamp_ns=stamp_ns)

    def reset_counts(self) -> dict[str, int]:
        """Memory resets by reason."""
        counts: dict[str, int] = {}
        for event in self.resets:
            counts[event.reason] = counts.get(event.reason, 0) + 1
        return counts

    def accuracy(self) -> dict | None:
        """Accuracy as a JSON-ready dict, or None when no frame had labels."""
        if self.labelled_frames == 0:
            return None
        iou = self.confusion.iou()
        return {
            "miou": nan_to_none(self.confusion.miou()),
            "pixel_accuracy": nan_to_none(self.confusion.pixel_accuracy()),
            "per_class_iou": {name: nan_to_none(v) for name, v in zip(self.class_names, iou)},
            "classes_scored": int(np.count_nonzero(~np.isnan(iou))),
            "labelled_frames": self.labelled_frames,
            "labelled_pixels": self.confusion.labelled_pixels,
            "ignored_pixels": self.confusion.ignored_pixels,
            "invalid_label_pixels": self.confusion.invalid_label_pixels,
            "confusion_matrix": self.confusion.matrix.tolist(),
        }

    def summary(self) -> dict:
        """All scores of the run as a JSON-ready dict (fractions in [0, 1], times in ms / s)."""
        return {
            "frames": self.frames,
            "duplicates": self.duplicates,
            "accuracy": self.accuracy(),
            "temporal_consistency": self.temporal.summary(),
            "latency_ms": latency_summary(self.latency_ms),
            "stages_ms": {stage: latency_summary(v) for stage, v in self.stage_ms.items()},
            "throughput_fps": throughput(self.frames, self.wall_s),
            "wall_s": self.wall_s,
            "memory_resets": {
                "total": len(self.resets),
                "by_reason": self.reset_counts(),
                "events": [event.summary() for event in self.resets],
            },
        }
