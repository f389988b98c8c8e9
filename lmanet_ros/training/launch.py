"""Running a training job end to end: one process, ``ddp_procs`` spawned processes or one rank
of a torchrun-style launch, and the ``lmanet train`` command line that reproduces a config
(recorded in the weights' metadata as ``training_command``).

With the same seed, data, batch size and ``first_target`` two models draw the same targets in
the same order with the same augmentation, in any number of processes.
"""
from __future__ import annotations

import os
import shlex
import socket
from dataclasses import asdict, replace
from typing import Any

import torch
import torch.distributed as dist

from lmanet_ros.sizes import format_size
from lmanet_ros.training.config import TrainConfig, TrainingError, TrainResult
from lmanet_ros.training.trainer import RankContext, Trainer

__all__ = ["command_line", "free_port", "train"]

# Flags of ``lmanet train`` in the order of the reproducible command, with their config fields.
_COMMAND_FLAGS = (
    ("--model", "model"), ("--data", "data"), ("--dataset", "dataset"), ("--out", "out"),
    ("--init", "init"), ("--size", "size"), ("--train-split", "train_split"),
    ("--val-split", "val_split"), ("--val-stride", "val_stride"),
    ("--first-target", "first_target"), ("--hit-repeat", "hit_repeat"), ("--epochs", "epochs"),
    ("--batch-size", "batch_size"), ("--memory-length", "memory_length"),
    ("--clip-length", "clip_length"), ("--lr", "lr"), ("--weight-decay", "weight_decay"),
    ("--class-weights", "class_weighting"), ("--frozen-mode", "frozen_mode"),
    ("--fusion-init", "fusion_init"), ("--distill", "distill"), ("--grad-clip", "grad_clip"),
    ("--seed", "seed"), ("--time-budget", "time_budget_min"), ("--max-images", "max_images"),
    ("--checkpoint-every", "checkpoint_every_min"), ("--device", "device"),
    ("--workers", "workers"), ("--ddp-procs", "ddp_procs"), ("--backend", "backend"),
)


def command_line(config: TrainConfig) -> str:
    """The ``lmanet train`` command that reproduces ``config``, every setting explicit
    (defaults resolved, e.g. the clip length and first target).

    ``--resume``, ``--no-progress`` and ``--threads`` are left out: they do not change what
    is trained.
    """
    words = ["lmanet", "train"]
    for flag, name in _COMMAND_FLAGS:
        value = getattr(config, name)
        if name == "val_split" and value is None:
            value = ""
        elif value is None or (name == "fusion_init" and not config.temporal):
            continue
        elif name == "size":
            value = format_size(value)
        words += [flag, str(value)]
    return shlex.join(words)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a spawned run's process group)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        result = Trainer(config, RankContext(rank, world_size, local_rank)).run()
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
            launched = replace(launched, command=command_line(launched))
        result = _worker(rank, launched, env_world, "env://")
        return result if rank == 0 else None
    if config.ddp_procs == 1:
        return _worker(0, config, 1, "")
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    init_method = f"tcp://127.0.0.1:{free_port()}"
    mp.spawn(_worker, args=(config, config.ddp_procs, init_method, results),
             nprocs=config.ddp_procs, join=True)
    data = results.get()
    data["history"] = data.get("history", [])
    return TrainResult(**data)
