"""`lmanet eval` latency per inference backend, in one run: issue 16's CPU figure.

One synthetic labelled bag (``--frames`` frames of ``--size``, made with ``lmanet synth``'s
generator; or ``--bag``) is evaluated by the ``lmanet eval`` command line with ``--model``
(default lmanet_erfnet) and ``--checkpoint`` (default demo) once per backend of ``--backends``
(default torch, onnxruntime, openvino), ``--num-threads`` (default 1), ``--input-size`` the
bag's size, no video and no plots, every process with ``LMANET_ATTENTION=compiled`` (the C++
kernel; the run is refused when metrics.json names another attention for the torch row). The
graph backends take the layout they use by default (LMANet: the split graphs around the
compiled attention, :mod:`lmanet_ros.runtime.split`); the graphs are exported in an untimed
first run into ``--cache-dir`` (default: a fresh folder).

``--rounds`` rounds (default 3), each running every backend once, in turn, so that the load of
other processes falls on all alike. Per backend: the median over rounds of metrics.json's
``latency_ms.p50`` (the pipeline's per-frame time: preprocess, network, postprocess) and of
its ratio to the torch row's p50 of the same round; mIoU and flip rate of every run and the
pixels whose (label, prediction) cell differs from the torch run's confusion matrix. Scores are
called equal when mIoU and flip rate are within :data:`SCORE_TOLERANCE` of torch's (the graph
runtimes compute in float32 in another order: a pixel may flip where two logits tie).

Usage (issue 16)::

    python benchmarks/eval_backends.py --frames 40 --size 256x512 --num-threads 1 \\
        --json eval_backends.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eval_overhead import make_bag  # noqa: E402

from lmanet_ros.runtime import BACKENDS  # noqa: E402
from lmanet_ros.sizes import format_size, size_type  # noqa: E402

#: The ``lmanet`` command line (its console script's code) for ``python -c``.
LMANET = "import sys; from lmanet_ros.tools.cli import main; sys.exit(main(sys.argv[1:]))"
#: Largest |difference| of mIoU or flip rate (fractions) to the torch run still called equal.
SCORE_TOLERANCE = 1e-5
#: The figure: the fastest graph backend's p50 at most this fraction of torch's.
TARGET_RATIO = 0.75


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--bag", type=Path, help="a labelled bag (default: a synthetic one)")
    parser.add_argument("--frames", type=int, default=40, help="synthetic bag frames (40)")
    parser.add_argument("--size", type=size_type(minimum=8), default=(256, 512), metavar="HxW",
                        help="synthetic bag size, also --input-size (default 256x512)")
    parser.add_argument("--model", default="lmanet_erfnet", help="registry name")
    parser.add_argument("--checkpoint", default="demo", help="weights: a file or tag (demo)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma separated, torch first (default: %(default)s)")
    parser.add_argument("--num-threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--cache-dir", type=Path, help="graph cache (default: a fresh one)")
    parser.add_argument("--json", type=Path, help="write the runs and the figure here")
    return parser


def run_eval(bag: Path, out: Path, backend: str, args: argparse.Namespace, env: dict
             ) -> dict:
    """One ``lmanet eval`` of ``bag`` by ``backend``: its metrics.json entry of the model."""
    command = [sys.executable, "-c", LMANET, "eval", str(bag), "--out", str(out),
               "--model", args.model, "--checkpoint", args.checkpoint, "--num-threads",
               str(args.num_threads), "--backend", backend, "--input-size",
               format_size(args.size), "--no-video", "--no-plots"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"lmanet eval --backend {backend} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    model = json.loads((out / "metrics.json").read_text())["models"][0]
    return {"confusion": model["accuracy"]["confusion_matrix"], "backend": model["backend"],
            "backend_version": model["backend_version"], "attention": model["attention"],
            "p50_ms": model["latency_ms"]["p50"],
            "p90_ms": model["latency_ms"]["p90"], "miou": model["accuracy"]["miou"],
            "flip_rate": model["temporal_consistency"]["flip_rate"],
            "frames": model["frames"]}


def same_scores(run: dict, reference: dict) -> bool:
    """mIoU and flip rate within :data:`SCORE_TOLERANCE` of the reference run's."""
    return all(abs(run[key] - reference[key]) <= SCORE_TOLERANCE for key in ("miou", "flip_rate"))


def pixels_differing(run: dict, reference: dict) -> int:
    """Pixels scored in another (label, prediction) cell than in the reference run."""
    return sum(abs(a - b) for row_a, row_b in zip(run["confusion"], reference["confusion"])
               for a, b in zip(row_a, row_b)) // 2


def summarise(runs: list[list[dict]], backends: list[str]) -> list[dict]:
    """One row per backend: median p50, median per-round ratio to torch, scores."""
    rows = []
    for index, backend in enumerate(backends):
        mine = [round_runs[index] for round_runs in runs]
        ratios = [run["p50_ms"] / round_runs[0]["p50_ms"]
                  for run, round_runs in zip(mine, runs)]
        rows.append({"backend": backend, "version": mine[0]["backend_version"],
                     "attention": mine[0]["attention"],
                     "p50_ms": statistics.median(run["p50_ms"] for run in mine),
                     "ratio_to_torch": statistics.median(ratios),
                     "miou": mine[0]["miou"], "flip_rate": mine[0]["flip_rate"],
                     "pixels_differing": max(pixels_differing(run, runs[0][0]) for run in mine),
                     "scores_equal": all(same_scores(run, runs[0][0]) for run in mine)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if not backends or backends[0] != "torch" or any(b not in BACKENDS for b in backends):
        parser.error(f"--backends: torch first, then any of {', '.join(BACKENDS[1:])}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="lmanet_eval_backends_"))
    bag = args.bag or make_bag(work / "bag", args.frames, format_size(args.size))
    env = {**os.environ, "LMANET_ATTENTION": "compiled",
           "LMANET_CACHE": str(args.cache_dir or work / "graphs")}
    for backend in backends[1:]:  # export the graphs (untimed)
        run_eval(bag, work / f"export_{backend}", backend, args, env)
    runs = []
    for round_index in range(args.rounds):
        runs.append([run_eval(bag, work / f"r{round_index}_{backend}", backend, args, env)
                     for backend in backends])
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{b} p50 {r['p50_ms']:.1f} ms" for b, r in zip(backends, runs[-1])), flush=True)
    torch_attention = runs[0][0]["attention"]
    if not torch_attention.startswith("compiled"):
        print(f"the torch row did not run the compiled attention kernel: {torch_attention}",
              file=sys.stderr)
        return 2
    rows = summarise(runs, backends)
    print(f"\n{args.model} ({args.checkpoint}), {runs[0][0]['frames']} frames of "
          f"{format_size(args.size)}, {args.num_threads} thread(s), {args.rounds} round(s)")
    print(f"{'backend':<13}{'p50 ms':>9}{'/ torch':>9}{'mIoU':>9}{'flip':>8}{'px diff':>9}"
          f"  attention")
    for row in rows:
        print(f"{row['backend']:<13}{row['p50_ms']:>9.1f}{row['ratio_to_torch']:>8.2f}x"
              f"{row['miou']:>9.4f}{row['flip_rate']:>8.4f}{row['pixels_differing']:>9}"
              f"  {row['attention']}")
    graph_rows = rows[1:]
    fastest = min(graph_rows, key=lambda row: row["ratio_to_torch"]) if graph_rows else None
    figure = None
    if fastest is not None:
        figure = {"fastest": fastest["backend"], "ratio": fastest["ratio_to_torch"],
                  "target": TARGET_RATIO, "met": fastest["ratio_to_torch"] <= TARGET_RATIO,
                  "scores_equal": all(row["scores_equal"] for row in rows)}
        print(f"fastest: {figure['fastest']} {figure['ratio']:.2f}x torch (target <= "
              f"{TARGET_RATIO}x): {'met' if figure['met'] else 'MISSED'}; scores equal "
              f"across backends: {figure['scores_equal']}; runs in {work}")
    if args.json:
        args.json.write_text(json.dumps({
            "settings": {"model": args.model, "checkpoint": args.checkpoint,
                         "size": list(args.size), "frames": runs[0][0]["frames"],
                         "num_threads": args.num_threads, "rounds": args.rounds,
                         "bag": str(bag)},
            "runs": [[{k: v for k, v in run.items() if k != "confusion"} for run in round_runs]
                     for round_runs in runs],
            "rows": rows, "figure": figure}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
