"""Resident memory of a stream over many frames: does any model's memory grow with the stream?

Each model runs in a process of its own (so that one model's allocations do not hide another's):
it streams ``--frames`` random frames of one camera through the pipeline, as the node does
(random weights, the model's own memory length T), and samples the resident set size (RSS, from
/proc/self/status) after the ``--warmup`` frames and at the end. The memory of a temporal model
is bounded by its length T, so the growth from the first sample to the last should be about
zero; allocator noise of a few MB is normal. A model passes when its growth stays under
``--max-growth-mb`` (issue 11: 20 MB over 100 frames at 256x512); a model whose process fails
is an ERROR row (its stderr goes to stderr).

``--models``: registry names, comma separated, or ``all`` (erfnet and every temporal model
registered on it, as in ``model_latency.py``). Issue 11's check::

    python benchmarks/stream_rss.py --models all --size 256x512 --frames 100 --json rss.json

Prints a table (model, T, RSS after warm-up, at the end, growth, ms per frame, PASS/FAIL), writes
the rows as JSON, and exits with 1 when a model fails or errors, else 0.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# model_latency also puts the repository on sys.path (for lmanet_ros); list_models is the registry's
from model_latency import family, list_models, parse_names, parse_size

ROOT = Path(__file__).resolve().parents[1]
#: Issue 11's bound on the RSS growth of a stream, in MB (2**20 bytes).
MAX_GROWTH_MB = 20.0
#: Frames before the first sample, unless --warmup says otherwise or the stream is shorter.
WARMUP_FRAMES = 10

PROBE = r"""
import json, sys, time
import numpy as np
import torch
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.stamps import seconds_to_ns

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")

name, height, width, frames, warmup, threads = sys.argv[1:7]
height, width, frames, warmup = int(height), int(width), int(frames), int(warmup)
torch.manual_seed(0)
pipeline = SegmentationPipeline.from_pretrained(name, None, device="cpu",
                                                num_threads=int(threads))
rng = np.random.default_rng(0)
images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
samples, start = {}, None
for index in range(frames):
    if index == warmup:
        samples["warm"] = rss_mb()
        start = time.perf_counter()
    frame = Frame("cam", images[index % 4], seconds_to_ns(100.0 + index / 17.0), "cam")
    pipeline.process([frame])
samples["end"] = rss_mb()
per_frame = (time.perf_counter() - start) / max(1, frames - warmup) * 1e3
print(json.dumps({"model": name, "T": pipeline.memory_length, "rss_warm_mb": samples["warm"],
                  "rss_end_mb": samples["end"], "growth_mb": samples["end"] - samples["warm"],
                  "ms_per_frame": per_frame, "frames": frames, "size": [height, width]}))
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--models", type=parse_names(list_models(), "models", family()),
                        default="all",
                        help=f"registry names, comma separated, or all ({', '.join(family())}; "
                             f"the default)")
    parser.add_argument("--size", type=parse_size, default="256x512",
                        help="frame size HxW in pixels (default 256x512)")
    parser.add_argument("--frames", type=int, default=100, help="frames streamed (default 100)")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"frames before the first sample (default {WARMUP_FRAMES}, or half "
                             f"the frames when fewer than {2 * WARMUP_FRAMES}); < --frames")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--max-growth-mb", type=float, default=MAX_GROWTH_MB,
                        help=f"a model passes when its RSS grows less than this from after the "
                             f"warm-up to the end, in MB (default {MAX_GROWTH_MB:g})")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    return parser


def stream(name: str, size: tuple[int, int], frames: int, warmup: int, threads: int) -> dict:
    """Stream ``frames`` frames of ``size`` through ``name``'s pipeline in a fresh process: its
    row (RSS in MB after ``warmup`` frames and at the end, ms per frame after the warm-up), or
    an ERROR row whose ``error`` is the process's last stderr line."""
    process = subprocess.run([sys.executable, "-c", PROBE, name, str(size[0]), str(size[1]),
                              str(frames), str(warmup), str(threads)],
                             capture_output=True, text=True, cwd=ROOT)
    if process.returncode != 0:
        print(f"{name}: the streaming process failed:\n{process.stderr}", file=sys.stderr)
        lines = process.stderr.strip().splitlines() or [f"exit status {process.returncode}"]
        return {"model": name, "status": "ERROR", "error": lines[-1]}
    return json.loads(process.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict], max_growth_mb: float) -> str:
    """One line per model; the last column is PASS (growth < ``max_growth_mb``), FAIL or
    ERROR."""
    width = max([len("model")] + [len(row["model"]) for row in rows])
    header = (f"{'model':<{width}} {'T':>2} {'RSS warm MB':>12} {'RSS end MB':>11} "
              f"{'growth MB':>10} {'ms/frame':>9}  < {max_growth_mb:g} MB")
    lines = [header, "-" * len(header)]
    for row in rows:
        if row["status"] == "ERROR":
            lines.append(f"{row['model']:<{width}} {'-':>2} {'-':>12} {'-':>11} {'-':>10} "
                         f"{'-':>9}  ERROR: {row['error']}")
            continue
        lines.append(f"{row['model']:<{width}} {row['T']:>2} {row['rss_warm_mb']:>12.1f} "
                     f"{row['rss_end_mb']:>11.1f} {row['growth_mb']:>10.1f} "
                     f"{row['ms_per_frame']:>9.1f}  {row['status']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warmup = (args.warmup if args.warmup is not None
              else min(WARMUP_FRAMES, args.frames // 2))
    if not 0 <= warmup < args.frames:
        parser.error(f"--warmup must be in [0, --frames), got {warmup} and {args.frames}")
    if not args.models:
        parser.error("--models names no model")
    rows = []
    for name in args.models:
        row = stream(name, args.size, args.frames, warmup, args.threads)
        if "status" not in row:
            row["max_growth_mb"] = args.max_growth_mb
            row["status"] = "PASS" if row["growth_mb"] < args.max_growth_mb else "FAIL"
        rows.append(row)
    print(format_table(rows, args.max_growth_mb))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(row["status"] == "PASS" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
