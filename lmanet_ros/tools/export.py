"""`lmanet export`: write a model's step as ONNX graphs, one per memory fill level, with metadata.

``lmanet export MODEL --checkpoint W --format onnx --out FILE [--input-size HxW]
[--memory-length T]``: a single-frame model's graph is FILE; a temporal model's graphs are
``<stem>.fill<k>.onnx`` beside it for k = 0..T (the memory as explicit inputs, LMANet's joint
softmax exact at every fill level). Each graph is checked against PyTorch before it is written;
its metadata (``lmanet.*`` metadata_props) names the classes, palette, normalisation, input
size, memory length, fill level, memory tensors and the checkpoint's sha256. The library
function is :func:`lmanet_ros.runtime.export_onnx`; the TensorRT recipe is in
:mod:`lmanet_ros.runtime`'s docstring.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmanet_ros.models import DEMO, CheckpointError, list_models, models_with_weights
from lmanet_ros.runtime import BackendError, export_onnx
from lmanet_ros.tools.common import int_at_least, parse_size

#: Export formats.
FORMATS = ("onnx",)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lmanet export``."""
    summary = __doc__.split("\n", 1)[0].split(":", 1)[1].strip().rstrip(".")
    parser = subparsers.add_parser("export", allow_abbrev=False, help=summary,
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=list_models(), metavar="MODEL",
                        help=f"registered model name: {', '.join(list_models())}")
    parser.add_argument("--checkpoint", required=True,
                        help="weights file (.pth, .pt, .safetensors) or tag: 'demo' names the "
                        "packaged demo weights (" + ", ".join(models_with_weights(DEMO)) + ")")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="graph format")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="the graph file (temporal models: <stem>.fill<k>.onnx beside it)")
    parser.add_argument("--input-size", type=parse_size, metavar="HxW",
                        help="the graphs' fixed input size (default: the size the weights were "
                        "trained at, from the checkpoint)")
    parser.add_argument("--memory-length", type=int_at_least(1), default=None, metavar="T",
                        help="frames in the memory (default: the checkpoint's metadata, else "
                        "the model's own T)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``lmanet export``."""
    try:
        paths = export_onnx(args.model, args.checkpoint, args.out, input_size=args.input_size,
                            memory_length=args.memory_length)
    except (BackendError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"lmanet export: error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
