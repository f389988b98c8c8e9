"""TMANet R50 (``tmanet_r50``) on the CPU: the streaming step against the same network without
its memory, the release's offline cost, and the resident memory of a stream.

Random weights, eval mode, ``torch.inference_mode``, batch 1, float32, one input size:

1. Stream: ``--frames`` random frames through ``model.step`` from the empty memory, first (so
   that nothing else has run yet): ms per frame (median over the frames with a full memory),
   the memory's bytes (``memory.nbytes``), the resident set after building the model and its
   peak over the stream (``ru_maxrss``: the process's peak, reached in the stream since
   nothing ran before it).
2. Rows timed round-robin (one call of each per round, ``--warmup`` rounds untimed, then
   ``--repeats``), medians:

   - ``stream``: ``model.step(x, memory)`` with the memory full at T frames (the returned
     memory is fed back): backbone, the new frame's projections for every slot, query stacks,
     chunked attention, bottleneck, classifier;
   - ``no-memory``: the same backbone and head with the read-out zeroed and the memory stacks
     not run: backbone, query value stack, bottleneck on ``[Vq, 0]``, classifier (the query key
     stack feeds only the attention: not run either);
   - ``offline``: the release's computation of one output
     (:meth:`~lmanet_ros.models.tmanet_r50.TMANetSegmenter.offline_logits`): the backbone on
     the frame and on the T memory frames, then the head.

   ``ratio``: the median over rounds of (row / no-memory of the same round), which cancels slow
   drifts of the load on a shared machine. The streaming step's bound: at most 1.5x.

Issue 15's run (one thread, under the heavy-job lock on the shared machine)::

    flock /tmp/lmanet_heavy.lock python benchmarks/tmanet_r50_stream.py --size 512x1024 \\
        --frames 20 --repeats 3 --threads 1 --json tmanet_r50.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmanet_ros.models.tmanet_r50 import TMANetSegmenter, build_tmanet_r50  # noqa: E402
from lmanet_ros.sizes import size_type  # noqa: E402

#: The streaming step's bound over the no-memory network's (at most this many times).
RATIO_LIMIT = 1.5
MIB = 2 ** 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--size", type=size_type(minimum=8), default="512x1024",
                        help="input size HxW (default: %(default)s)")
    parser.add_argument("--memory-length", type=int, default=2,
                        help="T, the model's slots (default: %(default)s, Cityscapes)")
    parser.add_argument("--frames", type=int, default=20,
                        help="frames streamed for the memory figures (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds first (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the results as JSON to PATH")
    return parser


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def no_memory_step(model: TMANetSegmenter, x: torch.Tensor) -> torch.Tensor:
    """The network with the read-out zeroed and no memory stack run: (B, 3, H, W) -> logits."""
    temporal = model.temporal_module
    query_value = temporal.query_value_conv(model.encoder(model._prepare(x)))
    fused = torch.cat([query_value, torch.zeros_like(query_value)], dim=1)
    logits = model._decode(temporal.dropout(temporal.bottleneck(fused)))
    return logits[:, :, :x.shape[2], :x.shape[3]]


def stream(model: TMANetSegmenter, frames: list[torch.Tensor]) -> dict:
    """Stream ``frames`` from the empty memory: per-frame ms, the memory's bytes, peak RSS."""
    memory, seconds = None, []
    with torch.inference_mode():
        for x in frames:
            start = time.perf_counter()
            _, memory = model.step(x, memory)
            seconds.append(time.perf_counter() - start)
    full = seconds[model.memory_length:] or seconds
    return {"frames": len(frames), "frame_ms": [1e3 * s for s in seconds],
            "ms_per_frame": 1e3 * statistics.median(full), "memory_bytes": memory.nbytes,
            "memory_mib": memory.nbytes / MIB, "rss_peak_mib": _peak_rss_mib(),
            "rss_after_mib": _rss_mib()}


def time_rows(model: TMANetSegmenter, x: torch.Tensor, memory_frames: list[torch.Tensor],
              repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each row, round-robin."""
    with torch.inference_mode():
        memory = None
        for frame in memory_frames:
            _, memory = model.step(frame, memory)
        state = {"memory": memory}

        def streaming():
            _, state["memory"] = model.step(x, state["memory"])

        jobs = {"stream": streaming, "no-memory": lambda: no_memory_step(model, x),
                "offline": lambda: model.offline_logits(x, memory_frames)}
        samples = {name: [] for name in jobs}
        for round_index in range(warmup + repeats):
            for name, job in jobs.items():
                start = time.perf_counter()
                job()
                if round_index >= warmup:
                    samples[name].append(time.perf_counter() - start)
    return samples


def summarise(samples: dict[str, list[float]]) -> list[dict]:
    base = samples["no-memory"]
    rows = []
    for name, values in samples.items():
        ratio = statistics.median(a / b for a, b in zip(values, base))
        row = {"row": name, "ms": 1e3 * statistics.median(values),
               "all_ms": [1e3 * v for v in values], "ratio": ratio}
        if name == "stream":
            row["ratio_limit"], row["ratio_pass"] = RATIO_LIMIT, ratio <= RATIO_LIMIT
        rows.append(row)
    return rows


def format_report(size: tuple[int, int], memory_length: int, streamed: dict,
                  rows: list[dict]) -> str:
    lines = [f"tmanet_r50 T={memory_length} {size[0]}x{size[1]} cpu float32, "
             f"{torch.get_num_threads()} thread(s)",
             f"{'row':<10} {'ms':>10} {'ratio':>7}  limit", "-" * 40]
    for row in rows:
        limit = ("-" if "ratio_limit" not in row else
                 f"<={row['ratio_limit']:.1f}x {'PASS' if row['ratio_pass'] else 'FAIL'}")
        lines.append(f"{row['row']:<10} {row['ms']:>10.0f} {row['ratio']:>6.2f}x  {limit}")
    lines.append(f"stream of {streamed['frames']} frames: {streamed['ms_per_frame']:.0f} ms per "
                 f"frame, memory {streamed['memory_mib']:.1f} MiB, RSS after building "
                 f"{streamed['rss_model_mib']:.0f} MiB, peak {streamed['rss_peak_mib']:.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--frames and --repeats must be >= 1, --warmup >= 0")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_tmanet_r50(memory_length=args.memory_length).eval()
    generator = torch.Generator().manual_seed(0)
    frames = [torch.rand(1, 3, *args.size, generator=generator) for _ in range(args.frames)]
    rss_model = _rss_mib()
    streamed = {**stream(model, frames), "rss_model_mib": rss_model}
    samples = time_rows(model, frames[-1], frames[:args.memory_length], args.repeats,
                        args.warmup)
    rows = summarise(samples)
    print(format_report(args.size, args.memory_length, streamed, rows))
    if args.json:
        environment = {"torch": torch.__version__, "python": platform.python_version(),
                       "cpu": platform.processor() or platform.machine(),
                       "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                       "repeats": args.repeats, "warmup": args.warmup,
                       "load_average": os.getloadavg()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": environment, "size": list(args.size),
                                         "memory_length": args.memory_length,
                                         "stream": streamed, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
