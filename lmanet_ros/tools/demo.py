"""`lmanet demo`: the whole product on synthetic video, end to end, in a few minutes.

1. ``lmanet synth``: a rosbag2 of held-out synthetic street sequences (seeds the demo models
   never saw in training, corruption recipe ``standard-v1``) with exact ground-truth labels;
2. ``lmanet_node`` in its own process with the demo weights (``checkpoint:=demo``), in
   ``processing_mode all`` with reliable input, so that no frame is dropped;
3. lock-step replay of the bag into the node (``lmanet eval --live``): each frame is published
   once the node's labels of the previous one arrived; the labels the node publishes are scored
   against the ground truth, and its overlays go into ``overlay.mp4`` beside the input;
4. the same bag through ``lmanet eval --compare`` offline: single-frame ERFNet against LMANet,
   both demo models, so the report shows what the memory does (mIoU, label flip rate).

Everything lands in ``--out`` (default ``lmanet_demo/``): ``live/`` (report.md, metrics.json,
plots, overlay.mp4 of what the node published), ``compare/`` (report.md, metrics.json, plots),
``bag/`` and ``node.log``. ROS traffic stays on this host (``ROS_AUTOMATIC_DISCOVERY_RANGE``
LOCALHOST, :func:`lmanet_ros.ros_env.isolate`) in a ``ROS_DOMAIN_ID`` of the demo's own unless
one is set already.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmanet_ros.bags import BagWriter
from lmanet_ros.evaluation import (EvalError, EvalOptions, ModelSpec, ReplayError, ReplayOptions,
                                   evaluate, replay_bag)
from lmanet_ros.models.weights import DEMO, models_with_weights
from lmanet_ros.node.launch_args import NODE_NAME, resolve
from lmanet_ros.pipeline import PipelineError
from lmanet_ros.ros_env import isolate
from lmanet_ros.synthetic import HELDOUT_SEEDS, generate
from lmanet_ros.tools.common import int_at_least, parse_size

IMAGE_TOPIC = "/camera/image"
LABEL_TOPIC = "/camera/labels"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `lmanet demo`."""
    parser = subparsers.add_parser(
        "demo", help="synthetic bag -> lmanet_node -> lock-step replay -> report and video",
        description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("lmanet_demo"),
                        help="output directory, replaced if it holds an earlier demo "
                             "(default: %(default)s)")
    parser.add_argument("--sequences", type=int_at_least(1), default=4,
                        help="held-out synthetic sequences in the bag (default: 4)")
    parser.add_argument("--frames", type=int_at_least(2), default=60,
                        help="frames per sequence (default: 60, 3.5 s at 17 Hz)")
    parser.add_argument("--size", type=parse_size, default=(128, 256),
                        help="frame size HxW; the demo models were trained at 128x256 "
                             "(default: 128x256)")
    parser.add_argument("--seed", type=int, default=HELDOUT_SEEDS[8],
                        help="first sequence seed (default: %(default)s, a held-out seed that the "
                             "demo weights' validation did not use either)")
    parser.add_argument("--model", default="lmanet_erfnet", choices=models_with_weights(DEMO),
                        help="the node's network (default: %(default)s)")
    parser.add_argument("--checkpoint", default=DEMO,
                        help="the node's weights (default: the packaged demo weights)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--no-compare", dest="compare", action="store_false",
                        help="skip the offline erfnet vs lmanet_erfnet comparison")
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="seconds to wait for the node to load and label the first frame")
    parser.set_defaults(handler=run)
    return parser


def _node_executable() -> str:
    candidate = Path(sys.executable).parent / "lmanet_node"
    return str(candidate) if candidate.exists() else "lmanet_node"


def _prepare_out(out: Path) -> None:
    """Create ``out``; an earlier demo there is replaced, anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / "demo.json").is_file():
            raise SystemExit(f"lmanet demo: error: {out} exists and is not an earlier demo's "
                             "output; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _stop(node: subprocess.Popen) -> int:
    """SIGINT the node (a clean ROS shutdown), kill it if it hangs; its exit code."""
    if node.poll() is None:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(10)
    return node.returncode


def _summary(metrics_path: Path) -> list[str]:
    """One line per model of a metrics.json: mIoU, flip rate, latency."""
    payload = json.loads(metrics_path.read_text())
    lines = []
    for model in payload["models"]:
        accuracy = model["accuracy"] or {}
        miou = accuracy.get("miou")
        flips = model["temporal_consistency"]["flip_rate"]
        p50 = model["latency_ms"]["p50"]
        lines.append(f"  {model['label']:<16} mIoU {'-' if miou is None else f'{100 * miou:5.1f}'}"
                     f" %   flip rate {'-' if flips is None else f'{100 * flips:5.2f}'} %"
                     f"   latency p50 {'-' if p50 is None else f'{p50:6.1f}'} ms")
    return lines


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every step worked."""
    started = time.monotonic()
    out = args.out
    _prepare_out(out)
    (out / "demo.json").write_text(json.dumps({"command": sys.argv, "args": {
        k: str(v) for k, v in vars(args).items() if k != "handler"}}, indent=2) + "\n")
    domain_lock = isolate(keep_domain=True)  # DDS on this host, a domain of the demo's own
    height, width = args.size

    print(f"[1/4] synthetic bag: {args.sequences} held-out sequences x {args.frames} frames, "
          f"{height}x{width}, seeds {args.seed}..{args.seed + args.sequences - 1}", flush=True)
    synth = generate(out / "synth", frames=args.frames, height=height, width=width,
                     sequences=args.sequences, seed=args.seed, corruption="standard",
                     bag=BagWriter, folder=False, show_progress=False)
    bag = synth.bag

    print(f"[2/4] starting lmanet_node ({args.model}, checkpoint {args.checkpoint}, "
          f"ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}); log: {out / 'node.log'}", flush=True)
    launch = resolve({"image": IMAGE_TOPIC, "checkpoint": args.checkpoint, "device": args.device,
                      "node_name": NODE_NAME})
    launch.overrides.update({"model": args.model, "processing_mode": "all",
                             "input.reliability": "reliable", "input.depth": 0})
    with open(out / "node.log", "wb") as log:
        node = subprocess.Popen(launch.command(_node_executable()), stdout=log,
                                stderr=subprocess.STDOUT)
    live = out / "live"
    try:
        print("[3/4] replaying the bag into the node in lock-step, scoring what it publishes",
              flush=True)
        try:
            outcome = replay_bag(ReplayOptions(
                bag=bag, topics=[IMAGE_TOPIC], rate=0.0, lockstep=True,
                node_labels_topics=[launch.fully_qualified_name + "/labels"], depth=0,
                startup_timeout=args.startup_timeout, score_out=live, label_topic=LABEL_TOPIC,
                video=True))
        except ReplayError as exc:
            print(f"lmanet demo: error: {exc}\n(the node's log: {out / 'node.log'})",
                  file=sys.stderr)
            return 1
    finally:
        code = _stop(node)
        if domain_lock is not None:
            domain_lock.close()
    if outcome.interrupted:
        return 130
    if outcome.missing or code not in (0, -signal.SIGINT):
        print(f"lmanet demo: error: {len(outcome.missing)} frames got no labels, node exit code "
              f"{code} (log: {out / 'node.log'})", file=sys.stderr)
        return 1
    lines = [f"node ({outcome.frames} frames published, {outcome.labels_received} labels "
             f"received, {outcome.video_frames} video frames):", *_summary(live / "metrics.json")]

    if args.compare:
        print("[4/4] offline comparison on the same bag: erfnet vs lmanet_erfnet (demo weights)",
              flush=True)
        compare = out / "compare"
        try:
            outcome = evaluate(EvalOptions(
                bag=bag, out=compare, image_topics=[IMAGE_TOPIC], label_topic=LABEL_TOPIC,
                model="erfnet", checkpoint=DEMO, compare=[ModelSpec("lmanet_erfnet", DEMO)],
                device=args.device, video=False))
        except (EvalError, PipelineError, ValueError, FileNotFoundError) as exc:
            print(f"lmanet demo: error: {exc}", file=sys.stderr)
            return 2
        if outcome.interrupted:
            return 130
        lines += ["offline comparison:", *_summary(compare / "metrics.json")]
    print("\n".join(["", *lines, "",
                     f"live report:  {live / 'report.md'}",
                     f"live video:   {live / 'overlay.mp4'}  (input | the node's overlay)",
                     f"plots:        {live}/*.png"]
                    + ([f"comparison:   {out / 'compare' / 'report.md'}"] if args.compare else [])
                    + [f"done in {time.monotonic() - started:.0f} s"]))
    return 0
