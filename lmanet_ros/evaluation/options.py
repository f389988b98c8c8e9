"""What an offline evaluation is asked to do, as data: :class:`EvalOptions` and the models.

The ``lmanet eval`` flags map one to one onto :class:`EvalOptions`; :func:`lmanet_ros.evaluation.
evaluate` takes it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EvalError", "EvalOptions", "ModelSpec", "label_models", "parse_compare"]


class EvalError(RuntimeError):
    """The evaluation cannot run as asked (topics, models, output paths)."""


@dataclass
class ModelSpec:
    """One model to evaluate: registry name, checkpoint (a path or a weights tag such as
    ``demo``; None = random weights), and its label in the report (unique per run)."""

    name: str
    checkpoint: str | None = None
    label: str = ""


@dataclass
class EvalOptions:
    """An offline evaluation of one bag (the ``lmanet eval`` flags, as data).

    Attributes:
        bag: the rosbag2 directory (mcap or sqlite3).
        out: directory for metrics.json, report.md, plots and videos (created).
        model: the first model's registry name; ``checkpoint`` its weights.
        compare: more models run on the same frames.
        image_topics: camera topics; None = the bag's only image topic besides the labels.
        label_topic: ground truth (mono8 trainIds, 255 void) matched by header stamp, or None.
        label_ids: the label topic holds Cityscapes labelIds (mapped to trainIds).
        stride: use every ``stride``-th frame of each camera.
        max_frames: stop after this many frames (0 = all).
        device, precision, num_threads: where and how the networks run.
        backend: what runs them: ``torch``, or ``onnxruntime`` / ``openvino`` (graphs exported
            from each checkpoint and cached; CPU, fp32, a fixed input size: ``input_size``,
            else the trained size; see :meth:`~lmanet_ros.pipeline.SegmentationPipeline.
            from_pretrained`).
        input_size: network input (height, width) in pixels; None = the weights' trained size
            (checkpoint metadata), else each frame's own.
        memory_length: frames T in the memory; None = the checkpoint's, else the model's own.
        max_gap: seconds between frames beyond which the memory is cleared (0: off).
        memory_stride: store every k-th processed frame in the memory.
        video, plots: write overlay.mp4 (first model) and the PNG plots.
        output_bag: also write a rosbag2 of labels, colour and overlay images there.
        output_storage: its storage (None = the input bag's).
        clean_topic: the clean versions of the first camera's frames (``"auto"``: ``<camera>_clean``
            when the bag has it; None: off); see :mod:`lmanet_ros.evaluation.corruption`.
        corruption_topic: its per-frame corruption log, a diagnostic_msgs/DiagnosticArray
            (``"auto"``: ``<camera's namespace>/corruption`` when the bag has it; None: off).
            With a log, accuracy is also reported on hit frames, clean frames and per kind,
            beside the clean-version and last-clean-frame references.
        memory_check: with a log, also run each temporal model with its memory replaced by the
            current frame (a second pipeline; no effect without a temporal model or a log).
        comparison_video: also write ``comparison.mp4`` (per camera, like overlay.mp4): input |
            every model's overlay, captioned, corrupted frames tagged with their kinds; None =
            when ``video`` is on and at least two models are evaluated
            (:attr:`writes_comparison_video`).
    """

    bag: Path
    out: Path
    model: str
    checkpoint: str | None = None
    compare: Sequence[ModelSpec] = ()
    image_topics: Sequence[str] | None = None
    label_topic: str | None = None
    label_ids: bool = False
    stride: int = 1
    max_frames: int = 0
    device: str = "auto"
    precision: str = "fp32"
    num_threads: int = 0
    backend: str = "torch"
    input_size: tuple[int, int] | None = None
    memory_length: int | None = None
    max_gap: float = 1.0
    memory_stride: int = 1
    video: bool = True
    plots: bool = True
    output_bag: Path | None = None
    output_storage: str | None = None
    clean_topic: str | None = "auto"
    corruption_topic: str | None = "auto"
    memory_check: bool = True
    comparison_video: bool | None = None
    specs: list[ModelSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Check the counts; label the models (:func:`label_models`)."""
        if self.stride < 1:
            raise EvalError(f"--stride must be >= 1, got {self.stride}")
        self.specs = label_models([ModelSpec(self.model, self.checkpoint)]
                                  + [ModelSpec(s.name, s.checkpoint) for s in self.compare])

    @property
    def writes_comparison_video(self) -> bool:
        """Whether ``comparison.mp4`` is written (``comparison_video``, None resolved)."""
        if self.comparison_video is None:
            return self.video and len(self.specs) >= 2
        return bool(self.comparison_video)


def parse_compare(items: Sequence[str] | None) -> list[ModelSpec]:
    """``MODEL[:CKPT]`` strings to model specs."""
    specs = []
    for item in items or []:
        name, _, checkpoint = item.partition(":")
        if not name:
            raise EvalError(f"--compare entry '{item}' has no model name (MODEL[:CKPT])")
        specs.append(ModelSpec(name, checkpoint or None))
    return specs


def label_models(specs: list[ModelSpec]) -> list[ModelSpec]:
    """Give each model a unique label: its name, or name:checkpoint-stem when names repeat."""
    names = [s.name for s in specs]
    used: set[str] = set()
    for spec in specs:
        label = spec.name
        if names.count(spec.name) > 1:
            label = f"{spec.name}:{Path(spec.checkpoint).stem if spec.checkpoint else 'random'}"
        base, n = label, 2
        while label in used:
            label, n = f"{base}#{n}", n + 1
        used.add(label)
        spec.label = label
    return specs
