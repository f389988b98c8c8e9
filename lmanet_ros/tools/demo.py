"""`lmanet demo`: the whole product on synthetic video, end to end, in a few minutes.

1. ``lmanet synth``: a rosbag2 of held-out synthetic street sequences (the pre-registered
   held-out seeds from 10008, never used in training or validation; corruption recipe
   ``robot-v2``: wipers, black frames, heavy noise, glare, night blur, docs/robot-v2-
   preregistration.md) with exact ground-truth labels, the clean versions and the corruption log;
2. ``lmanet_node`` in its own process with the demo weights (``checkpoint:=demo``), in
   ``processing_mode all`` with reliable input, so that no frame is dropped;
3. lock-step replay of the bag into the node (``lmanet eval --live``): each frame is published
   once the node's labels of the previous one arrived; the labels the node publishes are scored
   against the ground truth, and its overlays go into ``overlay.mp4`` beside the input;
4. the same bag through ``lmanet eval --compare`` offline: every model with demo weights, the
   single-frame one first as the baseline, so the report shows what the memory does: mIoU over
   the bag, on the corrupted (hit) frames and on the clean ones, per kind, the label flip rate,
   the gain over the baseline and the memory check (the same network with its memory replaced
   by the current frame: the gain that disappears is the memory's); ``comparison.mp4`` shows
   input | single-frame | LMANet ... side by side, the corrupted frames tagged.

Everything lands in ``--out`` (default ``lmanet_demo/``): ``live/`` (report.md, metrics.json,
plots, overlay.mp4 of what the node published), ``compare/`` (report.md, metrics.json, plots,
overlay.mp4, comparison.mp4), ``synth/`` (the bag, its sequences.json) and ``node.log``. ROS
traffic stays on this host (``ROS_AUTOMATIC_DISCOVERY_RANGE`` LOCALHOST,
:func:`lmanet_ros.ros_env.isolate`) in a ``ROS_DOMAIN_ID`` of the demo's own unless one is set
already.
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
from lmanet_ros.evaluation.video import COMPARISON_FILE
from lmanet_ros.models.registry import model_entry
from lmanet_ros.models.weights import DEMO, models_with_weights
from lmanet_ros.node.launch_args import NODE_NAME, dds_transport, resolve
from lmanet_ros.pipeline import PipelineError
from lmanet_ros.ros_env import isolate
from lmanet_ros.synthetic import HELDOUT_SEEDS, generate
from lmanet_ros.tools.common import int_at_least, parse_size

IMAGE_TOPIC = "/camera/image"
LABEL_TOPIC = "/camera/labels"
#: The demo bag's corruption recipe (docs/robot-v2-preregistration.md).
RECIPE = "robot-v2"


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
                        help="first sequence seed (default: %(default)s, the first of the "
                             "pre-registered held-out seeds of the robot-v2 benchmark, never used "
                             "in training or validation)")
    parser.add_argument("--model", default="lmanet_erfnet", choices=causal_demo_models(),
                        help="the node's network (default: %(default)s)")
    parser.add_argument("--checkpoint", default=DEMO,
                        help="the node's weights (default: the packaged demo weights)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--no-compare", dest="compare", action="store_false",
                        help="skip the offline comparison of the demo models")
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


#: Why the node's latency and the offline one differ (printed under the two tables).
LATENCY_NOTE = (
    "latency: the node's runs from publishing a frame to receiving its labels in the replaying",
    "  process (DDS both ways, decode, the network, colour and overlay, encode); the offline one",
    "  is the pipeline alone in one process (resize, the network, argmax), so it is lower. Both",
    "  use the same CPU threads (num_threads 0: the physical cores available, at most 4) and both",
    "  rise when other work shares the CPU (load averages in each metrics.json).",
)


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


def compared_models(node_model: str) -> list[str]:
    """The models of the offline comparison: every causal model with demo weights, the
    single-frame ones first (the first is the baseline), then ``node_model``, then the other
    temporal ones. The delayed forms (labels one frame late) are left out: the comparison would
    score every model only on the frames they all labelled."""
    return sorted(causal_demo_models(),
                  key=lambda n: (model_entry(n).temporal, n != node_model, n))


def causal_demo_models() -> list[str]:
    """The models with demo weights whose labels are the current frame's (the delayed forms
    cannot run the lock-step replay and would cut the comparison's frames)."""
    return [n for n in models_with_weights(DEMO) if not model_entry(n).output_delay_frames]


def _points(value: float | None, digits: int = 1) -> str:
    """A fraction as signed percentage points ("-" for None)."""
    return "-" if value is None else f"{100 * value:+.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}"


def _corruption_summary(payload: dict) -> list[str]:
    """The robot-v2 lines of a comparison: bag / hit / clean mIoU per model, the memory checks,
    the gains over the baseline (all read from the metrics payload)."""
    section = payload.get("corruption")
    if not section:
        return ["  (no corruption log in the bag: no hit / clean scores)"]
    frames = section["frames"]
    kinds = ", ".join(f"{k} {n}" for k, n in frames["kinds"].items()) or "none"
    lines = [f"  {section.get('recipe') or 'corruption'}: {frames['hit']} of {frames['frames']} "
             f"frames hit ({kinds}); mIoU % over the bag / hit frames / clean frames:"]
    for model in payload["models"]:
        scores = model.get("corruption") or {}
        lines.append(f"  {model['label']:<16} bag {_percent(scores.get('bag'))}   hit "
                     f"{_percent(scores.get('hit'))}   clean {_percent(scores.get('clean'))}")
        check = model.get("memory_check")
        if check:
            credited = {True: "credited to the memory", False: "NOT credited to the memory",
                        None: "no verdict"}[check.get("credited")]
            removed = check.get("gain_removed")
            lines.append(f"  {'  memory check':<16} bag {_percent(check.get('bag'))}   hit "
                         f"{_percent(check.get('hit'))}   clean {_percent(check.get('clean'))}"
                         f"   (memory = current frame: removes "
                         f"{'-' if removed is None else f'{100 * removed:.0f} %'} of the "
                         f"hit-frame gain, {credited})")
    references = section.get("references") or {}
    for name, key in (("{} on the clean versions (reference)", "clean_version"),
                      ("last clean frame of {} (oracle)", "last_clean_oracle")):
        scores = references.get(key)
        if scores:
            lines.append(f"  {name.format(section['baseline'])}: hit "
                         f"{_percent(scores.get('hit'))}")
    for model in payload["models"]:
        gain = model.get("gain")
        if gain:
            lines.append(f"  gain of {model['label']} over {section['baseline']}: bag "
                         f"{_points(gain['bag'])}, hit {_points(gain['hit'])}, clean "
                         f"{_points(gain['clean'])} mIoU points; flip rate "
                         f"{_points(gain['flip_rate'], 2)} points")
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

    steps: list[tuple[str, float]] = []
    step_start = time.monotonic()

    def done(name: str) -> None:
        """Record and print how long the step that ends now took."""
        nonlocal step_start
        steps.append((name, time.monotonic() - step_start))
        print(f"      ({steps[-1][1]:.0f} s)", flush=True)
        step_start = time.monotonic()

    print(f"[1/4] synthetic bag: {args.sequences} held-out sequences x {args.frames} frames, "
          f"{height}x{width}, seeds {args.seed}..{args.seed + args.sequences - 1}, corruption "
          f"{RECIPE}", flush=True)
    synth = generate(out / "synth", frames=args.frames, height=height, width=width,
                     sequences=args.sequences, seed=args.seed, corruption=RECIPE,
                     bag=BagWriter, folder=False, show_progress=False)
    bag = synth.bag
    done("bag")

    print(f"[2/4] starting lmanet_node ({args.model}, checkpoint {args.checkpoint}, "
          f"ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}); log: {out / 'node.log'}", flush=True)
    launch = resolve({"image": IMAGE_TOPIC, "checkpoint": args.checkpoint, "device": args.device,
                      "node_name": NODE_NAME})
    launch.overrides.update({"model": args.model, "processing_mode": "all",
                             "input.reliability": "reliable", "input.depth": 0})
    with open(out / "node.log", "wb") as log:
        node = subprocess.Popen(launch.command(_node_executable()), stdout=log,
                                stderr=subprocess.STDOUT, env=launch.process_env())
    live = out / "live"
    try:
        print("[3/4] replaying the bag into the node in lock-step, scoring what it publishes",
              flush=True)
        try:
            with dds_transport():  # the node's transports (its launch's default)
                outcome = replay_bag(ReplayOptions(
                    bag=bag, topics=[IMAGE_TOPIC], rate=0.0, lockstep=True,
                    node_labels_topics=[launch.fully_qualified_name + "/labels"], depth=0,
                    startup_timeout=args.startup_timeout, score_out=live,
                    label_topic=LABEL_TOPIC, video=True))
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
    done("node and lock-step replay")
    lines = [f"node ({outcome.frames} frames published, {outcome.labels_received} labels "
             f"received, {outcome.video_frames} video frames):", *_summary(live / "metrics.json")]

    compare = out / "compare"
    if args.compare:
        models = compared_models(args.model)
        print(f"[4/4] offline comparison on the same bag (demo weights, baseline {models[0]}, "
              f"memory check on): {' vs '.join(models)}", flush=True)
        try:
            outcome = evaluate(EvalOptions(
                bag=bag, out=compare, image_topics=[IMAGE_TOPIC], label_topic=LABEL_TOPIC,
                model=models[0], checkpoint=DEMO,
                compare=[ModelSpec(name, DEMO) for name in models[1:]], device=args.device,
                video=True, comparison_video=True))
        except (EvalError, PipelineError, ValueError, FileNotFoundError) as exc:
            print(f"lmanet demo: error: {exc}", file=sys.stderr)
            return 2
        if outcome.interrupted:
            return 130
        done("offline comparison")
        lines += ["offline comparison:", *_summary(compare / "metrics.json"),
                  *_corruption_summary(outcome.payload), *LATENCY_NOTE]
    print("\n".join(
        ["", *lines, "",
         f"live report:  {live / 'report.md'}",
         f"live video:   {live / 'overlay.mp4'}  (input | the node's overlay)",
         f"plots:        {live}/*.png"]
        + ([f"comparison:   {compare / 'report.md'}",
            f"side by side: {compare / COMPARISON_FILE}  (input | {' | '.join(models)})"]
           if args.compare else [])
        + ["steps:        " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in steps),
           f"done in {time.monotonic() - started:.0f} s"]))
    return 0
