"""Each frame paired with every model's labels of it, whatever each model's output delay.

A delayed model (:attr:`SegmentationPipeline.output_delay_frames` 1, the delayed STF) returns, for
the frame processed, the labels of an earlier frame (:attr:`Result.source`), and once in a while
none (:attr:`Result.repeat`). The offline evaluation scores, renders and compares models per
labelled frame: :class:`ResultAligner` holds each frame until every model has labelled it or a
later frame of its topic (then that model never will: the last frame before a reset or the end, a
frame a memory stride did not store) and hands it on with the labels it got. With causal models
only, each frame is handed on at once.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmanet_ros.bags import ImageRecord
from lmanet_ros.pipeline import Frame, Result

__all__ = ["LabelledFrame", "ResultAligner"]


@dataclass
class LabelledFrame:
    """One frame of a camera and each model's labels of it.

    Attributes:
        record: the frame as read from the bag (topic, stamps, RGB image).
        gt: its ground truth, (H, W) uint8 trainIds, or None.
        frame: the :class:`Frame` the pipelines were given (the identity results name).
        duplicate: the frame repeated its topic's previous stamp (one rule for every model).
        results: per model, in model order, the result that labels this frame, or None where
            the model never labelled it.
    """

    record: ImageRecord
    gt: np.ndarray | None
    frame: Frame
    duplicate: bool
    results: list[Result | None]

    @property
    def complete(self) -> bool:
        """Every model labelled the frame."""
        return all(result is not None for result in self.results)


class ResultAligner:
    """Pairs results with the frames they label, per topic, for ``models`` models."""

    def __init__(self, models: int) -> None:
        self._models = models
        #: Per topic: the frames not handed on yet, oldest first, each with the models that
        #: may still label it.
        self._pending: dict[str, list[tuple[LabelledFrame, set[int]]]] = {}

    def add(self, record: ImageRecord, gt: np.ndarray | None, frame: Frame,
            results: Sequence[Result]) -> list[LabelledFrame]:
        """Take a frame every model has just processed (``results`` of processing it, in model
        order); return the frames of its topic now labelled by every model that will, oldest
        first."""
        pending = self._pending.setdefault(frame.stream, [])
        pending.append((LabelledFrame(record, gt, frame, results[0].duplicate,
                                      [None] * self._models), set(range(self._models))))
        for model, result in enumerate(results):
            if result.repeat:
                continue
            source = result.source if result.source is not None else frame
            # a model labels the frames of a topic in their order: its source is still pending
            index = next(i for i, (entry, _) in enumerate(pending) if entry.frame is source)
            pending[index][0].results[model] = result
            for _, waiting in pending[:index + 1]:
                waiting.discard(model)
        done = 0
        while done < len(pending) and not pending[done][1]:
            done += 1
        ready = [entry for entry, _ in pending[:done]]
        del pending[:done]
        return ready

    def flush(self) -> list[LabelledFrame]:
        """The frames still held (the run is over: no model will label them any more), oldest
        first per topic."""
        held = [entry for pending in self._pending.values() for entry, _ in pending]
        self._pending.clear()
        return held
