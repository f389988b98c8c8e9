"""``lmanet train``: train ERFNet from scratch, then LMANet from it (the release's recipe).

Examples::

    lmanet train --model erfnet --data synth/ --out runs/erfnet --size 128x256
    lmanet train --model lmanet_erfnet --init runs/erfnet/erfnet.safetensors \\
        --data synth/ --out runs/lmanet --size 128x256 --memory-length 3
    lmanet train --model erfnet --dataset cityscapes --data ~/cityscapes --out runs/cs \\
        --size 512x1024 --device cuda --ddp-procs 2 --backend nccl
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from lmanet_ros.models import list_models
from lmanet_ros.sizes import parse_size
from lmanet_ros.tools.common import non_negative_int, positive_float, positive_int
from lmanet_ros.training import (CLASS_WEIGHTINGS, DATASET_KINDS, DEFAULT_FIRST_TARGET,
                                 FROZEN_MODES, FUSION_INITS, DatasetError, TrainConfig,
                                 TrainingError, command_line, train)

__all__ = ["add_parser", "run", "config_from_args"]


def _size(text: str) -> tuple[int, int]:
    """argparse type of ``--size``: ``HxW``, multiples of 8 (the network works at 1/8)."""
    try:
        return parse_size(text, multiple_of=8)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the ``lmanet`` subcommand parsers."""
    parser = subparsers.add_parser(
        "train", allow_abbrev=False, help="train erfnet or lmanet_erfnet",
        description="Train ERFNet from scratch on single frames, then LMANet (lmanet_erfnet) "
                    "from it: encoder and decoder frozen, keys/values and fusion trained on "
                    "clips of T+1 frames, loss on the last frame (the release's recipe).")
    what = parser.add_argument_group("model and data")
    what.add_argument("--model", required=True, choices=list_models(),
                      help="network to train")
    what.add_argument("--data", required=True,
                      help="dataset root: an `lmanet synth` folder, or a Cityscapes root with "
                           "leftImg8bit_sequence/ and gtFine/")
    what.add_argument("--dataset", choices=DATASET_KINDS, default="synth",
                      help="layout of --data (default: synth)")
    what.add_argument("--out", required=True,
                      help="output folder: last.pt (resumable), train_log.jsonl, "
                           "<model>.safetensors")
    what.add_argument("--init", default=None,
                      help="initial weights (required for the temporal models: single-frame "
                           "erfnet weights, whose encoder tdnet_erfnet copies into every path; "
                           "optional for erfnet)")
    what.add_argument("--size", type=_size, default=None, metavar="HxW",
                      help="working size (multiples of 8); default: the files' size")
    what.add_argument("--train-split", default="train",
                      help="training split folder name (default: train)")
    what.add_argument("--val-split", default="val",
                      help="held-out split validated after every epoch (default: val; '' for "
                           "none)")
    what.add_argument("--val-stride", type=positive_int, default=1,
                      help="validate on every n-th target frame of each synthetic sequence "
                           "(default: 1)")
    what.add_argument("--first-target", type=non_negative_int, default=None,
                      help="synthetic data: first frame of a sequence used as a target "
                           f"(default max({DEFAULT_FIRST_TARGET}, clip length - 1)); give two "
                           "models the same value to train and validate them on the same "
                           "targets")
    what.add_argument("--hit-repeat", type=positive_int, default=1, metavar="K",
                      help="synthetic data: list each training target whose image is corrupted "
                           "(sequences.json's corruption log) K times (default: 1)")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=positive_int, default=50, help="epochs (default: 50)")
    recipe.add_argument("--batch-size", type=positive_int, default=5,
                        help="clips per step and process (default: 5)")
    recipe.add_argument("--memory-length", type=positive_int, default=None,
                        help="T: frames the memory holds (temporal models; stored in the "
                             "metadata; default: 3, the release's training length, or the "
                             "model's own T when smaller)")
    recipe.add_argument("--clip-length", type=positive_int, default=None,
                        help="frames per clip, T+1 (default: 1 for erfnet, memory length + 1 "
                             "for lmanet)")
    recipe.add_argument("--lr", type=positive_float, default=2e-4,
                        help="Adam learning rate (default: 2e-4)")
    recipe.add_argument("--weight-decay", type=float, default=1e-4,
                        help="Adam weight decay (default: 1e-4)")
    recipe.add_argument("--class-weights", choices=CLASS_WEIGHTINGS, default="auto",
                        help="erfnet: ERFNet's Cityscapes table; frequency: 1/ln(1.10 + p_c) "
                             "from the training labels; auto: erfnet on Cityscapes, else "
                             "frequency (default)")
    recipe.add_argument("--frozen-mode", choices=FROZEN_MODES, default="eval",
                        help="lmanet: frozen encoder/decoder in eval mode (BN statistics fixed, "
                             "dropout off) or in train mode as in the release (statistics "
                             "drift); default: eval")
    recipe.add_argument("--fusion-init", choices=FUSION_INITS, default="auto",
                        help="lmanet: start the query path as a PCA pass-through of the encoder "
                             "features (pca) or randomly as in the release (random); auto "
                             "(default): pca where the fusion allows it (ERFNet), else random")
    recipe.add_argument("--distill", default=None, metavar="WEIGHTS",
                        help="temporal models: add KL(teacher || output) on the labelled frame, "
                             "the teacher single-frame erfnet WEIGHTS (TDNet's distillation; "
                             "weighted like the outputs: 1, and 0.5 for TDNet's sub output)")
    recipe.add_argument("--grad-clip", type=float, default=None, metavar="NORM",
                        help="clip the gradient norm (default: the published recipe's: 0.1 for "
                             "the STF models, none for others; 0: none)")
    recipe.add_argument("--seed", type=int, default=0,
                        help="seed of initial weights, sample order and augmentation (default: 0)")

    limits = parser.add_argument_group("budget and checkpoints")
    limits.add_argument("--time-budget", type=positive_float, default=None, metavar="MIN",
                        help="stop after this many minutes of training (validation and saving "
                             "excluded; summed over resumes)")
    limits.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="stop after N supervised images (clips), all processes together")
    limits.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out/last.pt")
    limits.add_argument("--checkpoint-every", type=positive_float, default=10.0, metavar="MIN",
                        help="also save last.pt every MIN minutes within an epoch (default: 10)")

    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    runtime.add_argument("--workers", type=non_negative_int, default=None,
                         help="data-loading processes per training process (default: 0 on CPU, "
                              "where they would take cores from the step; 4 on CUDA)")
    runtime.add_argument("--threads", type=positive_int, default=None,
                         help="CPU threads per training process (default: torch's, i.e. all "
                              "cores; cores / processes with --ddp-procs). On a busy machine "
                              "fewer threads than cores can be much faster")
    runtime.add_argument("--ddp-procs", type=positive_int, default=1,
                         help="spawn N DistributedDataParallel processes (one per GPU); a "
                              "torchrun launch (WORLD_SIZE set) is detected without it")
    runtime.add_argument("--backend", choices=("gloo", "nccl"), default="gloo",
                         help="torch.distributed backend (default: gloo; nccl for GPUs)")
    runtime.add_argument("--no-progress", dest="progress", action="store_false",
                         help="no progress bars (they are shown only when stderr is a terminal)")
    parser.set_defaults(handler=run)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``lmanet train`` arguments, with its command line."""
    config = TrainConfig(
        model=args.model, data=args.data, out=args.out, dataset=args.dataset, init=args.init,
        epochs=args.epochs, batch_size=args.batch_size, clip_length=args.clip_length,
        memory_length=args.memory_length, lr=args.lr, weight_decay=args.weight_decay,
        size=args.size, workers=args.workers, threads=args.threads, device=args.device,
        resume=args.resume, time_budget_min=args.time_budget, max_images=args.max_images,
        train_split=args.train_split, val_split=args.val_split or None,
        val_stride=args.val_stride, seed=args.seed, first_target=args.first_target,
        hit_repeat=args.hit_repeat,
        class_weighting=args.class_weights, frozen_mode=args.frozen_mode,
        fusion_init=args.fusion_init, distill=args.distill, grad_clip=args.grad_clip,
        checkpoint_every_min=args.checkpoint_every, progress=args.progress,
        ddp_procs=args.ddp_procs, backend=args.backend)
    return dataclasses.replace(config, command=command_line(config))


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` say; 0 on success, 2 on a bad setting or missing data."""
    try:
        config = config_from_args(args)
        train(config)
    except (ValueError, DatasetError, TrainingError, FileNotFoundError) as error:
        print(f"lmanet train: error: {error}", file=sys.stderr)
        return 2
    return 0
