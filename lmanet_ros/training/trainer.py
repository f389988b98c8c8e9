"""The training loop of one process: set-up, optimisation steps, validation, stop decisions,
the resumable state and the final weights with their metadata.

Every rank of a run builds a :class:`Trainer` and calls :meth:`Trainer.run`; rank 0 alone writes
``last.pt`` (resumable: model, optimizer, scheduler, epoch, images seen, ...; written atomically
at every epoch end, every ``checkpoint_every_min`` and at the stop), ``train_log.jsonl`` (one JSON
object per epoch, and one for a partial last epoch) and ``<model>.safetensors`` (final weights,
fp16, with metadata). :mod:`lmanet_ros.training.launch` starts the processes.

Counting and budgets: "images seen" counts supervised samples (labelled target frames, i.e.
clips), summed over DDP processes; frames run through the network (clips x clip length) are
logged as ``frames_seen``. ``max_images`` and ``time_budget_min`` stop training on the same
footing for two models: the budget is training wall time (steps and data loading), excluding
validation and checkpoint writing, summed over resumed runs.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from lmanet_ros.classes import ClassSet
from lmanet_ros.devices import DeviceError, resolve_device
from lmanet_ros.models import build_model, load_checkpoint, model_entry, save_checkpoint
from lmanet_ros.models.checkpoint import read_state_dict
from lmanet_ros.progress import progress
from lmanet_ros.training.config import (CHECKPOINT_NAME, LOG_NAME, NUM_LOGITS, TrainConfig,
                                        TrainingError, TrainResult)
from lmanet_ros.training.datasets import build_clip_dataset
from lmanet_ros.training.fusion_init import (pca_initialise_query_path, sample_feature_maps,
                                             sample_features, supports_pca)
from lmanet_ros.training.passthrough_init import passthrough_initialise, supports_passthrough
from lmanet_ros.training.losses import class_weights, clip_loss, labels_to_targets

__all__ = ["RankContext", "Trainer", "miou_from_confusion", "train_step"]


#: Training clips (last frames) and feature vectors the ``pca`` fusion initialisation reads.
PCA_INIT_IMAGES = 40
PCA_INIT_VECTORS = 200_000
_FORMAT = "lmanet_ros.train/1"
# Config fields that must not change when a run is resumed.
_IDENTITY_FIELDS = ("model", "dataset", "clip_length", "memory_length", "batch_size", "size",
                    "train_split", "seed", "first_target", "hit_repeat", "class_weighting",
                    "frozen_mode", "lr", "weight_decay", "world_size", "fusion_init", "distill",
                    "grad_clip")


class _NoBar:
    """Stands in for a progress bar where none is shown (other ranks, ``progress=False``)."""

    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(enabled: bool, total: int, desc: str) -> Any:
    """The shared progress bar (:func:`lmanet_ros.progress.progress`: shown when stderr is a
    terminal) over ``total`` batches, or none."""
    if not enabled:
        return _NoBar()
    return progress(total, desc, unit="batch")


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor,
               targets: torch.Tensor, weights: torch.Tensor, *,
               auxiliary_weights: dict[str, float] | None = None, iteration: int | None = None,
               teacher_logits: torch.Tensor | None = None,
               grad_clip: float | None = None) -> float:
    """One optimisation step on a batch; returns the loss before the step (:func:`clip_loss`).

    Args:
        net: the model (or its DDP wrapper): (B, N, 3, H, W) clips -> last-frame outputs.
        optimizer: steps the trainable parameters.
        frames: (B, N, 3, H, W) float RGB in [0, 1] on the model's device.
        targets: (B, H, W) int64 class ids, void = 19.
        weights: (20,) class weights, void 0.
        auxiliary_weights: loss weights of the temporal module's auxiliary outputs.
        iteration: the training iteration (the temporal module's starting memory), or None.
        teacher_logits: (B, 20, H, W) of the distillation teacher on the labelled frame.
        grad_clip: clip the gradient norm to this (None: no clipping).
    """
    outputs = net(frames, outputs=True, iteration=iteration)
    loss = clip_loss(outputs, targets, weights, auxiliary_weights, teacher_logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups
                                        for p in group["params"]], grad_clip)
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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: ``path`` is never half written."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resolve_device(spec: str, local_rank: int, world_size: int) -> torch.device:
    """The device of this process: ``spec`` resolved, ``cuda`` becoming the local rank's GPU
    when there are several processes."""
    try:
        device = resolve_device(spec)
    except DeviceError as exc:
        raise TrainingError(str(exc)) from exc
    if device.type == "cuda" and world_size > 1:
        if device.index is not None:
            raise TrainingError("with several processes give --device cuda (each process "
                                "takes the GPU of its local rank), not cuda:N")
        device = torch.device("cuda", local_rank)
        if local_rank >= torch.cuda.device_count():
            raise TrainingError(f"device {device} requested but only "
                                f"{torch.cuda.device_count()} CUDA devices exist")
    return device


class RankContext:
    """Rank, world size and the collectives the loop needs (no-ops in a single process)."""

    def __init__(self, rank: int, world_size: int, local_rank: int) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def distributed(self) -> bool:
        """Whether there are several processes (a process group)."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes files and prints."""
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor, op: Any = None) -> torch.Tensor:
        """``tensor`` reduced (summed by default) over the ranks, in place."""
        if self.distributed:
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            dist.barrier()


# --------------------------------------------------------------------------- the trainer

class Trainer:
    """One process's share of a run (all ranks run this; rank 0 writes files)."""

    def __init__(self, config: TrainConfig, ctx: RankContext) -> None:
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

        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = build_model(config.model, num_classes=NUM_LOGITS,
                                 memory_length=config.memory_length).to(self.device)
        # A delayed model's clip runs past its labelled frame (the output is the frame before).
        common = dict(clip_length=config.clip_length, size=config.size, seed=config.seed,
                      future_frames=self.model.output_delay_frames)
        synth_only = dict(first_target=config.first_target) if config.dataset == "synth" else {}
        train_extra = dict(synth_only, hit_repeat=config.hit_repeat) if synth_only else {}
        self.train_set = build_clip_dataset(config.dataset, config.data, config.train_split,
                                            augment=True, **common, **train_extra)
        self.val_set = None
        if config.val_split:
            val_extra = dict(synth_only, target_stride=config.val_stride) if synth_only else {}
            self.val_set = build_clip_dataset(config.dataset, config.data, config.val_split,
                                              augment=False, **common, **val_extra)

        self.temporal = self.model.info.temporal
        self.auxiliary_weights = (dict(self.model.temporal_module.auxiliary_loss_weights)
                                  if self.temporal else {})
        self.teacher = self._build_teacher()
        self.init_report: str | None = None
        self.fusion_init_used: str | None = None  # "auto" resolved; None: no temporal module
        if self.temporal:
            self.fusion_init_used = self._resolve_fusion_init()
        self.state: dict[str, Any] = dict(epoch=0, epoch_images=0, epoch_loss_sum=0.0,
                                          epoch_loss_count=0, images_seen=0, frames_seen=0,
                                          train_seconds=0.0, wall_seconds=0.0, val_miou=None,
                                          steps=0, finished=False)
        resume_state = self._read_resume_state()
        if resume_state is None:
            self._initialise_weights()
        for part in self.frozen_parts:
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
        """The saved state to resume from (``--resume``), checked against this config; None for
        a fresh run (which must not overwrite an existing one)."""
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
        mapping = model_entry(config.model).single_frame_init
        state, _ = read_state_dict(config.init)
        own = self.model.state_dict()
        if mapping is not None and any(k not in own for k in state):
            # A single-frame checkpoint under other names (TDNet: its encoder in every path).
            report = load_checkpoint(self.model, mapping(self.model, state), strict=False)
            self.init_report = "single-frame weights mapped: " + report.summary()
        else:
            # Strict: a single-frame checkpoint loads into LMANet (its temporal parts stay as
            # initialised); any other missing or unexpected key raises CheckpointError.
            report = load_checkpoint(self.model, config.init, strict=True)
            self.init_report = report.summary()
        if not report.initialised or self.fusion_init_used == "random":
            return  # the temporal parts came from the checkpoint, or the release's start
        maps = sample_feature_maps(self.model, self.train_set, images=PCA_INIT_IMAGES,
                                   seed=config.seed, device=self.device)
        module = self.model.temporal_module
        try:
            if self.fusion_init_used == "pca":
                features = sample_features(maps, max_vectors=PCA_INIT_VECTORS, seed=config.seed)
                summary = pca_initialise_query_path(module, features).summary()
            else:
                summary = passthrough_initialise(module, maps.to(self.device))
        except ValueError as exc:
            raise TrainingError(f"--fusion-init {self.fusion_init_used}: {exc}") from None
        self.init_report += "; " + summary

    def _resolve_fusion_init(self) -> str:
        """``--fusion-init`` with ``auto`` resolved for this model's temporal module."""
        asked, module = self.config.fusion_init, self.model.temporal_module
        available = {"pca": supports_pca(module), "passthrough": supports_passthrough(module),
                     "random": True}
        if asked == "auto":
            return next(name for name, ok in available.items() if ok)
        if not available[asked]:
            raise TrainingError(f"--fusion-init {asked} does not apply to '{self.config.model}' "
                                f"({type(module).__name__}); choose one of "
                                f"{', '.join(n for n, ok in available.items() if ok)}")
        return asked

    @property
    def frozen_parts(self) -> tuple[nn.Module, ...]:
        """The single-frame network's parts a temporal model trains with frozen (LMANet's
        recipe); none for a single-frame model or a module whose recipe trains them (TDNet)."""
        if not self.temporal or self.model.temporal_module.trains_single_frame_parts:
            return ()
        return self.model.single_frame_modules

    def _build_teacher(self) -> nn.Module | None:
        """The frozen single-frame distillation teacher (``--distill``), or None."""
        path = self.config.distill
        if path is None:
            return None
        if not path.is_file():
            raise TrainingError(f"--distill: no file {path}")
        teacher = build_model("erfnet", num_classes=NUM_LOGITS)
        try:
            load_checkpoint(teacher, path, strict=True)
        except ValueError as exc:
            raise TrainingError(f"--distill needs single-frame erfnet weights: {exc}") from None
        return teacher.to(self.device).eval().requires_grad_(False)

    def _freeze_unused_parameters(self) -> list[str]:
        """Freeze parameters the training forward never reaches (e.g. ERFNet's
        ``encoder.output_conv``, kept for checkpoint compatibility); DDP needs every trainable
        parameter to get a gradient. Found with one eval-mode pass (no statistics change)."""
        was_training = self.model.training
        self.model.eval()
        probe = torch.zeros(1, self.config.clip_length, 3, 64, 64, device=self.device)
        rotation = self.model.temporal_module.training_rotation if self.temporal else 1
        for iteration in range(rotation):  # every starting memory a run will use
            outputs = self.model(probe, outputs=True,
                                 iteration=iteration if self.temporal else None)
            sum(value.float().sum() for value in outputs.values()).backward()
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
            self.state[key] = state.get(key, self.state[key])  # "steps": older states lack it
        self.state["finished"] = False

    # ------------------------------------------------------------------ files (rank 0)
    def _checkpoint(self) -> None:
        """Write the resumable state ``last.pt`` (rank 0)."""
        if not self.ctx.main:
            return
        payload = dict(format=_FORMAT, model=self.model.state_dict(),
                       optimizer=self.optimizer.state_dict(),
                       scheduler=self.scheduler.state_dict(),
                       loss_weights=self.loss_weights.cpu(), weighting_used=self.weighting_used,
                       config=self._identity(), full_config=self.config.to_json(), **self.state)
        _atomic_torch_save(payload, self.checkpoint_path)

    def _log(self, entry: dict[str, Any]) -> None:
        """Append one entry to ``train_log.jsonl`` (rank 0)."""
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
            "num_classes": NUM_LOGITS,
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
            "distill": None if config.distill is None else str(config.distill),
            "grad_clip": config.grad_clip,
            "auxiliary_loss_weights": self.auxiliary_weights,
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
        if self.config.frozen_mode == "eval":
            for part in self.frozen_parts:
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
        teacher_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(frames[:, -1])
        loss = train_step(self.net, self.optimizer, frames, targets, self.loss_weights,
                          auxiliary_weights=self.auxiliary_weights,
                          iteration=state["steps"] if self.temporal else None,
                          teacher_logits=teacher_logits, grad_clip=config.grad_clip or None)
        state["steps"] += 1
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
        confusion = torch.zeros(NUM_LOGITS - 1, NUM_LOGITS - 1, dtype=torch.int64,
                                device=self.device)
        k = NUM_LOGITS - 1
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
        """Train until a stop reason (epochs, max_images, time_budget); write the weights."""
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
        frozen = [name for name, part in self.model.named_children()
                  if part in self.frozen_parts and any(True for _ in part.parameters())]
        if frozen:
            lines.append(f"{' and '.join(frozen)} frozen (frozen_mode {config.frozen_mode})")
        if self.auxiliary_weights:
            lines.append("auxiliary losses: " + ", ".join(
                f"{name} x{weight:g}" for name, weight in self.auxiliary_weights.items()))
        if self.teacher is not None:
            lines.append(f"distilling from {config.distill} (KL, temperature 1)")
        if config.grad_clip:
            lines.append(f"gradient norm clipped to {config.grad_clip:g}")
        if self.unused:
            lines.append(f"not reached by the forward pass, frozen: {', '.join(self.unused)}")
        if self.init_report:
            lines.append(f"init {config.init}: {self.init_report}")
        if self.config.resume:
            lines.append(f"resumed at epoch {self.state['epoch'] + 1}, "
                         f"{self.state['images_seen']} images seen")
        print("\n".join(lines), flush=True)
