"""The pipeline's GPU data path, measured without ROS: per-stage host overhead, network step,
fused vs plain attention, fp16, CUDA graphs (issue 16). Runs on the CPU too, where the CUDA
rows are skipped (so that the script is tested on machines without a GPU).

Pipeline rows (``SegmentationPipeline.process`` on one stream of random uint8 frames of
``--size``, random weights, ``input_size`` = the frame size): after ``--warmup`` calls, the
medians over ``--repeats`` calls of

- ``prep`` / ``step`` / ``post``: the result's :class:`~lmanet_ros.pipeline.StageTimes` (CPU:
  host wall time; CUDA: from each stage's start until its device work is done, CUDA events);
- ``wall``: the call's host wall time, a numpy frame in to numpy outputs ready (the call
  synchronises once, at the end);
- ``host``: ``wall - step``, the pipeline's time outside the network step (upload, resize,
  argmax, confidence, colour, overlay, copies back, Python); issue 16's bound: at most 3 ms at
  512x1024 with labels, colour and overlay on a GPU (``limit`` column where it applies);
- ``fps``: frames per second of the timed loop (one ``process`` call after the other);
- ``pipe fps``: frames per second when each frame is submitted before the previous one is
  collected (``submit`` / ``collect``: the host work of a frame overlaps the device work of the
  one before); ``0.9/max(step, host)`` is the issue's throughput bound, checked against it
  where a GPU row asks for it.

Row names: ``<model> <precision> <eager|graphs> [attention=<backend>] <outputs>``, outputs
``labels`` or ``all`` (labels, confidence, colour, overlay). CUDA rows: fp32 and fp16 (autocast)
eager, fp16 with CUDA graphs, and the temporal model (``--temporal``, default lmanet_erfnet, T
= 4) in fp16 with graphs under ``LMANET_ATTENTION=triton`` and ``=torch``. CPU rows: fp32
eager.

Attention rows: ``local_memory_attention`` alone on the temporal model's own query and memory
shapes at ``--size`` (taken from its memory after the pipeline rows), CUDA-event median per
backend (``triton`` fused, ``torch`` plain) in fp16; issue 16's bound: fused attention adds at
most 0.5 ms to an fp16 ERFNet step. The pipeline's temporal rows also give ``step`` of the
temporal model minus ERFNet's (``adds`` column: the whole temporal module).

CPU render row: ``imaging.colorize`` + ``imaging.overlay`` + ``confidence_to_mono8`` of one
frame's outputs on the CPU, what the node does when the pipeline did not render (publishing
itself needs ROS and is measured by node_latency.py).

Usage (a GPU machine; benchmarks/gpu_check.sh runs this)::

    python benchmarks/gpu_pipeline.py --size 512x1024 --repeats 30 --json gpu_pipeline.json
    python benchmarks/gpu_pipeline.py --device cpu --size 64x128 --repeats 2 --warmup 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmanet_ros import imaging  # noqa: E402
from lmanet_ros.classes import ClassSet  # noqa: E402
from lmanet_ros.models import build_model  # noqa: E402
from lmanet_ros.models.attention import (BACKEND_ENV, attention_backend,  # noqa: E402
                                         local_memory_attention)
from lmanet_ros.pipeline import Frame, SegmentationPipeline  # noqa: E402
from lmanet_ros.sizes import size_type  # noqa: E402
from lmanet_ros.stamps import seconds_to_ns  # noqa: E402

#: Issue 16's bounds (GPU): host overhead (ms) at 512x1024 with labels, colour and overlay; what
#: the fused attention may add to an fp16 ERFNet step (ms); throughput over 1 / max(step, host).
HOST_LIMIT_MS = 3.0
ATTENTION_LIMIT_MS = 0.5
THROUGHPUT_FACTOR = 0.9
LIMIT_SIZE = (512, 1024)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size_type(minimum=8), default=(512, 1024),
                        help="frame HxW (also the network input)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA rows where CUDA is present, else CPU rows")
    parser.add_argument("--model", default="erfnet", help="single-frame model")
    parser.add_argument("--temporal", default="lmanet_erfnet",
                        help="temporal model of the attention rows ('' for none)")
    parser.add_argument("--memory-length", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--frames", type=int, default=4, help="distinct frames cycled")
    parser.add_argument("--no-cpu-render", action="store_true", help="skip the CPU render row")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    return parser


def make_frames(size: tuple[int, int], count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def time_pipeline(pipeline: SegmentationPipeline, images: list[np.ndarray], warmup: int,
                  repeats: int, outputs: str) -> dict:
    """Medians of the stage times, the call's wall time and host = wall - step (ms), and the
    calls per second, over ``repeats`` calls after ``warmup`` calls."""
    wanted = dict(want_confidence=True, want_color=True, want_overlay=True) if outputs == "all" \
        else {}
    walls, stages = [], []
    start_loop = None
    for index in range(warmup + repeats):
        if index == warmup:
            start_loop = time.perf_counter()
        frame = Frame("cam", images[index % len(images)], seconds_to_ns(index / 30), "cam")
        start = time.perf_counter()
        (result,) = pipeline.process([frame], **wanted)
        if index >= warmup:
            walls.append((time.perf_counter() - start) * 1e3)
            stages.append(result.timings)
    loop_s = time.perf_counter() - start_loop
    first = warmup + repeats
    frames = [Frame("cam", images[index % len(images)], seconds_to_ns(index / 30), "cam")
              for index in range(first, first + repeats + 1)]
    start_pipe = time.perf_counter()
    submitted = pipeline.submit(frames[0:1], **wanted)
    for frame in frames[1:]:
        following = pipeline.submit([frame], **wanted)
        pipeline.collect(submitted)
        submitted = following
    pipeline.collect(submitted)
    pipe_s = time.perf_counter() - start_pipe
    prep = statistics.median(t.preprocess_ms for t in stages)
    step = statistics.median(t.inference_ms for t in stages)
    post = statistics.median(t.postprocess_ms for t in stages)
    host = statistics.median(w - t.inference_ms for w, t in zip(walls, stages))
    return {"prep_ms": prep, "step_ms": step, "post_ms": post, "wall_ms": statistics.median(walls),
            "host_ms": host, "fps": repeats / loop_s, "pipelined_fps": (repeats + 1) / pipe_s}


def pipeline_rows(args, device: torch.device) -> tuple[list[dict], dict]:
    """The pipeline rows on ``device``, and the temporal model's memory (for the attention
    rows) or None."""
    images = make_frames(args.size, args.frames)
    cuda = device.type == "cuda"
    base = args.model
    configs = [(base, "fp32", False, None, "labels"), (base, "fp32", False, None, "all")]
    if cuda:
        configs += [(base, "fp16", False, None, "all"), (base, "fp16", True, None, "all"),
                    (base, "fp16", True, None, "labels")]
        if args.temporal:
            configs += [(args.temporal, "fp16", True, backend, "all")
                        for backend in ("triton", "torch")]
    elif args.temporal:
        configs.append((args.temporal, "fp32", False, None, "all"))
    rows, memory, base_step = [], None, {}
    for model_name, precision, graphs, backend, outputs in configs:
        before = os.environ.get(BACKEND_ENV)
        if backend is not None:
            os.environ[BACKEND_ENV] = backend
        try:
            torch.manual_seed(0)
            model = build_model(model_name)
            temporal = model.info.temporal
            pipeline = SegmentationPipeline(
                model, device=device, precision=precision, input_size=args.size,
                memory_length=args.memory_length if temporal else None, cuda_graphs=graphs)
            row = {"row": " ".join(filter(None, [
                model_name, precision, "graphs" if graphs else "eager",
                f"attention={backend}" if backend else "", outputs])),
                "device": str(device), "model": model_name, "precision": precision,
                "cuda_graphs": graphs, "outputs": outputs, "size": list(args.size),
                "attention": attention_backend(device, torch.float16 if precision != "fp32"
                                               else torch.float32) if temporal else None}
            row.update(time_pipeline(pipeline, images, args.warmup, args.repeats, outputs))
        finally:
            os.environ.pop(BACKEND_ENV, None)
            if before is not None:
                os.environ[BACKEND_ENV] = before
        if graphs:
            row["graphs_captured"] = pipeline._graphs.captured
            row["graph_replays"] = pipeline._graphs.replays
        key = (precision, graphs, outputs)
        if not temporal:
            base_step[key] = row["step_ms"]
        elif key in base_step:
            row["adds_ms"] = row["step_ms"] - base_step[key]
        if temporal:
            memory = pipeline._streams["cam"].memory
        check_limits(row, cuda, tuple(args.size))
        rows.append(row)
    return rows, memory


def check_limits(row: dict, cuda: bool, size: tuple[int, int]) -> None:
    """Issue 16's GPU bounds on a row, where they apply (CUDA, fp16 with graphs, all outputs;
    host overhead at 512x1024 only)."""
    if not (cuda and row["precision"] == "fp16" and row["cuda_graphs"]
            and row["outputs"] == "all"):
        return
    bound = THROUGHPUT_FACTOR * 1e3 / max(row["step_ms"], row["host_ms"])
    row["fps_bound"] = bound
    row["fps_pass"] = row["pipelined_fps"] >= bound
    if size == LIMIT_SIZE and not row["model"].startswith("lmanet"):
        row["host_limit_ms"] = HOST_LIMIT_MS
        row["host_pass"] = row["host_ms"] <= HOST_LIMIT_MS


def time_cuda(function: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median CUDA-event time of ``function`` in ms."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def attention_rows(args, memory) -> list[dict]:
    """The attention alone on the temporal model's memory shapes, fp16, per backend (CUDA)."""
    if memory is None or not hasattr(memory, "keys") or not len(memory):
        return []
    keys = [k.to(torch.float16) for k in memory.keys]
    values = [v.to(torch.float16) for v in memory.values]
    query = torch.randn_like(keys[-1])
    rows = []
    for backend in ("triton", "torch"):
        with torch.inference_mode():
            try:
                ms = time_cuda(lambda: local_memory_attention(query, keys, values,
                                                              backend=backend),
                               args.warmup, args.repeats)
            except (RuntimeError, ValueError) as error:
                rows.append({"row": f"attention {backend} fp16", "error": str(error)})
                continue
        row = {"row": f"attention {backend} fp16", "backend": backend, "ms": ms,
               "shape": {"query": list(query.shape), "frames": len(keys),
                         "value_channels": int(values[0].shape[1])}}
        if backend == "triton" and tuple(args.size) == LIMIT_SIZE:
            row["limit_ms"] = ATTENTION_LIMIT_MS
            row["pass"] = ms <= ATTENTION_LIMIT_MS
        rows.append(row)
    return rows


def cpu_render_row(args) -> dict:
    """CPU colour + overlay + mono8 confidence of one frame's outputs (the node's fallback)."""
    image = make_frames(args.size, 1)[0]
    labels = np.random.default_rng(1).integers(0, 19, args.size, dtype=np.uint8)
    confidence = np.random.default_rng(2).random(args.size, dtype=np.float32)
    colors = ClassSet.cityscapes().colors
    times = []
    for index in range(args.warmup + args.repeats):
        start = time.perf_counter()
        color = imaging.colorize(labels, colors)
        imaging.overlay(image, color, 0.5)
        imaging.confidence_to_mono8(confidence)
        if index >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return {"row": "cpu render (colour, overlay, mono8 confidence)", "device": "cpu",
            "ms": statistics.median(times)}


def print_table(rows: list[dict]) -> None:
    print(f"{'row':<48}{'prep':>7}{'step':>8}{'post':>7}{'host':>7}{'wall':>8}{'fps':>8}"
          f"{'pipe fps':>9}{'adds':>7}  limits")
    for row in rows:
        if "wall_ms" not in row:
            value = f"{row['ms']:.3f} ms" if "ms" in row else row.get("error", "")
            verdict = ""
            if "limit_ms" in row:
                verdict = f"  <= {row['limit_ms']} ms {'PASS' if row['pass'] else 'FAIL'}"
            print(f"{row['row']:<48}{value}{verdict}")
            continue
        limits = []
        if "host_pass" in row:
            limits.append(f"host<={row['host_limit_ms']:.0f}ms "
                          f"{'PASS' if row['host_pass'] else 'FAIL'}")
        if "fps_pass" in row:
            limits.append(f"pipe fps>={row['fps_bound']:.0f} "
                          f"{'PASS' if row['fps_pass'] else 'FAIL'}")
        adds = f"{row['adds_ms']:>7.2f}" if "adds_ms" in row else f"{'-':>7}"
        print(f"{row['row']:<48}{row['prep_ms']:>7.2f}{row['step_ms']:>8.2f}"
              f"{row['post_ms']:>7.2f}{row['host_ms']:>7.2f}{row['wall_ms']:>8.2f}"
              f"{row['fps']:>8.1f}{row['pipelined_fps']:>9.1f}{adds}  {' '.join(limits)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    rows, memory = pipeline_rows(args, device)
    if cuda:
        rows += attention_rows(args, memory)
    else:
        rows.append({"row": "cuda rows", "skipped": "CUDA is not available"
                     if not torch.cuda.is_available() else "--device cpu"})
    if not args.no_cpu_render:
        rows.append(cpu_render_row(args))
    print_table([row for row in rows if "skipped" not in row])
    for row in rows:
        if "skipped" in row:
            print(f"{row['row']}: skipped ({row['skipped']})")
    if args.json:
        environment = {"python": platform.python_version(), "torch": torch.__version__,
                       "cuda": torch.version.cuda, "device": str(device),
                       "gpu": torch.cuda.get_device_name(device) if cuda else None}
        settings = {key: (list(value) if isinstance(value, tuple) else
                          str(value) if isinstance(value, Path) else value)
                    for key, value in vars(args).items() if key != "json"}
        args.json.write_text(json.dumps({"environment": environment, "settings": settings,
                                         "rows": rows}, indent=2))
    # the figures are GPU figures: a CUDA run that misses one exits 1
    missed = [row["row"] for row in rows for key in ("fps_pass", "host_pass", "pass")
              if row.get(key) is False]
    if cuda and missed:
        print(f"figures missed: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
