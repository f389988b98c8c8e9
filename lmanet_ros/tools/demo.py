"""`lmanet demo`: stream a few synthetic street frames through the pipeline, print the timings.

The issue-2 form of the demo: it shows the model running one frame at a time with its memory,
per-frame stage times, the memory fill and the pixel accuracy against the generator's exact labels
(near chance with random weights; pass ``--checkpoint`` for trained ones).
"""
from __future__ import annotations

import argparse

import numpy as np

from lmanet_ros.classes import IGNORE_INDEX
from lmanet_ros.models import list_models
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.streams import MemoryPolicy
from lmanet_ros.synth import HELDOUT_SEEDS, SynthSequence
from lmanet_ros.tools.common import parse_size


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `lmanet demo`."""
    parser = subparsers.add_parser(
        "demo", help="stream synthetic frames through the model and print per-frame times",
        description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lmanet_erfnet", choices=list_models(),
                        help="network to run (default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="weights (.pth/.safetensors); default: random weights")
    parser.add_argument("--frames", type=int, default=8, help="frames to stream (default: 8)")
    parser.add_argument("--size", type=parse_size, default=(256, 512),
                        help="frame size HxW in pixels (default: 256x512)")
    parser.add_argument("--memory-length", type=int, default=4,
                        help="frames in the memory, T (default: 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=HELDOUT_SEEDS[0],
                        help="synthetic sequence seed (default: the first held-out seed)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo; return 0."""
    height, width = args.size
    pipeline = SegmentationPipeline.from_pretrained(
        args.model, args.checkpoint, device=args.device,
        policy=MemoryPolicy(memory_length=args.memory_length))
    if args.checkpoint is None:
        print("WARNING: random weights (no --checkpoint): labels are meaningless, times are real")
    print(f"model {args.model} on {pipeline.device}, {height}x{width}, T={args.memory_length}, "
          f"checkpoint {pipeline.checkpoint_id}")
    pipeline.warmup(height, width)
    sequence = SynthSequence(args.seed, height=height, width=width, n_frames=args.frames,
                             corruption="standard")
    print(f"{'frame':>5} {'memory':>6} {'pre ms':>7} {'infer ms':>9} {'post ms':>8} "
          f"{'total ms':>9} {'pixel acc':>9}")
    totals = []
    for synth in sequence:
        (result,) = pipeline.process([Frame("demo", synth.image, synth.time_s, "camera")])
        valid = synth.labels != IGNORE_INDEX
        accuracy = float(np.mean(result.labels[valid] == synth.labels[valid]))
        t = result.timings
        totals.append(t.total_ms)
        print(f"{synth.index:>5} {result.memory_fill:>6} {t.preprocess_ms:>7.1f} "
              f"{t.inference_ms:>9.1f} {t.postprocess_ms:>8.1f} {t.total_ms:>9.1f} "
              f"{accuracy:>9.3f}")
    print(f"median total {np.median(totals):.1f} ms per frame")
    return 0
