"""Accuracy under camera corruption: hit frames, clean frames and each kind, beside references.

A bag may carry, next to camera ``X``, its corruption log and the clean version of its frames
(``lmanet synth --corruption ...`` writes both, :mod:`lmanet_ros.synthetic.output`):

- the log: ``diagnostic_msgs/msg/DiagnosticArray`` on ``<namespace of X>/corruption`` (e.g.
  ``/camera/corruption`` for ``/camera/image``), one message per frame with the frame's header
  stamp and a status named ``corruption`` whose ``message`` lists the kinds (``"wiper"``,
  ``"dropout,glare"``; ``""``: a clean frame) and whose ``hardware_id`` names the recipe;
- the clean versions: images on ``X_clean`` with the frames' stamps. By convention a topic
  ``X_clean`` next to ``X`` is the clean reference of camera ``X``, never a camera itself
  (:func:`camera_topics` drops it from the default image topics).

Scores (per model, mIoU from one :class:`lmanet_ros.metrics.ConfusionMatrix` per group): over
the bag, on hit frames (log not empty), on clean frames and per kind (the hit frames of that
kind; a frame of several kinds counts for each). Only frames of the labelled camera (the first
image topic) whose stamp is in the log are grouped; the others are counted as ``unlogged``.

References, from the run's *baseline*: the first single-frame model evaluated (else the first
model):

- ``clean_version``: the baseline on the clean version of each hit frame (its memory, if any,
  emptied before each one), when the bag has the clean topic;
- ``last_clean_oracle``: the baseline's prediction of the most recent unhit frame of the same
  camera since the last memory reset of the baseline (a new sequence, a gap), scored against the
  current frame's labels; a hit frame with no such frame has no oracle (left out, counted).

On clean frames both references are the baseline's own prediction (the clean version is the
frame, the last clean frame is the frame itself), so their ``bag`` figure is what the bag would
score had the hit frames been seen clean, or had the camera repeated its last clean frame.

Memory check (each temporal model): the same network (a second pipeline, same weights and memory
length) whose memory holds only the current frame: per frame ``reset``, then the frame twice, the
second result scored (:func:`memory_check_labels`). Duplicating a memory entry does not change
the joint-softmax attention, so this equals a memory of T copies of the current frame. The share
of the hit-frame gain over the baseline that disappears, ``(model - check) / (model - baseline)``,
credits the gain to the past frames when it reaches ``MEMORY_CREDIT`` (no verdict for a gain
under ``MIN_CREDITED_GAIN``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lmanet_ros.bags import (DIAGNOSTIC_ARRAY, IMAGE_TYPES, BagReader, decode_message,
                             header_of, typestore)
from lmanet_ros.metrics import NUM_EVAL_CLASSES, ConfusionMatrix, nan_to_none
from lmanet_ros.pipeline import Frame, Result, SegmentationPipeline
from lmanet_ros.stamps import stamp_ns
from lmanet_ros.synthetic.corruption import CORRUPTION_KINDS, ROBOT_KINDS
from lmanet_ros.synthetic.output import CLEAN_SUFFIX, CORRUPTION_STATUS

from .options import EvalError

__all__ = ["AUTO", "MEMORY_CREDIT", "MIN_CREDITED_GAIN", "CorruptionLog", "CorruptionScorer",
           "GroupScores", "baseline_index", "camera_topics", "memory_check_labels",
           "read_clean_images", "read_corruption_log", "resolve_topics"]

#: ``clean_topic`` / ``corruption_topic`` value: the conventional topic when the bag has it.
AUTO = "auto"
#: Share of the hit-frame gain the memory check must remove for the gain to be credited to the
#: memory (issue 12's pre-registered criterion).
MEMORY_CREDIT = 0.7
#: Smallest hit-frame gain (mIoU fraction) the memory check credits or not: below it the share
#: removed is reported but no verdict is given (a ratio over a tiny gain says nothing).
MIN_CREDITED_GAIN = 0.01
#: Order of the kinds in the reports (kinds not listed follow in order of appearance).
KNOWN_KINDS: tuple[str, ...] = (*ROBOT_KINDS, *CORRUPTION_KINDS)


def camera_topics(topics: Iterable[str]) -> list[str]:
    """``topics`` without the clean references (``X_clean`` where ``X`` is among them)."""
    topics = list(topics)
    present = set(topics)
    return [t for t in topics
            if not (t.endswith(CLEAN_SUFFIX) and t[:-len(CLEAN_SUFFIX)] in present)]


def _conventional(camera: str) -> tuple[str, str]:
    """(clean topic, corruption topic) of ``camera`` by the module's convention."""
    namespace = camera.rstrip("/").rsplit("/", 1)[0]
    return camera + CLEAN_SUFFIX, f"{namespace}/{CORRUPTION_STATUS}"


def resolve_topics(reader: BagReader, camera: str, clean_topic: str | None,
                   corruption_topic: str | None) -> tuple[str | None, str | None]:
    """The (clean, corruption) topics in use for ``camera``: ``AUTO`` = the conventional topic
    when the bag has it (none for a camera that is itself a clean reference), None = off, else
    the topic given (it must exist with the right type). The clean topic needs the log.

    Raises:
        EvalError: a given topic is missing or of the wrong type; a clean topic without a log.
    """
    topics = reader.topics
    auto_clean, auto_log = _conventional(camera)
    is_reference = camera.endswith(CLEAN_SUFFIX) and camera[:-len(CLEAN_SUFFIX)] in topics
    chosen = []
    for given, auto, types, what in ((clean_topic, auto_clean, IMAGE_TYPES, "clean image"),
                                     (corruption_topic, auto_log, (DIAGNOSTIC_ARRAY,),
                                      "corruption log")):
        if given == AUTO:
            chosen.append(auto if not is_reference and topics.get(auto, ("",))[0] in types
                          else None)
        elif given is None:
            chosen.append(None)
        elif given not in topics or topics[given][0] not in types:
            found = topics[given][0] if given in topics else "no such topic"
            raise EvalError(f"{what} topic '{given}' is not usable in {reader.path} ({found}; "
                            f"needed: {' or '.join(types)})")
        else:
            chosen.append(given)
    clean, log = chosen
    if clean is not None and log is None:
        if clean_topic != AUTO:
            raise EvalError(f"the clean topic '{clean}' needs a corruption log (which frames "
                            "are hit): give --corruption-topic")
        clean = None
    return clean, log


@dataclass
class CorruptionLog:
    """The per-frame corruption log of a camera: ``kinds[stamp_ns]`` = the kinds applied
    (empty tuple: a clean frame); ``recipe`` from the statuses' hardware_id ("" if none)."""

    topic: str
    recipe: str
    kinds: dict[int, tuple[str, ...]]

    def hit_stamps(self) -> set[int]:
        """Stamps of the frames hit by at least one kind."""
        return {stamp for stamp, kinds in self.kinds.items() if kinds}


def read_corruption_log(reader: BagReader, topic: str) -> CorruptionLog:
    """Read a DiagnosticArray corruption log (see the module doc); the status named
    ``corruption`` of each message (else its first status) gives the kinds."""
    kinds: dict[int, tuple[str, ...]] = {}
    recipes: set[str] = set()
    for _, _, _, msg in reader.messages([topic]):
        statuses = [s for s in msg.status if s.name == CORRUPTION_STATUS] or list(msg.status)
        if not statuses:
            continue
        names = (k.strip() for k in statuses[0].message.split(","))
        kinds[stamp_ns(msg.header)] = tuple(k for k in names if k)
        recipes.add(statuses[0].hardware_id)
    return CorruptionLog(topic, ",".join(sorted(r for r in recipes if r)), kinds)


def read_clean_images(reader: BagReader, topic: str, stamps: set[int]) -> dict[int, np.ndarray]:
    """The (H, W, 3) uint8 RGB images of ``topic`` whose header stamp is in ``stamps`` (only
    those are decoded; grey images made RGB)."""
    store = typestore()
    images: dict[int, np.ndarray] = {}
    for connection, _, data in reader.raw([topic]):
        stamp = header_of(data, connection.msgtype)[0]
        if stamp not in stamps:
            continue
        pixels, _ = decode_message(connection.msgtype,
                                   store.deserialize_cdr(data, connection.msgtype))
        images[stamp] = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, 2)
    return images


#: Stream-name suffix of the memory check's stream in a model's pipeline.
MEMORY_CHECK_SUFFIX = "#memory-check"


def memory_check_labels(pipeline: SegmentationPipeline, frame: Frame) -> np.ndarray:
    """(H, W) uint8 labels of ``frame`` by a temporal pipeline whose memory holds only this
    frame: on a stream of its own (``<stream>#memory-check``, so the camera's memory is left
    alone), reset, the frame processed twice, the second result returned (for a delayed model a
    repeat: the fused labels of this same frame)."""
    frame = dataclasses.replace(frame, stream=frame.stream + MEMORY_CHECK_SUFFIX)
    pipeline.reset(frame.stream)
    return pipeline.process([frame, frame])[1].labels


def baseline_index(pipelines: Sequence[SegmentationPipeline]) -> int:
    """Index of the run's baseline: the first single-frame model, else the first model."""
    temporal = [p.info.temporal for p in pipelines]
    return temporal.index(False) if False in temporal else 0


def _order(kinds: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(kinds))
    return [k for k in KNOWN_KINDS if k in seen] + [k for k in seen if k not in KNOWN_KINDS]


def _miou(matrix: ConfusionMatrix) -> float | None:
    return nan_to_none(matrix.miou()) if matrix.frames else None


@dataclass
class GroupScores:
    """One confusion matrix per group of frames: bag, hit, clean and each kind."""

    num_classes: int = NUM_EVAL_CLASSES
    groups: dict[str, ConfusionMatrix] = field(default_factory=dict)
    kinds: dict[str, ConfusionMatrix] = field(default_factory=dict)

    def _matrix(self, table: dict[str, ConfusionMatrix], name: str) -> ConfusionMatrix:
        if name not in table:
            table[name] = ConfusionMatrix(self.num_classes)
        return table[name]

    def add(self, gt: np.ndarray, pred: np.ndarray, kinds: Sequence[str]) -> None:
        """Score one frame ((H, W) uint8 ``gt`` and ``pred``) hit by ``kinds`` (empty: clean)."""
        for group in ("bag", "hit" if kinds else "clean"):
            self._matrix(self.groups, group).update(gt, pred)
        for kind in kinds:
            self._matrix(self.kinds, kind).update(gt, pred)

    def miou(self, group: str) -> float | None:
        """mIoU (fraction) of ``bag``, ``hit`` or ``clean``; None without frames."""
        matrix = self.groups.get(group)
        return _miou(matrix) if matrix is not None else None

    def summary(self) -> dict:
        """``{bag, hit, clean, kinds: {kind: mIoU}, frames: {bag, hit, clean, kinds}}``."""
        order = _order(self.kinds)
        groups = ("bag", "hit", "clean")
        return {**{g: self.miou(g) for g in groups},
                "kinds": {k: _miou(self.kinds[k]) for k in order},
                "frames": {**{g: self.groups[g].frames if g in self.groups else 0
                              for g in groups},
                           "kinds": {k: self.kinds[k].frames for k in order}}}


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


class CorruptionScorer:
    """Scores every model of an offline evaluation by corruption group, with the baseline's
    references and the temporal models' memory checks (see the module doc). Feed each frame of
    the labelled camera with :meth:`add`; :meth:`annotate` adds the results to the payload."""

    def __init__(self, log: CorruptionLog, *, camera: str, clean_topic: str | None,
                 labels: Sequence[str], pipelines: Sequence[SegmentationPipeline],
                 clean_images: dict[int, np.ndarray] | None = None,
                 checks: dict[int, SegmentationPipeline] | None = None) -> None:
        """``labels`` and ``pipelines``: the evaluated models in order; ``checks``: the pipeline
        to run the memory check on, per index of a temporal model (its own); ``clean_images``:
        stamp -> clean RGB."""
        self.log, self.camera, self.clean_topic = log, camera, clean_topic
        self.labels = list(labels)
        self.baseline = baseline_index(pipelines)
        self.reference = pipelines[self.baseline]
        self.clean_images = clean_images
        self.checks = dict(checks or {})
        self.models = [GroupScores() for _ in pipelines]
        self.check_scores = {index: GroupScores() for index in self.checks}
        self.clean_version = GroupScores() if clean_images is not None else None
        self.oracle = GroupScores()
        self.counts: dict[str, int] = {"frames": 0, "hit": 0, "clean": 0, "unlogged": 0,
                                       "no_oracle": 0, "no_clean_version": 0}
        self.kind_frames: dict[str, int] = {}
        self._last_clean: np.ndarray | None = None

    def add(self, frame: Frame, gt: np.ndarray | None, results: Sequence[Result]) -> None:
        """One frame of the camera (as given to the pipelines), its labels (or None) and every
        model's result, in model order."""
        base = results[self.baseline]
        if base.reset_reason is not None:
            self._last_clean = None
        kinds = self.log.kinds.get(frame.stamp_ns)
        if kinds is None:
            self.counts["unlogged"] += 1
            return
        self.counts["frames"] += 1
        self.counts["hit" if kinds else "clean"] += 1
        for kind in kinds:
            self.kind_frames[kind] = self.kind_frames.get(kind, 0) + 1
        if gt is not None:
            self._score(frame, gt, kinds, results)
        if not kinds:
            self._last_clean = base.labels

    def _score(self, frame: Frame, gt: np.ndarray, kinds: tuple[str, ...],
               results: Sequence[Result]) -> None:
        for scores, result in zip(self.models, results):
            scores.add(gt, result.labels, kinds)
        base = results[self.baseline].labels
        if not kinds:
            self.oracle.add(gt, base, kinds)
            if self.clean_version is not None:
                self.clean_version.add(gt, base, kinds)
        else:
            if self._last_clean is None:
                self.counts["no_oracle"] += 1
            else:
                self.oracle.add(gt, self._last_clean, kinds)
            clean = self.clean_images.get(frame.stamp_ns) if self.clean_images is not None \
                else None
            if self.clean_version is not None and clean is None:
                self.counts["no_clean_version"] += 1
            elif clean is not None:
                stream = frame.stream + CLEAN_SUFFIX
                self.reference.reset(stream)
                labels = self.reference.process([Frame(stream, clean, frame.stamp_ns,
                                                       frame.frame_id)])[0].labels
                self.clean_version.add(gt, labels, kinds)
        for index, pipeline in self.checks.items():
            self.check_scores[index].add(gt, memory_check_labels(pipeline, frame), kinds)

    def section(self) -> dict:
        """The payload's top-level ``corruption`` section: recipe, topics, frame counts per
        kind, the baseline and its references."""
        return {
            "recipe": self.log.recipe or None,
            "topics": {"camera": self.camera, "corruption": self.log.topic,
                       "clean": self.clean_topic},
            "frames": {**self.counts, "kinds": {k: self.kind_frames[k]
                                                for k in _order(self.kind_frames)}},
            "baseline": self.labels[self.baseline],
            "memory_credit": MEMORY_CREDIT, "min_credited_gain": MIN_CREDITED_GAIN,
            "references": {
                "clean_version": self.clean_version.summary()
                if self.clean_version is not None else None,
                "last_clean_oracle": self.oracle.summary()},
        }

    def annotate(self, payload: dict) -> dict:
        """Add the ``corruption`` section and, to each model entry, ``corruption`` (its
        scores); to each model but the baseline ``gain`` (over the baseline, in mIoU and flip
        rate fractions: bag, hit, clean, flip_rate); to each checked temporal model
        ``memory_check`` (its scores, ``gain_removed``: the share of the hit-frame gain it
        removes, None without a gain; ``credited``: ``gain_removed >= MEMORY_CREDIT``, None
        for a gain below ``MIN_CREDITED_GAIN``).
        Returns ``payload``."""
        payload["corruption"] = self.section()
        entries = payload["models"]
        base = self.models[self.baseline]
        base_flip = entries[self.baseline]["temporal_consistency"]["flip_rate"]
        for index, (entry, scores) in enumerate(zip(entries, self.models)):
            entry["corruption"] = scores.summary()
            if index == self.baseline:
                continue
            entry["gain"] = {**{g: _diff(scores.miou(g), base.miou(g))
                                for g in ("bag", "hit", "clean")},
                             "flip_rate": _diff(entry["temporal_consistency"]["flip_rate"],
                                                base_flip)}
            if index in self.check_scores:
                check = self.check_scores[index]
                gain = entry["gain"]["hit"]
                lost = _diff(scores.miou("hit"), check.miou("hit"))
                removed = lost / gain if gain is not None and gain > 0 and lost is not None \
                    else None
                entry["memory_check"] = {**check.summary(), "gain_removed": removed,
                                         "credited": bool(removed >= MEMORY_CREDIT)
                                         if removed is not None and gain >= MIN_CREDITED_GAIN
                                         else None}
        return payload
