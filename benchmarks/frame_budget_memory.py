"""Peak memory one frame costs the node's path (decode + pipeline), per frame pixel and per network
pixel: the figures behind the ``max_frame_pixels`` and ``max_network_pixels`` budgets (issue 17).

Each configuration runs in a process of its own: it builds the pipeline (random weights, one
thread), warms it up on a small frame, then decodes a PNG frame of ``--frame`` size
(:func:`lmanet_ros.imaging.decode_compressed`, as the node does for CompressedImage) and
processes it twice (first frame and memory paths); the growth of the peak resident set
(``VmHWM``) from after the warm-up to the end is the frame's cost. Two series:

- a large frame, small network (``--network``): the cost that grows with the frame (decode,
  the input tensor, the logits upsampled to the frame's size, the labels);
- the network at the frame's own size: the cost that grows with the network input.

    python benchmarks/frame_budget_memory.py --model lmanet_erfnet --json budget.json

Prints a table (frame, network, peak growth MB, bytes per frame pixel, bytes per network pixel).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import numpy as np
from lmanet_ros import imaging
from lmanet_ros.pipeline import Frame, SegmentationPipeline

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

name, fh, fw, nh, nw = sys.argv[1], *map(int, sys.argv[2:6])
pipeline = SegmentationPipeline.from_pretrained(name, None, device="cpu", num_threads=1,
                                                input_size=(nh, nw) if nh else None)
pipeline.warmup(64, 128)
rgb = np.random.default_rng(0).integers(0, 256, (fh, fw, 3), dtype=np.uint8)
data = imaging.encode_compressed(rgb, "png")
del rgb
base = peak()
for index in range(2):
    image = imaging.decode_compressed("png", data)
    pipeline.process([Frame("camera", image, (index + 1) * 50_000_000, "camera")])
    del image
growth = peak() - base
print(json.dumps({"growth": growth}))
"""


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W)."""
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def measure(model: str, frame: tuple[int, int], network: tuple[int, int]) -> dict:
    """One configuration in a child process: the peak RSS growth in bytes, and per pixel."""
    done = subprocess.run([sys.executable, "-c", PROBE, model, *map(str, frame + network)],
                          capture_output=True, text=True, cwd=str(ROOT), check=True)
    growth = json.loads(done.stdout.strip().splitlines()[-1])["growth"]
    net = network if network[0] else frame
    return {"frame": f"{frame[0]}x{frame[1]}", "network": f"{net[0]}x{net[1]}",
            "growth_mb": growth / 2**20, "bytes_per_frame_pixel": growth / (frame[0] * frame[1]),
            "bytes_per_network_pixel": growth / (net[0] * net[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lmanet_erfnet")
    parser.add_argument("--frames", default="1080x1920,2160x3840",
                        help="large frames run with the small --network (HxW, comma separated)")
    parser.add_argument("--network", type=parse_size, default=(128, 256))
    parser.add_argument("--own", default="256x512,512x1024",
                        help="frames run with the network at their own size")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    configs = [(parse_size(s), args.network) for s in args.frames.split(",") if s]
    configs += [(parse_size(s), (0, 0)) for s in args.own.split(",") if s]
    rows = [measure(args.model, frame, network) for frame, network in configs]
    print(f"{args.model}, CPU, one thread: peak RSS growth of decoding and processing one frame")
    print(f"{'frame':>10} {'network':>10} {'growth MB':>10} {'B/frame px':>11} {'B/net px':>9}")
    for row in rows:
        print(f"{row['frame']:>10} {row['network']:>10} {row['growth_mb']:>10.1f} "
              f"{row['bytes_per_frame_pixel']:>11.1f} {row['bytes_per_network_pixel']:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
