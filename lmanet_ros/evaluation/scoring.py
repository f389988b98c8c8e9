"""Live scoring: the labels a running node publishes, scored against a bag's ground truth.

The node's labels arrive as images with the input's header stamp; :class:`LiveScorer` pairs each
with the bag's label of the same stamp and scores it with :class:`lmanet_ros.metrics.RunScore`,
so a live run writes the same ``metrics.json`` / ``report.md`` as the offline evaluation.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from lmanet_ros.bags import BagReader, read_labels
from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES, LABEL_ID_TO_TRAIN_ID
from lmanet_ros.metrics import RunScore
from lmanet_ros.streams import MemoryPolicy, StreamState

from .host import HostLoad
from .report import build_metrics, write_report

__all__ = ["SCENE_CUTS", "LiveScorer", "ScoringError"]

#: Reset reasons after which two frames are not consecutive views of one scene.
SCENE_CUTS = frozenset({"time_jump_back", "size_change", "frame_id_change"})


class ScoringError(RuntimeError):
    """Labels that cannot be scored (their size differs from the ground truth's)."""


class LiveScorer:
    """Scores labels images that a node publishes against a bag's label topic, by header stamp.

    Memory resets are not visible in the labels; they are inferred from the stamps with the
    node's rules (:class:`lmanet_ros.streams.StreamState`, same ``max_gap``) and flagged as such.
    """

    def __init__(self, bag: str | Path | BagReader, label_topic: str | None, *,
                 label_ids: bool = False, policy: MemoryPolicy = MemoryPolicy(),
                 name: str = "node") -> None:
        """Load the labels (if any) of ``bag`` (a path or an open reader) into memory, keyed by
        stamp (int ns)."""
        self.bag = bag.path if isinstance(bag, BagReader) else Path(bag)
        self.label_topic = label_topic
        self.label_ids = label_ids
        self.policy = policy
        self.gt: dict[int, np.ndarray] = read_labels(bag, label_topic) if label_topic else {}
        if label_ids:
            self.gt = {stamp: LABEL_ID_TO_TRAIN_ID[labels] for stamp, labels in self.gt.items()}
        self.run = RunScore(name, CITYSCAPES_CLASS_NAMES)
        self.model: dict = {"label": name, "model": None, "checkpoint": None,
                            "checkpoint_id": None}
        self._states: dict[str, StreamState] = {}
        self.scored_stamps: Counter = Counter()
        self.unlabelled = 0
        self._started = time.perf_counter()
        self._host = HostLoad()

    def set_model_info(self, model_name: str, checkpoint_id: str, memory_length: int) -> None:
        """Record what the node runs (from its latched ``label_info``: the T in force)."""
        self.model.update(model=model_name, checkpoint_id=checkpoint_id,
                          memory_length=memory_length)
        if model_name:
            self.model["label"] = self.run.name = model_name

    def add(self, stream: str, stamp_ns: int, frame_id: str, labels: np.ndarray,
            latency_ms: float | None = None) -> None:
        """Score one (H, W) uint8 labels image of ``stream`` (the labels topic) stamped
        ``stamp_ns``; ``latency_ms`` from publishing the frame to receiving its labels."""
        state = self._states.setdefault(stream, StreamState(stream))
        admission = state.admit(stamp_ns, labels.shape[:2], frame_id, self.policy)
        gt = self.gt.get(stamp_ns)
        if gt is not None and gt.shape != labels.shape:
            raise ScoringError(f"labels of stamp {stamp_ns} are {labels.shape}, ground truth "
                               f"{gt.shape}")
        if gt is None:
            self.unlabelled += 1
        self.run.add(stream, labels, gt, stamp_ns=stamp_ns, latency_ms=latency_ms,
                     reset_reason=admission.reset_reason,
                     continuous=admission.reset_reason not in SCENE_CUTS,
                     duplicate=admission.duplicate)
        self.scored_stamps[stamp_ns] += 1
        self.run.wall_s = time.perf_counter() - self._started

    def write(self, out_dir: str | Path, *, partial: bool, source: dict,
              parameters: dict) -> list[Path]:
        """Write metrics.json, report.md and the plots of what was scored so far."""
        source = {"bag": str(self.bag), "label_topic": self.label_topic,
                  "label_ids": self.label_ids, "labelled_frames_in_bag": len(self.gt),
                  "frames_evaluated": self.run.frames, "frames_without_labels": self.unlabelled,
                  **source}
        parameters = {"max_gap": self.policy.max_gap, **parameters}
        model = dict(self.model, memory_resets_inferred=True)
        payload = build_metrics([self.run], [model], source=source, parameters=parameters,
                                partial=partial, mode="live",
                                host=self._host.section(torch_threads=None))
        return write_report(out_dir, payload, [self.run])
