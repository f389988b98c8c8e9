"""`lmanet eval`: score the node's pipeline on a rosbag2, offline (or a running node, ``--live``).

Offline, every image frame of the chosen topics goes, in recorded order, through the pipeline with
the node's memory rules; ground truth comes from a mono8 label topic matched by header stamp
(:func:`lmanet_ros.evaluation.evaluate`). Writes to ``--out``: ``metrics.json``, ``report.md``,
``class_iou.png``, ``latency_hist.png``, ``flip_rate.png`` and ``overlay.mp4``; ``--output-bag``
adds a rosbag2 with labels, colour and overlay topics. A bag with a corruption log (``lmanet synth
--corruption``) adds scores on hit frames, clean frames and per kind, the clean-version and
last-clean-frame references, a memory check of each temporal model and ``corruption_kinds.png``.
Ctrl-C stops after the current frame and writes everything for the frames done, flagged
``"partial": true``.

``--live`` scores a running ``lmanet_node`` instead: the bag is replayed in lock-step (next frame
once the node's labels of the previous one arrived) and the labels it publishes are scored the
same way (:func:`lmanet_ros.evaluation.replay_bag`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmanet_ros.bags import STORAGES
from lmanet_ros.evaluation import EvalError, EvalOptions, ReplayError, ReplayOptions, evaluate
from lmanet_ros.evaluation import parse_compare, parse_remaps
from lmanet_ros.evaluation.corruption import AUTO
from lmanet_ros.models import DEMO, list_models, models_with_weights
from lmanet_ros.pipeline import PipelineError
from lmanet_ros.runtime import BACKEND_CHOICES
from lmanet_ros.tools.common import (add_bag_command, add_scoring_arguments, int_at_least,
                                     parse_size)
from lmanet_ros.tools.replay import add_replay_arguments, replay_and_report


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lmanet eval``."""
    parser = add_bag_command(subparsers, "eval", __doc__,
                             out_help="directory for metrics.json, report.md, plots and video")
    data = parser.add_argument_group("data")
    data.add_argument("--image-topic", nargs="+", metavar="TOPIC",
                      help="camera topic(s) (sensor_msgs/Image or CompressedImage); default: "
                      "the bag's only image topic besides the label topic")
    model = parser.add_argument_group("model")
    memory = parser.add_argument_group("memory rules (as the node's memory.* parameters)")
    add_scoring_arguments(data, memory)
    data.add_argument("--stride", type=int, default=1,
                      help="use every N-th frame of each camera (a slower processing rate)")
    data.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = all)")
    data.add_argument("--corruption-topic", type=_topic_or_off, default=AUTO, metavar="TOPIC",
                      help="per-frame corruption log of the first camera (diagnostic_msgs/"
                      "DiagnosticArray, as `lmanet synth --corruption` writes): scores on hit "
                      "frames, clean frames and per kind, with references; default: "
                      "<camera namespace>/corruption when the bag has it; 'none': off")
    data.add_argument("--clean-topic", type=_topic_or_off, default=AUTO, metavar="TOPIC",
                      help="clean versions of the camera's frames, for the clean-version "
                      "reference; default: <camera>_clean when the bag has it; 'none': off")
    model.add_argument("--model", help=f"registered model name: {', '.join(list_models())}")
    model.add_argument("--checkpoint", help="weights file (.pth, .pt, .safetensors) or tag: "
                       "'demo' names the packaged demo weights of the model (" +
                       ", ".join(models_with_weights(DEMO)) + "); required unless "
                       "--random-weights")
    model.add_argument("--random-weights", action="store_true",
                       help="let models without a checkpoint (--model without --checkpoint, "
                       "--compare MODEL without :CKPT) run on random weights: their scores are "
                       "noise, for pipeline and speed tests only")
    model.add_argument("--compare", nargs="+", metavar="MODEL[:CKPT]",
                       help="more models to run on the same frames (one table, one plot)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    model.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                       help="arithmetic precision")
    model.add_argument("--num-threads", type=int, default=0,
                       help="CPU threads for PyTorch (0 = the physical cores this process "
                       "may run on, at most 4, as the node's num_threads)")
    model.add_argument("--backend", default="torch", choices=BACKEND_CHOICES,
                       help="what runs the networks, as the node's backend parameter: torch, "
                       "onnxruntime / openvino (graphs exported from each checkpoint on "
                       "first use and cached; CPU, fp32, a fixed --input-size, else the "
                       "trained size), or auto (the node's default: a graph backend where it "
                       "can run, else torch; metrics.json names the one that ran); default: "
                       "%(default)s")
    model.add_argument("--input-size", type=parse_size, metavar="HxW",
                       help="network input size (default: the size the weights were trained at, "
                       "from the checkpoint, else each frame's size), as the node's "
                       "input_height/input_width")
    memory.add_argument("--memory-length", type=int_at_least(1), default=None,
                        help="frames in the memory (default: the checkpoint's metadata, else the "
                             "model's own T)")
    memory.add_argument("--memory-stride", type=int, default=1,
                        help="store every k-th processed frame in the memory")
    model.add_argument("--no-memory-check", action="store_true",
                       help="with a corruption log, skip running each temporal model with its "
                       "memory replaced by the current frame")
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--no-video", action="store_true", help="skip overlay.mp4")
    outputs.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    outputs.add_argument("--output-bag", type=Path, metavar="PATH",
                         help="write a rosbag2 with labels, colour and overlay topics")
    outputs.add_argument("--output-storage", choices=STORAGES,
                         help="storage of --output-bag (default: the input's)")
    live = parser.add_argument_group("live (score a running lmanet_node instead)")
    live.add_argument("--live", action="store_true",
                      help="replay the bag in lock-step to a running node and score its labels")
    live.add_argument("--node", default="/lmanet",
                      help="the node's fully qualified name (labels on <node>/labels)")
    add_replay_arguments(parser, for_eval=True)
    parser.set_defaults(handler=run)
    return parser


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """The :class:`EvalOptions` of parsed ``lmanet eval`` arguments (offline)."""
    return EvalOptions(
        bag=args.bag, out=args.out, model=args.model, checkpoint=args.checkpoint,
        compare=parse_compare(args.compare), image_topics=args.image_topic,
        label_topic=args.label_topic, label_ids=args.label_ids, stride=args.stride,
        max_frames=args.max_frames, device=args.device, precision=args.precision,
        num_threads=args.num_threads, backend=args.backend, input_size=args.input_size,
        memory_length=args.memory_length, max_gap=args.max_gap,
        memory_stride=args.memory_stride, video=not args.no_video, plots=not args.no_plots,
        output_bag=args.output_bag, output_storage=args.output_storage,
        clean_topic=args.clean_topic, corruption_topic=args.corruption_topic,
        memory_check=not args.no_memory_check)


def _topic_or_off(text: str) -> str | None:
    """A topic name, ``auto``, or ``none`` (None: off)."""
    return None if text.strip().lower() == "none" else text


def _run_live(args: argparse.Namespace) -> int:
    topics = args.image_topic
    if topics is not None and len(topics) != 1:
        print("lmanet eval: error: --live scores one camera topic", file=sys.stderr)
        return 2
    if args.backend != "torch":
        print("lmanet eval: error: --backend chooses the offline pipeline's backend; with --live "
              "the node runs the network: set its backend parameter", file=sys.stderr)
        return 2
    try:
        options = ReplayOptions(
            bag=args.bag, topics=topics, remap=parse_remaps(args.remap), rate=args.rate,
            lockstep=True, node_labels_topics=[args.node.rstrip("/") + "/labels"],
            timeout=args.timeout, startup_timeout=args.startup_timeout,
            reliable=not args.best_effort, depth=args.depth, clock=not args.no_clock,
            max_frames=args.max_frames, score_out=args.out, label_topic=args.label_topic,
            label_ids=args.label_ids, max_gap=args.max_gap, video=not args.no_video)
    except ReplayError as exc:
        print(f"lmanet eval: error: {exc}", file=sys.stderr)
        return 2
    return replay_and_report(options, "eval")


def _random_weights_refusal(args: argparse.Namespace) -> str | None:
    """Why the run is refused: a model without a checkpoint, unless ``--random-weights``."""
    if args.random_weights:
        return None
    main = [args.model] if not args.checkpoint else []
    compared = [item for item in args.compare or [] if not item.partition(":")[2]]
    if not main and not compared:
        return None
    with_demo = set(models_with_weights(DEMO))
    hints = (["--checkpoint demo"] if set(main) & with_demo else []) + [
        f"--compare {name}:demo" for name in compared if name in with_demo]
    return (f"no checkpoint for {', '.join(dict.fromkeys(main + compared))}: they would run on "
            "random weights and score noise. Give --checkpoint FILE (MODEL:FILE in --compare)"
            + (f"; the packaged demo weights: {', '.join(hints)}" if hints else "")
            + "; --random-weights runs them anyway (pipeline tests)")


def run(args: argparse.Namespace) -> int:
    """Run ``lmanet eval``."""
    if args.live:
        return _run_live(args)
    if not args.model:
        print("lmanet eval: error: --model is required (except with --live)", file=sys.stderr)
        return 2
    refusal = _random_weights_refusal(args)
    if refusal:
        print(f"lmanet eval: error: {refusal}", file=sys.stderr)
        return 2
    if args.random_weights:
        print("lmanet eval: WARNING: models without a checkpoint run on RANDOM WEIGHTS "
              "(--random-weights): their scores are noise", file=sys.stderr)
    try:
        outcome = evaluate(options_from_args(args))
    except (EvalError, PipelineError, ValueError, FileNotFoundError) as exc:
        print(f"lmanet eval: error: {exc}", file=sys.stderr)
        return 2
    for model in outcome.payload["models"]:
        acc = model["accuracy"]
        miou = f"mIoU {100 * acc['miou']:.1f} %" if acc and acc["miou"] is not None else "no labels"
        tc = model["temporal_consistency"]["flip_rate"]
        print(f"{model['label']}: {miou}, flip rate "
              f"{'-' if tc is None else f'{100 * tc:.2f} %'}, p50 "
              f"{model['latency_ms']['p50'] or 0:.1f} ms, {model['frames']} frames",
              file=sys.stderr)
    print(f"wrote {len(outcome.files)} files to {args.out}"
          + (" (partial: interrupted)" if outcome.interrupted else ""), file=sys.stderr)
    return 130 if outcome.interrupted else 0
