"""What a training run is asked to do: :class:`TrainConfig` (validated settings), what it reports
(:class:`TrainResult`), and the names and choices shared by the other training modules."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmanet_ros.models.registry import model_entry
from lmanet_ros.training.datasets import DATASET_KINDS
from lmanet_ros.training.fusion_init import FUSION_INITS

__all__ = [
    "CHECKPOINT_NAME", "CLASS_WEIGHTINGS", "DEFAULT_FIRST_TARGET", "FROZEN_MODES", "LOG_NAME",
    "NUM_LOGITS", "PUBLISHED_GRAD_CLIP", "VOID_INDEX", "TrainConfig", "TrainResult",
    "TrainingError",
]

#: Output channels (logits) of the models trained here: 19 trainIds + void (channel 19). Not
#: the number of scored classes (:data:`lmanet_ros.metrics` counts the 19 trainIds).
NUM_LOGITS = 20
#: Channel of void pixels (trainId 255 in the labels).
VOID_INDEX = NUM_LOGITS - 1
#: The resumable training state inside ``out``.
CHECKPOINT_NAME = "last.pt"
#: The JSON-lines training log inside ``out``.
LOG_NAME = "train_log.jsonl"
#: Class weighting schemes (see :mod:`lmanet_ros.training`).
CLASS_WEIGHTINGS = ("auto", "erfnet", "frequency", "none")
#: What the frozen encoder/decoder of a temporal model do in training (:mod:`lmanet_ros.training`).
FROZEN_MODES = ("eval", "train")
#: Default first target position in a synthetic sequence: every model with a memory of up to
#: four frames (the release's evaluation length) then trains and validates on the same targets.
DEFAULT_FIRST_TARGET = 4
#: The memory length LMANet is trained with in the release (clips of T + 1 frames).
TRAIN_MEMORY_LENGTH = 3
#: Gradient-norm clipping of the published recipes that clip (STF: 0.1); others do not clip.
PUBLISHED_GRAD_CLIP = {name: 0.1 for name in (
    "stf_erfnet", "stf_mar_erfnet", "stf_delayed_erfnet", "stf_mar_delayed_erfnet")}


class TrainingError(RuntimeError):
    """Training cannot start or go on as asked (missing checkpoint, mismatched resume, ...)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; see ``lmanet train --help`` for each field.

    ``memory_length`` None means :data:`TRAIN_MEMORY_LENGTH` (3, LMANet's training length in the
    release), or the model's own T when that is smaller (2 for TMANet's and STF's modules).
    ``clip_length`` None means 1 for single-frame models and ``memory_length + 1`` for temporal
    ones. ``first_target`` (synthetic data only) None means :data:`DEFAULT_FIRST_TARGET`, or
    ``clip_length - 1`` when that is larger. ``hit_repeat`` (synthetic data only) lists the
    training targets whose image is corrupted that many times.
    """

    model: str
    data: Path
    out: Path
    dataset: str = "synth"
    init: Path | None = None
    epochs: int = 50
    batch_size: int = 5
    clip_length: int | None = None
    memory_length: int | None = None
    lr: float = 2e-4
    weight_decay: float = 1e-4
    size: tuple[int, int] | None = None
    workers: int | None = None
    threads: int | None = None
    device: str = "auto"
    resume: bool = False
    time_budget_min: float | None = None
    max_images: int | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    val_stride: int = 1
    seed: int = 0
    first_target: int | None = None
    hit_repeat: int = 1
    class_weighting: str = "auto"
    frozen_mode: str = "eval"
    fusion_init: str = "auto"
    distill: Path | None = None
    grad_clip: float | None = None
    checkpoint_every_min: float = 10.0
    progress: bool = True
    ddp_procs: int = 1
    backend: str = "gloo"
    command: str = ""

    def __post_init__(self) -> None:
        entry = model_entry(self.model)  # ValueError naming the known models
        if self.memory_length is None:  # the release's training length, or a smaller own T
            object.__setattr__(self, "memory_length",
                               min(TRAIN_MEMORY_LENGTH, entry.default_memory_length))
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        for name in ("init", "distill"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.grad_clip is None:
            object.__setattr__(self, "grad_clip", PUBLISHED_GRAD_CLIP.get(self.model, 0.0))
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip must be >= 0 (0: no clipping), got {self.grad_clip}")
        if self.dataset not in DATASET_KINDS:
            raise ValueError(f"dataset must be one of {DATASET_KINDS}, got '{self.dataset}'")
        for name in ("epochs", "batch_size", "memory_length", "ddp_procs", "val_stride",
                     "hit_repeat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        clip_length = self.clip_length
        if clip_length is None:
            clip_length = self.memory_length + 1 if entry.temporal else 1
            object.__setattr__(self, "clip_length", clip_length)
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1, got {clip_length}")
        if entry.temporal and clip_length < 2:
            raise ValueError(f"clip_length must be >= 2 for the temporal model '{self.model}' "
                             "(the memory needs past frames)")
        if entry.temporal and clip_length - 1 > self.memory_length:
            raise ValueError(f"clip_length {clip_length} needs a memory of {clip_length - 1} "
                             f"frames, but memory_length is {self.memory_length}")
        if self.first_target is None:
            object.__setattr__(self, "first_target", max(DEFAULT_FIRST_TARGET, clip_length - 1))
        elif self.first_target < clip_length - 1:
            raise ValueError(f"first_target ({self.first_target}) must be >= clip_length - 1 "
                             f"({clip_length - 1})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise ValueError(f"time_budget_min must be > 0, got {self.time_budget_min}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if not self.checkpoint_every_min > 0:
            raise ValueError(f"checkpoint_every_min must be > 0, got {self.checkpoint_every_min}")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(f"class_weighting must be one of {CLASS_WEIGHTINGS}, got "
                             f"'{self.class_weighting}'")
        if self.frozen_mode not in FROZEN_MODES:
            raise ValueError(f"frozen_mode must be one of {FROZEN_MODES}, got "
                             f"'{self.frozen_mode}'")
        if self.fusion_init not in FUSION_INITS:
            raise ValueError(f"fusion_init must be one of {FUSION_INITS}, got "
                             f"'{self.fusion_init}'")
        if self.backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be gloo or nccl, got '{self.backend}'")
        if self.size is not None:
            height, width = (int(v) for v in self.size)
            if height <= 0 or width <= 0 or height % 8 or width % 8:
                raise ValueError(f"size must be positive multiples of 8, got {self.size}")
            object.__setattr__(self, "size", (height, width))

    @property
    def temporal(self) -> bool:
        """Whether the model has a memory (LMANet)."""
        return model_entry(self.model).temporal

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-friendly primitives."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
            elif isinstance(value, tuple):
                data[key] = list(value)
        return data


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports.

    Attributes:
        weights: path of the final fp16 safetensors file.
        checkpoint: path of the resumable state.
        log: path of the JSON-lines log.
        epochs_done: completed epochs.
        images_seen: supervised samples, all processes together.
        val_miou: last validation mIoU (0..1), None without validation.
        stop_reason: ``epochs``, ``max_images`` or ``time_budget``.
        train_seconds: training wall time (the budgeted time) over all resumed runs.
    """

    weights: Path
    checkpoint: Path
    log: Path
    epochs_done: int
    images_seen: int
    val_miou: float | None
    stop_reason: str
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
