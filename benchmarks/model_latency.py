"""Per-frame latency and peak extra memory of LMANet-ERFNet against single-frame ERFNet.

What is measured (random weights, eval mode, ``torch.inference_mode``, batch 1):

- ``step`` time: the median over ``--repeats`` calls after ``--warmup`` calls of
  ``model.step(x, memory)`` with the memory full at T frames (the returned memory, still T
  frames, is fed to the next call, so each call also pushes the new frame's keys/values).
  The models are timed round-robin (one call of each per round), so that load from other
  processes on a shared machine affects all of them alike and the ratios stay meaningful.
- ``ratio``: the median over rounds of (LMANet step / ERFNet step of the same round), which
  cancels slow drifts of the machine's load; ``ratio_of_medians`` is in the JSON too.
- ``attention``: the local memory attention alone (``local_memory_attention`` on the model's
  query key and the T memory frames), and ``temporal``: the whole temporal module (kv_Q, the
  attention, the fusion, and kv_M of the frame pushed), both medians like the step.
- Peak extra memory of a step:
  * CPU: each (model, size, T) runs in a fresh Python process that builds the model, the input
    and a full memory of random tensors, runs one warm-up step (so that kernels, thread pools
    and caches are set up as in steady state, and only activations differ), returns freed heap
    memory to the kernel (glibc ``malloc_trim``), records its resident set (VmRSS), resets the
    kernel's peak-RSS mark (``5`` written to ``/proc/self/clear_refs``; where refused,
    ``ru_maxrss`` is used), runs ONE step and reads the peak (VmHWM). The step's extra memory
    is peak - before; the table's "extra MB" is LMANet's step extra minus ERFNet's, i.e. what
    the temporal module adds at the worst moment of a step. Page-granular RSS of a fresh
    process varies by a few MB between runs.
  * CUDA: ``torch.cuda.max_memory_allocated`` during one step minus the memory allocated before
    it (in-process, after ``reset_peak_memory_stats``), LMANet's minus ERFNet's.

Reference arithmetic at 512x1024: ERFNet 53.2 GFLOP per frame; the memory module adds 10.3
GFLOP of convolutions and 2.3 GFLOP of exact attention at T = 4 (1.24x is the floor).

Usage::

    python benchmarks/model_latency.py --sizes 256x512,512x1024 --memory-lengths 1,2,3,4 \\
        --repeats 7 --device all --json results.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmanet_ros.models import Memory, build_model, local_memory_attention  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_size(text: str) -> tuple[int, int]:
    """'512x1024' -> (512, 1024)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x1024, got '{text}'") from None
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got '{text}'")
    return height, width


def parse_list(kind):
    def parse(text: str):
        return [kind(item) for item in text.split(",") if item.strip()]
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Latency and peak memory of lmanet_erfnet vs erfnet per frame.",
        allow_abbrev=False)
    parser.add_argument("--sizes", type=parse_list(parse_size), default="256x512,512x1024",
                        help="input sizes HxW, comma separated (default: %(default)s)")
    parser.add_argument("--memory-lengths", type=parse_list(int), default="1,2,3,4",
                        help="memory lengths T of lmanet_erfnet (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls per model, the median is reported (default: 5)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls per model first (default: 2)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="cpu, cuda, or all available (default: all)")
    parser.add_argument("--cuda-dtypes", type=parse_list(str), default="fp32,fp16",
                        help="precisions timed on CUDA (default: %(default)s); CPU runs fp32")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurements")
    parser.add_argument("--memory-probes", type=int, default=1,
                        help="fresh processes per CPU memory measurement, the median is "
                             "reported (default: 1)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the results as JSON to PATH")
    parser.add_argument("--probe", nargs=4, metavar=("MODEL", "SIZE", "T", "THREADS"),
                        help=argparse.SUPPRESS)  # internal: one CPU peak-RSS measurement
    return parser


# ------------------------------------------------------------------------------ helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_memory(model, size: tuple[int, int], length: int, device: torch.device,
                     dtype: torch.dtype) -> Memory:
    """A full memory of ``length`` random frames with the shapes a step stores at ``size``.

    Built without running the network (channel counts from a 1x1 probe of the temporal
    module), so that no large activation has been allocated before a memory measurement.
    """
    stride = model.info.output_stride
    height, width = -(-size[0] // stride), -(-size[1] // stride)
    temporal = model.temporal_module
    probe = torch.zeros(1, model.encoder.out_channels, 1, 1, device=device, dtype=dtype)
    key, value = temporal.memory_entry(probe)
    generator = torch.Generator(device="cpu").manual_seed(length)

    def rand(channels):
        return (0.3 * torch.randn(1, channels, height, width, generator=generator)).to(
            device=device, dtype=dtype)

    return Memory(tuple(rand(key.shape[1]) for _ in range(length)),
                  tuple(rand(value.shape[1]) for _ in range(length)))


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> bool:
    """Give freed heap memory back to the kernel (glibc); False where that is not possible."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) or True)
    except (OSError, AttributeError):
        return False


def probe_cpu_peak(model_name: str, size: tuple[int, int], memory_length: int) -> dict:
    """In THIS (fresh) process: resident memory before a warm step and its peak during it."""
    torch.manual_seed(0)
    temporal = model_name != "erfnet"
    model = build_model(model_name, memory_length=max(1, memory_length)).eval()
    x = torch.rand(1, 3, *size)
    with torch.inference_mode():
        memory = (synthetic_memory(model, size, memory_length, x.device, x.dtype)
                  if temporal else None)
        model.step(x, memory)  # warm-up: kernels and caches as in steady state; result dropped
    gc.collect()
    trimmed = _malloc_trim()
    before = _status_kib("VmRSS")
    method = "VmHWM after clear_refs"
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        method = "ru_maxrss"
    with torch.inference_mode():
        model.step(x, memory)
    peak = _status_kib("VmHWM") if method != "ru_maxrss" else None
    if peak is None:
        method = "ru_maxrss"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if before is None:
        raise RuntimeError("cannot read /proc/self/status: no resident-memory measurement")
    if trimmed:
        method += ", freed heap trimmed before"
    return {"model": model_name, "size": list(size), "T": memory_length, "rss_before_mb":
            before / 1024, "rss_peak_mb": peak / 1024, "step_extra_mb": (peak - before) / 1024,
            "method": method}


def cpu_peak_in_subprocess(model_name: str, size: tuple[int, int], memory_length: int,
                           threads: int, probes: int = 1) -> dict:
    """Run :func:`probe_cpu_peak` in ``probes`` fresh processes; the median step extra."""
    command = [sys.executable, str(Path(__file__).resolve()), "--probe", model_name,
               f"{size[0]}x{size[1]}", str(memory_length), str(threads)]
    results = []
    for _ in range(max(1, probes)):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"memory probe failed: {proc.stderr.strip()[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    extras = [r["step_extra_mb"] for r in results]
    return {**results[0], "step_extra_mb": statistics.median(extras), "step_extra_all_mb": extras}


def cuda_peak(model, x: torch.Tensor, memory: Memory | None) -> float:
    """Peak CUDA memory allocated during one step above what was allocated before, in MB."""
    device = x.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        model.step(x, memory)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


# ---------------------------------------------------------------------------- measuring
def measure(device: torch.device, dtype: torch.dtype, size: tuple[int, int],
            memory_lengths: list[int], repeats: int, warmup: int, with_memory: bool,
            threads: int, probes: int = 1) -> list[dict]:
    """Time erfnet and lmanet_erfnet at each T round-robin; returns one row per model/T."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, *size, device=device, dtype=dtype)
    erfnet = build_model("erfnet").eval().to(device=device, dtype=dtype)
    lmanet = build_model("lmanet_erfnet", memory_length=max(memory_lengths)).eval().to(
        device=device, dtype=dtype)
    temporal = lmanet.temporal_module
    with torch.inference_mode():
        features = lmanet.encoder(lmanet._prepare(x))
        query_key = temporal.kv_Q_r4.Key(features)
        memories = {t: synthetic_memory(lmanet, size, t, device, dtype) for t in memory_lengths}

    def run_erfnet():
        erfnet.step(x, None)

    def make_lmanet(t):
        def run():
            lmanet.memory_length = t
            _, memories[t] = lmanet.step(x, memories[t])
        return run

    def make_attention(t):
        def run():
            local_memory_attention(query_key, memories[t].keys, memories[t].values,
                                   radius=temporal.radius, tile=temporal.tile)
        return run

    def make_temporal(t):
        def run():
            temporal.read(features, memories[t])
            temporal.memory_entry(features)
        return run

    # Steps first, back to back, so that the per-round ratios compare calls made close in time.
    jobs = {("erfnet", 0, "step"): run_erfnet}
    for t in memory_lengths:
        jobs[("lmanet_erfnet", t, "step")] = make_lmanet(t)
    for t in memory_lengths:
        jobs[("lmanet_erfnet", t, "attention")] = make_attention(t)
        jobs[("lmanet_erfnet", t, "temporal")] = make_temporal(t)
    samples = {key: [] for key in jobs}
    with torch.inference_mode():
        for round_index in range(warmup + repeats):
            for key, job in jobs.items():
                _sync(device)
                start = time.perf_counter()
                job()
                _sync(device)
                if round_index >= warmup:
                    samples[key].append(time.perf_counter() - start)

    erfnet_ms = _median_ms(samples[("erfnet", 0, "step")])
    rows = [{"device": device.type, "dtype": str(dtype).replace("torch.", ""),
             "size": list(size), "model": "erfnet", "T": 0, "step_ms": erfnet_ms,
             "ratio": 1.0}]
    for t in memory_lengths:
        step_samples = samples[("lmanet_erfnet", t, "step")]
        step_ms = _median_ms(step_samples)
        paired = [a / b for a, b in zip(step_samples, samples[("erfnet", 0, "step")])]
        rows.append({"device": device.type, "dtype": str(dtype).replace("torch.", ""),
                     "size": list(size), "model": "lmanet_erfnet", "T": t, "step_ms": step_ms,
                     "ratio": statistics.median(paired),
                     "ratio_of_medians": step_ms / erfnet_ms,
                     "attention_ms": _median_ms(samples[("lmanet_erfnet", t, "attention")]),
                     "temporal_ms": _median_ms(samples[("lmanet_erfnet", t, "temporal")])})
    for row in rows:
        row["step_all_ms"] = [1e3 * s for s in samples[(row["model"], row["T"], "step")]]

    if with_memory:
        if device.type == "cpu":
            base = cpu_peak_in_subprocess("erfnet", size, 0, threads, probes)
            rows[0]["peak_step_mb"] = base["step_extra_mb"]
            rows[0]["memory_method"] = base["method"]
            for row in rows[1:]:
                probe = cpu_peak_in_subprocess("lmanet_erfnet", size, row["T"], threads, probes)
                row["peak_step_mb"] = probe["step_extra_mb"]
                row["extra_over_erfnet_mb"] = probe["step_extra_mb"] - base["step_extra_mb"]
                row["memory_method"] = probe["method"]
        else:
            base = cuda_peak(erfnet, x, None)
            rows[0]["peak_step_mb"] = base
            for row in rows[1:]:
                lmanet.memory_length = row["T"]
                peak = cuda_peak(lmanet, x, memories[row["T"]])
                row["peak_step_mb"] = peak
                row["extra_over_erfnet_mb"] = peak - base
                row["memory_method"] = "max_memory_allocated"
    return rows


def format_table(rows: list[dict]) -> str:
    header = (f"{'device':<6} {'dtype':<8} {'size':>9} {'model':<14} {'T':>2} {'step ms':>9} "
              f"{'ratio':>6} {'attn ms':>8} {'module ms':>9} {'step MB':>8} {'extra MB':>8}")
    lines = [header, "-" * len(header)]

    def num(value, fmt):
        return format(value, fmt) if value is not None else "-"

    for row in rows:
        size = f"{row['size'][0]}x{row['size'][1]}"
        lines.append(
            f"{row['device']:<6} {row['dtype']:<8} {size:>9} {row['model']:<14} "
            f"{row['T'] or '-':>2} {row['step_ms']:>9.1f} {row['ratio']:>5.2f}x "
            f"{num(row.get('attention_ms'), '8.1f'):>8} {num(row.get('temporal_ms'), '9.1f'):>9} "
            f"{num(row.get('peak_step_mb'), '8.1f'):>8} "
            f"{num(row.get('extra_over_erfnet_mb'), '8.1f'):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.probe:
        model_name, size, memory_length, threads = args.probe
        if int(threads) > 0:
            torch.set_num_threads(int(threads))
        print(json.dumps(probe_cpu_peak(model_name, parse_size(size), int(memory_length))))
        return 0
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    if any(t < 1 for t in args.memory_lengths):
        raise SystemExit("--memory-lengths must be >= 1")
    unknown = [d for d in args.cuda_dtypes if d not in DTYPES]
    if unknown:
        raise SystemExit(f"unknown --cuda-dtypes {unknown}; choose from {sorted(DTYPES)}")

    targets = []
    if args.device in ("cpu", "all"):
        targets.append((torch.device("cpu"), torch.float32))
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            targets += [(torch.device("cuda"), DTYPES[d]) for d in args.cuda_dtypes]
        elif args.device == "cuda":
            raise SystemExit("--device cuda: CUDA is not available")

    rows = []
    for device, dtype in targets:
        for size in args.sizes:
            print(f"measuring {device.type} {dtype} {size[0]}x{size[1]} ...", file=sys.stderr)
            rows += measure(device, dtype, size, args.memory_lengths, args.repeats, args.warmup,
                            not args.no_memory, args.threads, args.memory_probes)
    print(format_table(rows))
    environment = {
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "repeats": args.repeats, "warmup": args.warmup, "memory_probes": args.memory_probes,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(f"torch {environment['torch']}, {environment['threads']} CPU threads, load average "
          f"{environment['load_average']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": environment, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
