"""Training loop of ``lmanet train``: ERFNet from scratch, then LMANet with the release's recipe.

The recipe (``shared/docs/lmanet-reference.md``, "Training recipe of the release"):

- samples are clips of T + 1 consecutive frames ending at a labelled frame (one frame for the
  single-frame ERFNet); the loss is on the last frame only;
- loss: NLL of log-softmax, class-weighted, void (trainId 255, mapped to channel 19) weight 0;
- Adam, lr 2e-4, betas (0.9, 0.999), weight decay 1e-4; ReduceLROnPlateau(factor 0.8, torch's
  default patience 10) stepped on each epoch's mean training loss;
- LMANet starts from single-frame weights (``init``); encoder and decoder are frozen
  (``requires_grad`` False), only the key/value projections and the fusion train.

Where we differ from the release, on purpose and switchable:

- ``frozen_mode="eval"`` (default) runs the frozen encoder and decoder in eval mode: their batch
  norm running statistics stay those of the single-frame network and their dropout is off. The
  release keeps the whole model in train mode, so those statistics drift towards the fused
  features, which also changes what the decoder does on the first frame of a stream (no memory).
  ``frozen_mode="train"`` reproduces the release.
- ``fusion_init="pca"`` (what the default ``auto`` picks for ERFNet's fusion) starts the query
  path (``kv_Q_r4.Value`` and the fusion) as a PCA pass-through of the encoder features, so that
  the untrained LMANet is nearly the single-frame network (:mod:`lmanet_ros.fusion_init` says
  why and how); ``random`` keeps the release's initialisation. Only initial values differ; the
  architecture does not.
- Class weights: ``erfnet`` is the ERFNet paper's fixed table for Cityscapes (the release's);
  ``frequency`` computes the same ENet-style formula w_c = 1 / ln(1.10 + p_c) from the pixel
  frequencies p_c of the training labels (what the table is, for Cityscapes), which suits other
  data such as ``lmanet synth``; ``auto`` picks ``erfnet`` for Cityscapes and ``frequency``
  otherwise; ``none`` weighs every class 1. Void always weighs 0.

Counting and budgets: "images seen" counts supervised samples (labelled target frames, i.e.
clips), summed over DDP processes; frames run through the network (clips x clip length) are
logged as ``frames_seen``. ``max_images`` and ``time_budget_min`` stop training on the same
footing for two models: the budget is training wall time (steps and data loading), excluding
validation and checkpoint writing, summed over resumed runs. With the same seed, data, batch
size and ``first_target`` two models draw the same targets in the same order with the same
augmentation.

Outputs in ``out``: ``last.pt`` (resumable: model, optimizer, scheduler, epoch, images seen, ...;
written atomically at every epoch end, every ``checkpoint_every_min`` and at the stop),
``train_log.jsonl`` (one JSON object per epoch, and one for a partial last epoch) and
``<model>.safetensors`` (final weights, fp16, with metadata). Only rank 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from lmanet_ros.classes import ClassSet
from lmanet_ros.fusion_init import (FUSION_INITS, pca_initialise_query_path,
                                    sample_features, supports_pca)
from lmanet_ros.datasets import (DATASET_KINDS, ClipDataset, build_clip_dataset,
                                 label_histogram)
from lmanet_ros.models import build_model, load_checkpoint, save_checkpoint
from lmanet_ros.models.registry import model_entry

__all__ = [
    "CHECKPOINT_NAME", "CLASS_WEIGHTINGS", "DEFAULT_FIRST_TARGET", "ERFNET_CLASS_WEIGHTS",
    "FROZEN_MODES", "LOG_NAME", "NUM_CLASSES", "TrainConfig", "TrainResult", "TrainingError",
    "class_weights", "frequency_class_weights", "labels_to_targets", "miou_from_confusion",
    "train", "train_step", "weighted_nll",
]

#: Output channels of the models trained here: 19 trainIds + void (channel 19).
NUM_CLASSES = 20
#: Channel of void pixels (trainId 255 in the labels).
VOID_INDEX = NUM_CLASSES - 1
#: The resumable training state inside ``out``.
CHECKPOINT_NAME = "last.pt"
#: The JSON-lines training log inside ``out``.
LOG_NAME = "train_log.jsonl"
#: Class weighting schemes (see the module docstring).
CLASS_WEIGHTINGS = ("auto", "erfnet", "frequency", "none")
#: What the frozen encoder/decoder of a temporal model do in training (module docstring).
FROZEN_MODES = ("eval", "train")
#: Default first target position in a synthetic sequence: every model with a memory of up to
#: four frames (the release's evaluation length) then trains and validates on the same targets.
DEFAULT_FIRST_TARGET = 4
#: The constant c of the ENet weighting w = 1 / ln(c + p) that gives ERFNet's table.
ENET_WEIGHT_C = 1.10
#: ERFNet's class weights for Cityscapes (the full network's, used by the release), trainIds
#: 0..18 then void.
ERFNET_CLASS_WEIGHTS: tuple[float, ...] = (
    2.8149201869965, 6.9850029945374, 3.7890393733978, 9.9428062438965, 9.7702074050903,
    9.5110931396484, 10.311357498169, 10.026463508606, 4.6323022842407, 9.5608062744141,
    7.8698215484619, 9.5168733596802, 10.373730659485, 6.6616044044495, 10.260489463806,
    10.287888526917, 10.289801597595, 10.405355453491, 10.138095855713, 0.0)
#: Labels read for the ``frequency`` weighting (evenly spread over the training set).
FREQUENCY_MAX_LABELS = 1000
#: Training clips (last frames) and feature vectors the ``pca`` fusion initialisation reads.
PCA_INIT_IMAGES = 40
PCA_INIT_VECTORS = 200_000
_FORMAT = "lmanet_ros.train/1"
# Config fields that must not change when a run is resumed.
_IDENTITY_FIELDS = ("model", "dataset", "clip_length", "memory_length", "batch_size", "size",
                    "train_split", "seed", "first_target", "class_weighting", "frozen_mode",
                    "lr", "weight_decay", "world_size", "fusion_init")


# Flags of ``lmanet train`` in the order of the reproducible command, with their config fields.
_COMMAND_FLAGS = (
    ("--model", "model"), ("--data", "data"), ("--dataset", "dataset"), ("--out", "out"),
    ("--init", "init"), ("--size", "size"), ("--train-split", "train_split"),
    ("--val-split", "val_split"), ("--val-stride", "val_stride"),
    ("--first-target", "first_target"), ("--epochs", "epochs"),
    ("--batch-size", "batch_size"), ("--memory-length", "memory_length"),
    ("--clip-length", "clip_length"), ("--lr", "lr"), ("--weight-decay", "weight_decay"),
    ("--class-weights", "class_weighting"), ("--frozen-mode", "frozen_mode"),
    ("--fusion-init", "fusion_init"),
    ("--seed", "seed"), ("--time-budget", "time_budget_min"), ("--max-images", "max_images"),
    ("--checkpoint-every", "checkpoint_every_min"), ("--device", "device"),
    ("--workers", "workers"), ("--ddp-procs", "ddp_procs"), ("--backend", "backend"),
)


class TrainingError(RuntimeError):
    """Training cannot start or go on as asked (missing checkpoint, mismatched resume, ...)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; see ``lmanet train --help`` for each field.

    ``clip_length`` None means 1 for single-frame models and ``memory_length + 1`` for temporal
    ones. ``first_target`` (synthetic data only) None means :data:`DEFAULT_FIRST_TARGET`, or
    ``clip_length - 1`` when that is larger.
    """

    model: str
    data: Path
    out: Path
    dataset: str = "synth"
    init: Path | None = None
    epochs: int = 50
    batch_size: int = 5
    clip_length: int | None = None
    memory_length: int = 3
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
    class_weighting: str = "auto"
    frozen_mode: str = "eval"
    fusion_init: str = "auto"
    checkpoint_every_min: float = 10.0
    progress: bool = True
    ddp_procs: int = 1
    backend: str = "gloo"
    command: str = ""

    def __post_init__(self) -> None:
        entry = model_entry(self.model)  # ValueError naming the known models
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        if self.init is not None:
            object.__setattr__(self, "init", Path(self.init))
        if self.dataset not in DATASET_KINDS:
            raise ValueError(f"dataset must be one of {DATASET_KINDS}, got '{self.dataset}'")
        for name in ("epochs", "batch_size", "memory_length", "ddp_procs", "val_stride"):
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

    def command_line(self) -> str:
        """The ``lmanet train`` command that reproduces this config, every setting explicit
        (defaults resolved, e.g. the clip length and first target).

        ``--resume``, ``--no-progress`` and ``--threads`` are left out: they do not change what
        is trained.
        """
        words = ["lmanet", "train"]
        for flag, name in _COMMAND_FLAGS:
            value = getattr(self, name)
            if name == "val_split" and value is None:
                value = ""
            elif value is None or (name == "fusion_init" and not self.temporal):
                continue
            elif name == "size":
                value = f"{value[0]}x{value[1]}"
            words += [flag, str(value)]
        return shlex.join(words)

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


# --------------------------------------------------------------------------- helpers

class _NoBar:
    """Stands in for a progress bar where none is shown (other ranks, ``progress=False``)."""

    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(enabled: bool, total: int, desc: str) -> Any:
    """The tools' shared progress bar (:func:`lmanet_ros.report.progress`: shown when stderr is
    a terminal), or none."""
    if not enabled:
        return _NoBar()
    from lmanet_ros.report import progress

    return progress(total, desc, unit="batch")


def frequency_class_weights(histogram: np.ndarray, *, c: float = ENET_WEIGHT_C) -> torch.Tensor:
    """Class weights w_c = 1 / ln(c + p_c) from trainId pixel counts (19,), void weight 0.

    p_c is the share of class c among the labelled (non-void) pixels; a class never seen gets
    the largest weight 1 / ln(c).
    """
    histogram = np.asarray(histogram, dtype=np.float64)
    if histogram.shape != (NUM_CLASSES - 1,) or (histogram < 0).any():
        raise ValueError(f"histogram must be {NUM_CLASSES - 1} non-negative counts, got shape "
                         f"{histogram.shape}")
    if not c > 1.0:
        raise ValueError(f"c must be > 1, got {c}")
    total = histogram.sum()
    share = histogram / total if total > 0 else np.zeros_like(histogram)
    weights = 1.0 / np.log(c + share)
    return torch.tensor([*weights.tolist(), 0.0], dtype=torch.float32)


def class_weights(weighting: str, dataset_kind: str, train_set: ClipDataset | None = None
                  ) -> tuple[torch.Tensor, str]:
    """The (20,) loss weights of ``weighting`` and the scheme actually used (``auto`` resolved)."""
    if weighting == "auto":
        weighting = "erfnet" if dataset_kind == "cityscapes" else "frequency"
    if weighting == "erfnet":
        return torch.tensor(ERFNET_CLASS_WEIGHTS, dtype=torch.float32), weighting
    if weighting == "none":
        weights = torch.ones(NUM_CLASSES)
        weights[VOID_INDEX] = 0.0
        return weights, weighting
    if weighting == "frequency":
        if train_set is None:
            raise ValueError("the frequency weighting needs the training set")
        histogram = label_histogram(train_set, max_labels=FREQUENCY_MAX_LABELS)
        return frequency_class_weights(histogram), weighting
    raise ValueError(f"class weighting must be one of {CLASS_WEIGHTINGS}, got '{weighting}'")


def labels_to_targets(labels: torch.Tensor) -> torch.Tensor:
    """uint8 trainId labels (void 255) -> int64 targets with void at channel 19."""
    targets = labels.long()
    targets[targets >= VOID_INDEX] = VOID_INDEX  # 255 (and any stray id) is void
    return targets


def weighted_nll(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
                 ) -> torch.Tensor:
    """Class-weighted NLL of log-softmax, the weighted mean over pixels (void weighs 0).

    Equal to ``F.nll_loss(F.log_softmax(logits, 1), targets, weight=weights)``, but 0 rather
    than NaN for a batch without a labelled pixel.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    total = F.nll_loss(log_probs, targets, weight=weights, ignore_index=VOID_INDEX,
                       reduction="sum")
    valid = targets != VOID_INDEX
    norm = weights[targets[valid]].sum()
    return total / norm.clamp_min(torch.finfo(norm.dtype).tiny)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor,
               targets: torch.Tensor, weights: torch.Tensor) -> float:
    """One optimisation step on a batch; returns the loss before the step.

    Args:
        net: the model (or its DDP wrapper): (B, N, 3, H, W) clips -> last-frame logits.
        optimizer: steps the trainable parameters.
        frames: (B, N, 3, H, W) float RGB in [0, 1] on the model's device.
        targets: (B, H, W) int64 class ids, void = 19.
        weights: (20,) class weights, void 0.
    """
    loss = weighted_nll(net(frames), targets, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def miou_from_confusion(matrix: np.ndarray | torch.Tensor) -> tuple[float, list[float | None]]:
    """mIoU and per-class IoU of a (K, K) confusion matrix (rows ground truth).

    Same rule as :class:`lmanet_ros.metrics.ConfusionMatrix`: a class neither in the ground
    truth nor predicted has no IoU (None) and is left out of the mean.
    """
    matrix = np.asarray(torch.as_tensor(matrix).cpu(), dtype=np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    iou = [float(t / u) if u > 0 else None for t, u in zip(tp, union)]
    present = [v for v in iou if v is not None]
    return (float(np.mean(present)) if present else math.nan), iou


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resolve_device(spec: str, local_rank: int, world_size: int) -> torch.device:
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise TrainingError(f"device '{spec}' is not valid (auto, cpu, cuda, cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device '{spec}' requested but CUDA is not available")
        if world_size > 1:
            if device.index is not None:
                raise TrainingError("with several processes give --device cuda (each process "
                                    "takes the GPU of its local rank), not cuda:N")
            device = torch.device("cuda", local_rank)
        if (device.index or 0) >= torch.cuda.device_count():
            raise TrainingError(f"device {device} requested but only "
                                f"{torch.cuda.device_count()} CUDA devices exist")
    elif device.type != "cpu":
        raise TrainingError(f"device '{spec}' is not supported (auto, cpu, cuda, cuda:N)")
    return device


class _Context:
    """Rank, world size and the collectives the loop needs (no-ops in a single process)."""

    def __init__(self, rank: int, world_size: int, local_rank: int) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor, op: Any = None) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


# --------------------------------------------------------------------------- the trainer

class _Trainer:
    """One process's share of a run (all ranks run this; rank 0 writes files)."""

    def __init__(self, config: TrainConfig, ctx: _Context) -> None:
        self.config, self.ctx = config, ctx
        self.device = _resolve_device(config.device, ctx.local_rank, ctx.world_size)
        if ctx.distributed and config.backend == "nccl" and self.device.type != "cuda":
            raise TrainingError("the nccl backend needs CUDA devices; use --backend gloo on CPU")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.out = config.out
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.log_path = self.out / LOG_NAME
        self.weights_path = self.out / f"{config.model}.safetensors"
        # Loading a few PNGs per step is cheap next to a CPU step, and loader processes would
        # take cores from it: no workers on CPU unless asked.
        self.workers = (config.workers if config.workers is not None
                        else (min(4, os.cpu_count() or 1) if self.device.type == "cuda" else 0))
        self.show_progress = ctx.main and config.progress

        # Data first: the frequency weighting reads the training labels.
        common = dict(clip_length=config.clip_length, size=config.size, seed=config.seed)
        synth_only = dict(first_target=config.first_target) if config.dataset == "synth" else {}
        self.train_set = build_clip_dataset(config.dataset, config.data, config.train_split,
                                            augment=True, **common, **synth_only)
        self.val_set = None
        if config.val_split:
            val_extra = dict(synth_only, target_stride=config.val_stride) if synth_only else {}
            self.val_set = build_clip_dataset(config.dataset, config.data, config.val_split,
                                              augment=False, **common, **val_extra)

        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = build_model(config.model, num_classes=NUM_CLASSES,
                                 memory_length=config.memory_length).to(self.device)
        self.temporal = self.model.info.temporal
        self.init_report: str | None = None
        self.fusion_init_used: str | None = None  # "auto" resolved; None: no temporal module
        if self.temporal:
            supported = supports_pca(self.model.temporal_module)
            if config.fusion_init == "pca" and not supported:
                raise TrainingError(f"--fusion-init pca needs ERFNet's sigmoid-do1 fusion; "
                                    f"'{config.model}' has another: use --fusion-init random")
            self.fusion_init_used = ("pca" if config.fusion_init != "random" and supported
                                     else "random")
        self.state: dict[str, Any] = dict(epoch=0, epoch_images=0, epoch_loss_sum=0.0,
                                          epoch_loss_count=0, images_seen=0, frames_seen=0,
                                          train_seconds=0.0, wall_seconds=0.0, val_miou=None,
                                          finished=False)
        resume_state = self._read_resume_state()
        if resume_state is None:
            self._initialise_weights()
        if self.temporal:
            for part in self.model.single_frame_modules:
                part.requires_grad_(False)
        self.unused = self._freeze_unused_parameters()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not self.trainable:
            raise TrainingError(f"model '{config.model}' has no trainable parameter")
        self.optimizer = torch.optim.Adam(self.trainable, lr=config.lr, betas=(0.9, 0.999),
                                          weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="min",
                                                                    factor=0.8)
        if resume_state is not None:
            self._restore(resume_state)
        else:
            weights, used = class_weights(config.class_weighting, config.dataset, self.train_set)
            self.loss_weights, self.weighting_used = weights, used
        self.loss_weights = self.loss_weights.to(self.device)
        self.net: nn.Module = self.model
        if ctx.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ------------------------------------------------------------------ set-up
    def _read_resume_state(self) -> dict[str, Any] | None:
        config = self.config
        exists = self.checkpoint_path.is_file()
        if not config.resume:
            if exists:
                raise TrainingError(f"{self.checkpoint_path} exists: pass --resume to continue "
                                    "that run, or choose another --out")
            return None
        if not exists:
            raise TrainingError(f"--resume: no checkpoint {self.checkpoint_path}")
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("format") != _FORMAT:
            raise TrainingError(f"{self.checkpoint_path} is not a training state of this tool")
        saved, now = state["config"], self._identity()
        changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now if saved.get(k) != now[k]]
        if changed:
            raise TrainingError("--resume with settings that differ from the saved run: "
                                + "; ".join(changed))
        return state

    def _identity(self) -> dict[str, Any]:
        data = self.config.to_json()
        identity = {key: data[key] for key in _IDENTITY_FIELDS if key in data}
        identity["world_size"] = self.ctx.world_size
        if not self.temporal:
            del identity["fusion_init"]  # single-frame runs have no fusion
        return identity

    def _initialise_weights(self) -> None:
        config = self.config
        if config.init is None:
            if self.temporal:
                raise TrainingError(f"'{config.model}' trains with its encoder and decoder frozen:"
                                    " give --init with single-frame (erfnet) weights")
            return
        if not config.init.is_file():
            raise TrainingError(f"--init: no file {config.init}")
        # Strict: a single-frame checkpoint loads into LMANet (its temporal parts stay as
        # initialised); any other missing or unexpected key raises CheckpointError.
        self.init_report = load_checkpoint(self.model, config.init, strict=True).summary()
        if self.fusion_init_used == "pca":
            features = sample_features(self.model, self.train_set, images=PCA_INIT_IMAGES,
                                       max_vectors=PCA_INIT_VECTORS, seed=config.seed,
                                       device=self.device)
            try:
                report = pca_initialise_query_path(self.model.temporal_module, features)
            except ValueError as exc:
                raise TrainingError(f"--fusion-init pca: {exc}") from None
            self.init_report += "; " + report.summary()

    def _freeze_unused_parameters(self) -> list[str]:
        """Freeze parameters the training forward never reaches (e.g. ERFNet's
        ``encoder.output_conv``, kept for checkpoint compatibility); DDP needs every trainable
        parameter to get a gradient. Found with one eval-mode pass (no statistics change)."""
        was_training = self.model.training
        self.model.eval()
        probe = torch.zeros(1, self.config.clip_length, 3, 64, 64, device=self.device)
        self.model(probe).float().sum().backward()
        unused = []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad and parameter.grad is None:
                parameter.requires_grad_(False)
                unused.append(name)
            parameter.grad = None
        self.model.train(was_training)
        return unused

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_weights = state["loss_weights"].float()
        self.weighting_used = state["weighting_used"]
        for key in self.state:
            self.state[key] = state[key]
        self.state["finished"] = False

    # ------------------------------------------------------------------ files (rank 0)
    def _checkpoint(self) -> None:
        if not self.ctx.main:
            return
        payload = dict(format=_FORMAT, model=self.model.state_dict(),
                       optimizer=self.optimizer.state_dict(),
                       scheduler=self.scheduler.state_dict(),
                       loss_weights=self.loss_weights.cpu(), weighting_used=self.weighting_used,
                       config=self._identity(), full_config=self.config.to_json(), **self.state)
        _atomic_torch_save(payload, self.checkpoint_path)

    def _log(self, entry: dict[str, Any]) -> None:
        if not self.ctx.main:
            return
        with open(self.log_path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(entry, sort_keys=False) + "\n")

    def _metadata(self) -> dict[str, Any]:
        """Metadata of the final weights (JSON values; ``save_checkpoint`` encodes them).

        ``classes`` holds the class names and palette (``ClassSet.to_metadata()``); the same
        ``names`` and ``colors`` are repeated at top level, where ``ClassSet.from_metadata``
        reads them from a whole metadata mapping.
        """
        config, info = self.config, self.model.info
        classes = ClassSet.cityscapes().to_metadata()
        normalisation = (None if info.mean is None
                         else {"mean": list(info.mean), "std": list(info.std)})
        return {
            "model": config.model,
            "num_classes": NUM_CLASSES,
            "classes": classes,
            "names": classes["names"],
            "colors": classes["colors"],
            "normalisation": normalisation,
            "input_range": "RGB in [0, 1]",
            "memory_length": config.memory_length if self.temporal else 0,
            "clip_length": config.clip_length,
            "training_command": config.command,
            "dataset": config.dataset,
            "input_size": None if config.size is None else list(config.size),
            "images_seen": self.state["images_seen"],
            "epochs": self.state["epoch"],
            "train_seconds": round(self.state["train_seconds"], 1),
            "val_split": config.val_split,
            "val_miou": self.state["val_miou"],
            "class_weighting": self.weighting_used,
            "frozen_mode": config.frozen_mode if self.temporal else None,
            "fusion_init": self.fusion_init_used,
            "init": None if config.init is None else str(config.init),
            "seed": config.seed,
        }

    def _save_weights(self) -> None:
        if not self.ctx.main:
            return
        save_checkpoint(self.model, self.weights_path, metadata=self._metadata(),
                        dtype=torch.float16)

    # ------------------------------------------------------------------ loop
    def _set_train_mode(self) -> None:
        self.net.train()
        if self.temporal and self.config.frozen_mode == "eval":
            for part in self.model.single_frame_modules:
                part.eval()

    def _batches(self, epoch: int) -> DataLoader:
        """The loader of ``epoch``, skipping what this rank already did (mid-epoch resume)."""
        ctx = self.ctx
        sampler = DistributedSampler(self.train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=self.config.seed, drop_last=False)
        sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        indices = list(sampler)[self.state["epoch_images"] // ctx.world_size:]
        return DataLoader(self.train_set, batch_size=self.config.batch_size, sampler=indices,
                          num_workers=self.workers,
                          pin_memory=self.device.type == "cuda", drop_last=False)

    def _to_device(self, frames: torch.Tensor, labels: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        frames = frames.to(self.device, non_blocking=non_blocking).float().div_(255.0)
        targets = labels_to_targets(labels.to(self.device, non_blocking=non_blocking))
        return frames, targets

    def _step(self, frames: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """One optimisation step on this rank's batch; (global loss sum, global images)."""
        config, ctx, state = self.config, self.ctx, self.state
        if config.max_images is not None:
            # The last batch shrinks so that exactly max_images are seen (a DDP run may see up
            # to world_size - 1 more: every process takes the same share).
            remaining = config.max_images - state["images_seen"]
            share = -(-remaining // ctx.world_size)
            frames, labels = frames[:share], labels[:share]
        frames, targets = self._to_device(frames, labels)
        loss = train_step(self.net, self.optimizer, frames, targets, self.loss_weights)
        count = frames.shape[0]
        totals = torch.tensor([loss * count, float(count)], dtype=torch.float64)
        if ctx.distributed:
            totals = ctx.all_reduce(totals.to(self._collective_device)).cpu()
        return float(totals[0]), int(totals[1])

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.config.backend == "nccl" else torch.device("cpu")

    def _agree(self, flag: bool) -> bool:
        """True on every rank when rank 0 says so (keeps stop decisions in lock-step)."""
        if not self.ctx.distributed:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self._collective_device)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item() > 0)

    @torch.no_grad()
    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BN running statistics): DDP does so at the start
        of each forward, so after the last step they differ; validation and the saved weights
        must not depend on the rank."""
        if self.ctx.distributed:
            for buffer in self.model.buffers():
                moved = buffer.to(self._collective_device)
                dist.broadcast(moved, src=0)
                buffer.copy_(moved)

    @torch.no_grad()
    def validate(self) -> dict[str, Any] | None:
        """mIoU over the 19 classes on the validation clips (memory reset per clip)."""
        if self.val_set is None:
            return None
        ctx = self.ctx
        self.model.eval()
        indices = list(range(ctx.rank, len(self.val_set), ctx.world_size))
        loader = DataLoader(self.val_set, batch_size=self.config.batch_size, sampler=indices,
                            num_workers=self.workers,
                            pin_memory=self.device.type == "cuda")
        confusion = torch.zeros(NUM_CLASSES - 1, NUM_CLASSES - 1, dtype=torch.int64,
                                device=self.device)
        k = NUM_CLASSES - 1
        bar = _bar(self.show_progress, len(loader), "validation")
        for frames, labels in loader:
            bar.update()
            frames, targets = self._to_device(frames, labels)
            predictions = self.model(frames)[:, :k].argmax(dim=1)
            valid = targets < k
            confusion += torch.bincount(targets[valid] * k + predictions[valid],
                                        minlength=k * k).view(k, k)
        bar.close()
        confusion = ctx.all_reduce(confusion.to(self._collective_device))
        miou, iou = miou_from_confusion(confusion)
        return {"miou": miou, "iou": iou, "clips": len(self.val_set)}

    def run(self) -> TrainResult:
        config, ctx, state = self.config, self.ctx, self.state
        if ctx.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._announce()
        ctx.barrier()
        history: list[dict[str, Any]] = []
        wall_start = time.monotonic()
        wall_base = state["wall_seconds"]
        last_checkpoint = time.monotonic()
        stop_reason = self._agree_reason(self._stop_reason())
        while stop_reason is None:
            epoch = state["epoch"]
            torch.manual_seed(config.seed * 100003 + epoch * 1009 + ctx.rank)  # dropout masks
            self._set_train_mode()
            loader = self._batches(epoch)
            bar = _bar(self.show_progress, len(loader), f"epoch {epoch + 1}/{config.epochs}")
            epoch_start_seconds, epoch_start_images = state["train_seconds"], state["epoch_images"]
            tick = time.monotonic()
            for frames, labels in loader:
                loss_sum, count = self._step(frames, labels)
                bar.update()
                now = time.monotonic()
                state["train_seconds"] += now - tick
                tick = now
                state["epoch_loss_sum"] += loss_sum
                state["epoch_loss_count"] += count
                state["epoch_images"] += count
                state["images_seen"] += count
                state["frames_seen"] += count * config.clip_length
                bar.set_postfix(loss=f"{loss_sum / max(count, 1):.4f}",
                                seen=state["images_seen"])
                stop_reason = self._agree_reason(self._stop_reason(mid_epoch=True))
                if stop_reason is not None:
                    break
                if self._agree(now - last_checkpoint >= config.checkpoint_every_min * 60.0):
                    state["wall_seconds"] = wall_base + time.monotonic() - wall_start
                    self._checkpoint()
                    last_checkpoint = time.monotonic()
                tick = time.monotonic()
            bar.close()
            self._sync_buffers()
            epoch_done = state["epoch_images"] >= len(self.train_set) or stop_reason is None
            mean_loss = state["epoch_loss_sum"] / max(state["epoch_loss_count"], 1)
            if epoch_done:
                self.scheduler.step(mean_loss)
            val = self.validate()
            state["val_miou"] = None if val is None else val["miou"]
            entry = {
                "epoch": epoch + 1, "complete": epoch_done, "loss": mean_loss,
                "val_miou": state["val_miou"], "val_iou": None if val is None else val["iou"],
                "lr": self.optimizer.param_groups[0]["lr"], "images_seen": state["images_seen"],
                "frames_seen": state["frames_seen"],
                "train_seconds": round(state["train_seconds"], 3),
                "seconds": round(wall_base + time.monotonic() - wall_start, 3),
                "images_per_s": round((state["epoch_images"] - epoch_start_images) / max(
                    state["train_seconds"] - epoch_start_seconds, 1e-9), 3),
            }
            if epoch_done:
                state["epoch"] += 1
                state.update(epoch_images=0, epoch_loss_sum=0.0, epoch_loss_count=0)
            state["wall_seconds"] = wall_base + time.monotonic() - wall_start
            self._log(entry)
            history.append(entry)
            if ctx.main:
                miou = "-" if state["val_miou"] is None else f"{100 * state['val_miou']:.2f}"
                print(f"epoch {entry['epoch']}{'' if epoch_done else ' (partial)'}: loss "
                      f"{mean_loss:.4f}, val mIoU {miou}, lr {entry['lr']:.3g}, "
                      f"{state['images_seen']} images seen, "
                      f"{state['train_seconds']:.0f} s training", flush=True)
            if stop_reason is None:
                stop_reason = self._agree_reason(self._stop_reason())
            state["finished"] = stop_reason is not None
            self._checkpoint()
            last_checkpoint = time.monotonic()
        self._save_weights()
        ctx.barrier()
        if ctx.main:
            print(f"stopped ({stop_reason}); weights: {self.weights_path}; log: {self.log_path}",
                  flush=True)
        return TrainResult(weights=self.weights_path, checkpoint=self.checkpoint_path,
                           log=self.log_path, epochs_done=state["epoch"],
                           images_seen=state["images_seen"], val_miou=state["val_miou"],
                           stop_reason=stop_reason, train_seconds=state["train_seconds"],
                           history=history)

    def _stop_reason(self, mid_epoch: bool = False) -> str | None:
        """Why training must stop now, or None (``epochs`` only between epochs)."""
        config, state = self.config, self.state
        if config.max_images is not None and state["images_seen"] >= config.max_images:
            return "max_images"
        if (config.time_budget_min is not None
                and state["train_seconds"] >= config.time_budget_min * 60.0):
            return "time_budget"
        if not mid_epoch and state["epoch"] >= config.epochs:
            return "epochs"
        return None

    def _agree_reason(self, reason: str | None) -> str | None:
        reasons = (None, "epochs", "max_images", "time_budget")
        if not self.ctx.distributed:
            return reason
        tensor = torch.tensor([float(reasons.index(reason))], device=self._collective_device)
        dist.broadcast(tensor, src=0)
        return reasons[int(tensor.item())]

    def _announce(self) -> None:
        config = self.config
        trainable = sum(p.numel() for p in self.trainable)
        total = sum(p.numel() for p in self.model.parameters())
        lines = [
            f"training {config.model} on {config.dataset} {config.data} "
            f"({len(self.train_set)} clips of {config.clip_length} frames"
            + (f", validation {len(self.val_set)} clips" if self.val_set is not None else "")
            + f") on {self.device} x {self.ctx.world_size}",
            f"trainable parameters {trainable:,} of {total:,}; class weighting "
            f"{self.weighting_used}",
        ]
        if self.temporal:
            lines.append(f"encoder and decoder frozen (frozen_mode {config.frozen_mode})")
        if self.unused:
            lines.append(f"not reached by the forward pass, frozen: {', '.join(self.unused)}")
        if self.init_report:
            lines.append(f"init {config.init}: {self.init_report}")
        if self.config.resume:
            lines.append(f"resumed at epoch {self.state['epoch'] + 1}, "
                         f"{self.state['images_seen']} images seen")
        print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------- entry points

def _worker(rank: int, config: TrainConfig, world_size: int, init_method: str,
            results: Any = None) -> TrainResult:
    """One process of a run; ``rank``/``world_size`` 0/1 without a process group."""
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    elif world_size > 1:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if world_size > 1:
        dist.init_process_group(config.backend, init_method=init_method, rank=rank,
                                world_size=world_size)
    try:
        result = _Trainer(config, _Context(rank, world_size, local_rank)).run()
        if results is not None and rank == 0:
            results.put(asdict(result))
        return result
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainConfig) -> TrainResult | None:
    """Run a training: one process, ``config.ddp_procs`` spawned processes, or this process as
    one rank of a torchrun-style launch (``WORLD_SIZE``/``RANK``/``MASTER_ADDR`` set).

    Returns the rank-0 result (None on other ranks of an external launch).
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world > 1:
        if config.ddp_procs not in (1, env_world):
            raise TrainingError(f"launched with WORLD_SIZE={env_world} but --ddp-procs "
                                f"{config.ddp_procs}")
        rank = int(os.environ["RANK"])
        launched = replace(config, ddp_procs=env_world)
        if config.command:  # record the launch as a --ddp-procs run (same result)
            launched = replace(launched, command=launched.command_line())
        result = _worker(rank, launched, env_world, "env://")
        return result if rank == 0 else None
    if config.ddp_procs == 1:
        return _worker(0, config, 1, "")
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(_worker, args=(config, config.ddp_procs, init_method, results),
             nprocs=config.ddp_procs, join=True)
    data = results.get()
    data["history"] = data.get("history", [])
    return TrainResult(**data)


def iterate_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The entries of a ``train_log.jsonl``."""
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)
