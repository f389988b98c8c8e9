"""Resident memory of a stream over many frames: does any model's memory grow with the stream?

Each model runs in a process of its own (so that one model's allocations do not hide another's):
it streams ``--frames`` random frames of one camera through the pipeline, as the node does, and
samples the resident set size (RSS, from /proc/self/status) after the warm-up frames and at the
end. The memory of a temporal model is bounded by its length T, so the growth from the first
sample to the last should be about zero; allocator noise of a few MB is normal.

    python benchmarks/stream_rss.py --models erfnet,lmanet_erfnet,tmanet_erfnet,tdnet_erfnet,\\
        stf_erfnet --size 256x512 --frames 100 --json rss.json

Prints a table (model, T, RSS after warm-up, at the end, growth, ms per frame) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="erfnet,lmanet_erfnet,tmanet_erfnet,tdnet_erfnet,"
                                            "stf_erfnet")
    parser.add_argument("--size", default="256x512", help="HxW (default 256x512)")
    parser.add_argument("--frames", type=int, default=100, help="frames streamed (default 100)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="frames before the first sample (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        out = subprocess.run([sys.executable, "-c", PROBE, name, str(height), str(width),
                              str(args.frames), str(args.warmup), str(args.threads)],
                             capture_output=True, text=True, cwd=ROOT, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'model':<16} {'T':>2} {'RSS warm MB':>12} {'RSS end MB':>11} {'growth MB':>10} "
          f"{'ms/frame':>9}")
    for row in rows:
        print(f"{row['model']:<16} {row['T']:>2} {row['rss_warm_mb']:>12.1f} "
              f"{row['rss_end_mb']:>11.1f} {row['growth_mb']:>10.1f} {row['ms_per_frame']:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
