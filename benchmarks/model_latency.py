"""Per-frame latency, memory per stream and peak extra memory of temporal models (LMANet, TMANet,
TDNet, STF, ...) against their single-frame bases, and the local memory attention alone with its
two backends.

Model rows (``--models``: registry names, comma separated, or ``all``: erfnet and every temporal
model registered on it; default ``erfnet,lmanet_erfnet``; random weights, eval mode,
``torch.inference_mode``, batch 1). The single-frame base of a temporal model is the registered
single-frame model its name ends with (``lmanet_erfnet``, ``stf_mar_erfnet`` -> ``erfnet``,
``lmanet_pspnet101`` -> ``pspnet101``); it is added to the run when not listed.

- Memory length T: each temporal model at its registry default, or at each of
  ``--memory-lengths``. One model is built per (model, T), so that a model whose weights fix T
  (TMANet's slots, TDNet's T+1 paths) runs as built for that T. Where a T does not fit a model
  (STF's window holds at most 2 past frames) it runs at its default T instead and the row's
  ``note`` says so (one row per model and T run).
- ``step`` time: the median over ``--repeats`` calls after ``--warmup`` calls of
  ``model.step(x, memory)`` with the memory full at T frames (the returned memory, still T
  frames, is fed to the next call, so each call also pushes the new frame's entry).
  The models are timed round-robin (one call of each per round), so that load from other
  processes on a shared machine affects all of them alike and the ratios stay meaningful.
- ``ratio``: the median over rounds of (temporal step / base step of the same round), which
  cancels slow drifts of the machine's load; ``ratio_of_medians`` is in the JSON too. Where the
  issue sets a bound (:data:`RATIO_LIMITS`: TDNet's step at most 0.6x erfnet's) the ``limit``
  column says PASS or FAIL.
- Memory per stream (``stream MB``, JSON ``memory_bytes``): the bytes of every tensor of the
  memory value after the timed steps (``memory.nbytes``), i.e. what one stream holds between
  two frames; MB here are 2**20 bytes.
- ``attention`` (LMANet only): the local memory attention alone (``local_memory_attention`` on
  the model's query key and the T memory frames), and ``temporal`` (``module ms``; FIFO modules:
  LMANet, TMANet, STF): the whole temporal module, i.e. its read of the memory and the entry of
  the frame pushed (LMANet: kv_Q, the attention, the fusion and kv_M), both medians like the
  step. TDNet has neither: its sub-networks are its module.
  ``--attention torch|compiled|auto`` sets $LMANET_ATTENTION for these rows (and the memory
  probes), i.e. which attention backend the models use on the CPU.
- Peak extra memory of a step:
  * CPU: each (model, size, T) runs in a fresh Python process that builds the model, the input
    and a full memory of random tensors, runs one warm-up step (so that kernels, thread pools
    and caches are set up as in steady state, and only activations differ), returns freed heap
    memory to the kernel (glibc ``malloc_trim``), records its resident set (VmRSS), resets the
    kernel's peak-RSS mark (``5`` written to ``/proc/self/clear_refs``; where refused,
    ``ru_maxrss`` is used), runs ONE step and reads the peak (VmHWM). The step's extra memory
    is peak - before; the table's "extra MB" is the temporal step's extra minus its base's, i.e.
    what the temporal module adds at the worst moment of a step. Page-granular RSS of a fresh
    process varies by a few MB between runs.
  * CUDA: ``torch.cuda.max_memory_allocated`` during one step minus the memory allocated before
    it (in-process, after ``reset_peak_memory_stats``), the temporal model's minus the base's.
  CPU rows use ``--sizes``; CUDA rows (only where CUDA is present) use ``--cuda-sizes``.

Attention rows (``--attention-cases``): ``local_memory_attention`` alone on random float32
inputs of fixed feature shapes, the ``torch`` and ``compiled`` backends timed round-robin
(CUDA: ``torch`` only), with the FLOP count of logits and read-out (2 x H x W x T x P^2 x
(Ck + Cv), borders included).

Reference arithmetic at 512x1024: ERFNet 53.2 GFLOP per frame; LMANet's memory module adds 10.3
GFLOP of convolutions and 2.3 GFLOP of exact attention at T = 4 (1.24x is the floor).

Usage (the first command is issue 11's table of the temporal-module family: every ERFNet-based
temporal model at its own T beside erfnet, one CPU thread; TDNet's ratio checked against 0.6x)::

    python benchmarks/model_latency.py --models all --sizes 256x512,512x1024 --device cpu \\
        --threads 1 --repeats 3 --attention-cases none --json out.json
    python benchmarks/model_latency.py --sizes 256x512,512x1024 --memory-lengths 1,2,3,4 \\
        --repeats 7 --device all --json results.json
    python benchmarks/model_latency.py --models none --attention-cases all --repeats 5
    python benchmarks/model_latency.py --models pspnet101,lmanet_pspnet101 --sizes 257x513 \\
        --memory-lengths 3 --attention compiled --attention-cases none

Issue 15's released TDNets against their PSPNets (TD4-PSP18 checked against 0.35x PSPNet-101)::

    python benchmarks/model_latency.py --models td4_psp18,td2_psp50 --sizes 512x1024 \\
        --device cpu --threads 1 --repeats 3 --warmup 1 --attention-cases none
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

from lmanet_ros.models import (LocalMemoryModule, Segmenter, TemporalMemory,  # noqa: E402
                               build_model, list_models)
from lmanet_ros.models.attention import (BACKEND_ENV, BACKENDS, DEFAULT_RADIUS,  # noqa: E402
                                         attention_backend, local_memory_attention)
from lmanet_ros.models.registry import model_entry  # noqa: E402
from lmanet_ros.sizes import size_type  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Attention-only cases: name -> (Ck, Cv, feature height, feature width, T).
ATTENTION_CASES = {
    "erfnet-64x128": (16, 64, 64, 128, 4),    # LMANet-ERFNet at 512x1024 input
    "erfnet-32x64": (16, 64, 32, 64, 4),      # LMANet-ERFNet at 256x512 input
    "pspnet-64x128": (128, 2048, 64, 128, 3),  # LMANet-PSPNet widths at 64x128 features
}
#: The single-frame model whose family ``--models all`` is.
FAMILY_BASE = "erfnet"
#: Issue 11's bounds on a temporal model's step ratio over its base's (at most this many times);
#: issue 15's: TD4-PSP18 at most 0.35x PSPNet-101 (its multiply-adds are about 0.21x).
RATIO_LIMITS = {"tdnet_erfnet": 0.6, "td4_psp18": 0.35}
#: Bases that a temporal model's name does not end with: the released TDNets against the
#: PSPNets they are compared with (TD4-PSP18's distillation teacher, and PSPNet-50).
NAMED_BASES = {"td4_psp18": "pspnet101", "td2_psp50": "pspnet50"}


parse_size = size_type(minimum=8)


def parse_list(kind):
    def parse(text: str):
        return [kind(item) for item in text.split(",") if item.strip()]
    return parse


def parse_names(known: list[str], what: str, everything: list[str] | None = None):
    """Comma-separated names from ``known``; ``all`` is ``everything`` (default: every known
    name), ``none`` or '' is none."""
    def parse(text: str) -> list[str]:
        text = text.strip()
        if text in ("", "none"):
            return []
        if text == "all":
            return list(known if everything is None else everything)
        names = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; known: {known}")
        return names
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Per-frame latency, memory per stream and peak memory of temporal models vs "
                    "their single-frame bases, and of the local memory attention alone.",
        allow_abbrev=False)
    models = parser.add_argument_group("model rows")
    models.add_argument("--models", type=parse_names(list_models(), "models", family()),
                        default="erfnet,lmanet_erfnet",
                        help=f"registry names, comma separated, all ({', '.join(family())}) or "
                             f"none (default: %(default)s); each temporal model's single-frame "
                             f"base is added where missing")
    models.add_argument("--sizes", type=parse_list(parse_size), default="256x512,512x1024",
                        help="CPU input sizes HxW, comma separated (default: %(default)s)")
    models.add_argument("--cuda-sizes", type=parse_list(parse_size), default="1025x2049",
                        help="CUDA input sizes HxW (default: %(default)s)")
    models.add_argument("--memory-lengths", type=parse_list(int), default=None,
                        help="memory lengths T of the temporal models, comma separated "
                             "(default: each model's own; a T that does not fit a model runs "
                             "at its own, noted in the table)")
    models.add_argument("--attention", choices=BACKENDS, default=None,
                        help=f"attention backend of the models (sets ${BACKEND_ENV}; default: "
                             f"as set in the environment, else auto)")
    models.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurements")
    models.add_argument("--memory-probes", type=int, default=1,
                        help="fresh processes per CPU memory measurement, the median is "
                             "reported (default: 1)")
    attention = parser.add_argument_group("attention rows")
    attention.add_argument("--attention-cases",
                           type=parse_names(list(ATTENTION_CASES), "attention cases"),
                           default="all",
                           help=f"attention-only cases, comma separated, all or none (default: "
                                f"%(default)s; known: {', '.join(ATTENTION_CASES)})")
    common = parser.add_argument_group("common")
    common.add_argument("--repeats", type=int, default=5,
                        help="timed calls per job, the median is reported (default: 5)")
    common.add_argument("--warmup", type=int, default=2,
                        help="untimed calls per job first (default: 2)")
    common.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="cpu, cuda, or all available (default: all)")
    common.add_argument("--cuda-dtypes", type=parse_list(str), default="fp32,fp16",
                        help="precisions timed on CUDA (default: %(default)s); CPU runs fp32")
    common.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")
    common.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the results as JSON to PATH")
    parser.add_argument("--probe", nargs=4, metavar=("MODEL", "SIZE", "T", "THREADS"),
                        help=argparse.SUPPRESS)  # internal: one CPU peak-RSS measurement
    return parser


# ------------------------------------------------------------------------------ helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stepped_memory(model, size: tuple[int, int], length: int, device: torch.device,
                    dtype: torch.dtype):
    """The memory after ``length`` steps on random frames, for modules whose memory is not a
    FIFO of per-frame tensors (e.g. TDNet's path counter and projected entries)."""
    generator = torch.Generator(device="cpu").manual_seed(length)
    memory = None
    with torch.inference_mode():
        for _ in range(length):
            x = torch.rand(1, 3, *size, generator=generator).to(device=device, dtype=dtype)
            _, memory = model.step(x, memory)
    return memory


def synthetic_memory(model, size: tuple[int, int], length: int, device: torch.device,
                     dtype: torch.dtype) -> TemporalMemory:
    """A full memory of ``length`` random frames with the shapes a step stores at ``size``, of
    the temporal module's own memory type (LMANet's keys and values, TMANet's features...).

    Built without running the network (channel counts from a 1x1 probe of the temporal
    module), so that no large activation has been allocated before a memory measurement.
    """
    temporal = model.temporal_module
    if not hasattr(temporal, "memory_entry"):  # not a FIFO of per-frame tensors (TDNet's)
        return _stepped_memory(model, size, length, device, dtype)
    stride = model.info.output_stride
    padded = model.info.padded_size(*size)
    height, width = -(-padded[0] // stride), -(-padded[1] // stride)
    probe = torch.zeros(1, model.encoder.out_channels, 1, 1, device=device, dtype=dtype)
    columns = temporal.memory_entry(probe)
    generator = torch.Generator(device="cpu").manual_seed(length)

    def rand(channels):
        return (0.3 * torch.randn(1, channels, height, width, generator=generator)).to(
            device=device, dtype=dtype)

    return temporal.memory_type(*(tuple(rand(column.shape[1]) for _ in range(length))
                                  for column in columns))


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
    temporal = model_entry(model_name).temporal
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


def cuda_peak(model: Segmenter, x: torch.Tensor, memory: TemporalMemory | None) -> float:
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
def base_of(name: str) -> str | None:
    """The registered single-frame base of a temporal model: the longest registered
    single-frame model its name ends with after a ``_`` (``lmanet_erfnet``, ``stf_mar_erfnet``
    -> ``erfnet``; ``lmanet_pspnet101`` -> ``pspnet101``; :data:`NAMED_BASES` first), or None."""
    if not model_entry(name).temporal:
        return None
    if name in NAMED_BASES:
        return NAMED_BASES[name]
    parts = name.split("_")
    for start in range(1, len(parts)):
        candidate = "_".join(parts[start:])
        if candidate in list_models() and not model_entry(candidate).temporal:
            return candidate
    return None


def family(base: str = FAMILY_BASE) -> list[str]:
    """``base`` and every registered temporal model on it, in registry order (``all``)."""
    return [name for name in list_models() if name == base or base_of(name) == base]


def with_bases(names: list[str]) -> list[str]:
    """``names`` with the bases of its temporal models added before them where missing."""
    out = []
    for name in names:
        base = base_of(name)
        if base is not None and base not in out:
            out.append(base)
        if name not in out:
            out.append(name)
    return out


def _built_at(name: str, length: int) -> Segmenter | None:
    """``name`` built at memory length ``length`` in eval mode; None where the length does not
    fit the model (its builder raises ValueError, e.g. STF's window of 2 past frames)."""
    try:
        return build_model(name, memory_length=length).eval()
    except ValueError:
        return None


def build_models(names: list[str], memory_lengths: list[int] | None
                 ) -> dict[tuple[str, int], tuple[Segmenter, str]]:
    """One model per (name, T) run, with a note: single-frame models at T = 0, temporal ones
    at each of ``memory_lengths`` (None: at their registry default).

    A T that does not fit a model is replaced by the model's default T (one model, one row for
    all such T); that row's note says which T were asked for.
    """
    models: dict[tuple[str, int], Segmenter] = {}
    refused: dict[tuple[str, int], list[int]] = {}
    for name in names:
        entry = model_entry(name)
        lengths = (memory_lengths or [entry.default_memory_length]) if entry.temporal else [0]
        default = name, entry.default_memory_length
        for length in lengths:
            if (name, length) in models:
                continue
            model = _built_at(name, length)
            if model is not None:
                models[name, length] = model
                continue
            refused.setdefault(default, []).append(length)
            if default not in models:
                models[default] = _built_at(*default)
    return {key: (model, f"asked T={','.join(map(str, refused[key]))}: does not fit, runs at "
                         f"its default" if key in refused else "")
            for key, model in models.items()}


def _round_robin(jobs: dict, repeats: int, warmup: int, device: torch.device) -> dict:
    """Run every job once per round; the per-job durations (s) of the timed rounds."""
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
    return samples


def measure(device: torch.device, dtype: torch.dtype, size: tuple[int, int], names: list[str],
            memory_lengths: list[int] | None, repeats: int, warmup: int, with_memory: bool,
            threads: int, probes: int = 1) -> list[dict]:
    """Time the models (temporal ones at each T, see :func:`build_models`) round-robin; one row
    per model and T run."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, *size, device=device, dtype=dtype)
    built = build_models(names, memory_lengths)
    models = {key: model.to(device=device, dtype=dtype) for key, (model, _) in built.items()}
    features, query_keys, memories = {}, {}, {}
    with torch.inference_mode():
        for key, model in models.items():
            if key[1] == 0:
                continue
            memories[key] = synthetic_memory(model, size, key[1], device, dtype)
            module = model.temporal_module
            if hasattr(module, "read"):  # a FIFO module: its temporal row
                features[key] = model.encoder(model._prepare(x))
                memories[key].check_fits(features[key])
            if isinstance(module, LocalMemoryModule):  # its attention row
                query_keys[key] = module.kv_Q_r4.Key(features[key])

    def make_step(key):
        model = models[key]
        if key[1] == 0:
            return lambda: model.step(x, None)

        def run():
            _, memories[key] = model.step(x, memories[key])
        return run

    def make_attention(key):
        module = models[key].temporal_module
        return lambda: local_memory_attention(query_keys[key], memories[key].keys,
                                              memories[key].values, radius=module.radius,
                                              tile=module.tile)

    def make_temporal(key):
        module = models[key].temporal_module

        def run():
            module.read(features[key], memories[key])
            module.memory_entry(features[key])
        return run

    # Steps first, back to back, so that the per-round ratios compare calls made close in time.
    jobs = {(*key, "step"): make_step(key) for key in models}
    jobs.update({(*key, "attention"): make_attention(key) for key in query_keys})
    jobs.update({(*key, "temporal"): make_temporal(key) for key in features})
    samples = _round_robin(jobs, repeats, warmup, device)

    common = {"device": device.type, "dtype": str(dtype).replace("torch.", ""),
              "size": list(size)}
    rows = []
    for (name, t), (model, note) in built.items():
        step_samples = samples[name, t, "step"]
        delay = getattr(model, "output_delay_frames", 0)
        note = "; ".join(filter(None, [note, f"output {delay} frame(s) late" if delay else ""]))
        row = {**common, "model": name, "T": t, "step_ms": _median_ms(step_samples),
               "step_all_ms": [1e3 * v for v in step_samples], "base": base_of(name),
               "ratio": 1.0 if t == 0 else None, "note": note,
               "memory_bytes": memories[name, t].nbytes if t else 0}
        if t > 0:
            row["attention_ms"] = (_median_ms(samples[name, t, "attention"])
                                   if (name, t) in query_keys else None)
            row["temporal_ms"] = (_median_ms(samples[name, t, "temporal"])
                                  if (name, t) in features else None)
            row["attention_backend"] = (  # of the local memory attention, where used
                None if (name, t) not in query_keys else "torch"
                if device.type != "cpu" or dtype != torch.float32 else attention_backend())
            if row["base"] is not None:
                base_samples = samples[row["base"], 0, "step"]
                row["ratio"] = statistics.median(a / b for a, b in zip(step_samples,
                                                                       base_samples))
                row["ratio_of_medians"] = row["step_ms"] / _median_ms(base_samples)
                _check_ratio(row)
        rows.append(row)

    if with_memory:
        peaks = {}
        for row in rows:
            name, t = row["model"], row["T"]
            if device.type == "cpu":
                probe = cpu_peak_in_subprocess(name, size, t, threads, probes)
                peaks[name] = row["peak_step_mb"] = probe["step_extra_mb"]
                row["memory_method"] = probe["method"]
            else:
                peaks[name] = row["peak_step_mb"] = cuda_peak(models[name, t], x,
                                                              memories.get((name, t)))
                row["memory_method"] = "max_memory_allocated"
            if row["base"] is not None and row["base"] in peaks:
                row["extra_over_base_mb"] = row["peak_step_mb"] - peaks[row["base"]]
    return rows


def _check_ratio(row: dict) -> None:
    """Add the row's bound of :data:`RATIO_LIMITS` (``ratio_limit``) and whether the step
    ratio keeps it (``ratio_pass``), where the model has one."""
    limit = RATIO_LIMITS.get(row["model"])
    if limit is not None:
        row["ratio_limit"], row["ratio_pass"] = limit, row["ratio"] <= limit


def attention_flops(case: tuple[int, int, int, int, int], radius: int = DEFAULT_RADIUS) -> float:
    """Multiply-adds x 2 of logits and read-out for an attention case (borders included)."""
    key_channels, value_channels, height, width, frames = case
    return 2.0 * height * width * frames * (2 * radius + 1) ** 2 * (key_channels + value_channels)


def measure_attention(device: torch.device, dtype: torch.dtype, cases: list[str], repeats: int,
                      warmup: int) -> list[dict]:
    """Time ``local_memory_attention`` alone per case and backend, round-robin."""
    backends = ["torch"]
    if device.type == "cpu" and dtype == torch.float32:
        tiny = torch.zeros(1, 1, 1, 1)
        try:
            local_memory_attention(tiny, [tiny], [tiny], backend="compiled")
            backends.append("compiled")
        except RuntimeError as error:
            print(f"attention rows without the compiled backend: {error}", file=sys.stderr)
    generator = torch.Generator().manual_seed(0)
    jobs, inputs = {}, {}
    for case in cases:
        key_channels, value_channels, height, width, frames = ATTENTION_CASES[case]

        def rand(channels, scale):
            return (scale * torch.randn(1, channels, height, width, generator=generator)).to(
                device=device, dtype=dtype)

        scale = key_channels ** -0.25  # logits of about unit size, as trained keys give
        inputs[case] = (rand(key_channels, scale),
                        [rand(key_channels, scale) for _ in range(frames)],
                        [rand(value_channels, 1.0) for _ in range(frames)])
        for backend in backends:
            def run(case=case, backend=backend):
                query, keys, values = inputs[case]
                local_memory_attention(query, keys, values, backend=backend)
            jobs[case, backend] = run
    samples = _round_robin(jobs, repeats, warmup, device)
    rows = []
    for case in cases:
        key_channels, value_channels, height, width, frames = ATTENTION_CASES[case]
        row = {"device": device.type, "dtype": str(dtype).replace("torch.", ""), "case": case,
               "key_channels": key_channels, "value_channels": value_channels,
               "features": [height, width], "T": frames,
               "gflop": attention_flops(ATTENTION_CASES[case]) / 1e9}
        for backend in backends:
            row[f"{backend}_ms"] = _median_ms(samples[case, backend])
            row[f"{backend}_all_ms"] = [1e3 * v for v in samples[case, backend]]
        if "compiled_ms" in row:
            row["speedup"] = row["torch_ms"] / row["compiled_ms"]
        rows.append(row)
    return rows


def _num(value, fmt):
    return format(value, fmt) if value is not None else "-"


def _limit(row: dict) -> str:
    """``<=0.60x PASS`` / ``FAIL`` for a row with a ratio bound, else ``-``."""
    if "ratio_limit" not in row:
        return "-"
    return f"<={row['ratio_limit']:.2f}x {'PASS' if row['ratio_pass'] else 'FAIL'}"


def format_table(rows: list[dict]) -> str:
    """The model rows; ``stream MB``: memory per stream (2**20 bytes), step/extra MB: the peak
    extra memory of a step and its excess over the base's."""
    width = max([len("model")] + [len(row["model"]) for row in rows])
    header = (f"{'device':<6} {'dtype':<8} {'size':>9} {'model':<{width}} {'T':>2} "
              f"{'step ms':>9} {'ratio':>6} {'limit':<12} {'attn ms':>8} {'module ms':>9} "
              f"{'stream MB':>9} {'step MB':>8} {'extra MB':>8}  attention  note")
    lines = [header, "-" * len(header)]
    for row in rows:
        size = f"{row['size'][0]}x{row['size'][1]}"
        ratio = f"{row['ratio']:>5.2f}x" if row["ratio"] is not None else f"{'-':>6}"
        lines.append(
            f"{row['device']:<6} {row['dtype']:<8} {size:>9} {row['model']:<{width}} "
            f"{row['T'] or '-':>2} {row['step_ms']:>9.1f} {ratio} {_limit(row):<12} "
            f"{_num(row.get('attention_ms'), '8.1f'):>8} "
            f"{_num(row.get('temporal_ms'), '9.1f'):>9} "
            f"{_num(row['memory_bytes'] / 2 ** 20 if row['T'] else None, '9.2f'):>9} "
            f"{_num(row.get('peak_step_mb'), '8.1f'):>8} "
            f"{_num(row.get('extra_over_base_mb'), '8.1f'):>8}  "
            f"{row.get('attention_backend') or '-':<9}  {row['note']}".rstrip())
    return "\n".join(lines)


def format_attention_table(rows: list[dict]) -> str:
    header = (f"{'device':<6} {'dtype':<8} {'case':<14} {'Ck':>4} {'Cv':>5} {'features':>8} "
              f"{'T':>2} {'GFLOP':>6} {'torch ms':>9} {'compiled ms':>11} {'speedup':>7} "
              f"{'compiled GFLOP/s':>16}")
    lines = [header, "-" * len(header)]
    for row in rows:
        features = f"{row['features'][0]}x{row['features'][1]}"
        compiled = row.get("compiled_ms")
        lines.append(
            f"{row['device']:<6} {row['dtype']:<8} {row['case']:<14} {row['key_channels']:>4} "
            f"{row['value_channels']:>5} {features:>8} {row['T']:>2} {row['gflop']:>6.2f} "
            f"{row['torch_ms']:>9.1f} {_num(compiled, '11.1f'):>11} "
            f"{_num(row.get('speedup'), '6.1f'):>6}x "
            f"{_num(row['gflop'] / compiled * 1e3 if compiled else None, '16.1f'):>16}")
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
    if args.memory_lengths is not None and (not args.memory_lengths
                                            or any(t < 1 for t in args.memory_lengths)):
        raise SystemExit("--memory-lengths must be one or more lengths >= 1")
    unknown = [d for d in args.cuda_dtypes if d not in DTYPES]
    if unknown:
        raise SystemExit(f"unknown --cuda-dtypes {unknown}; choose from {sorted(DTYPES)}")
    if args.attention is not None:
        os.environ[BACKEND_ENV] = args.attention  # also seen by the memory-probe processes
    names = with_bases(args.models)

    targets = []
    if args.device in ("cpu", "all"):
        targets.append((torch.device("cpu"), torch.float32, args.sizes))
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            targets += [(torch.device("cuda"), DTYPES[d], args.cuda_sizes)
                        for d in args.cuda_dtypes]
        elif args.device == "cuda":
            raise SystemExit("--device cuda: CUDA is not available")

    rows, attention_rows = [], []
    for device, dtype, sizes in targets:
        if args.attention_cases:
            print(f"measuring attention {device.type} {dtype} ...", file=sys.stderr)
            attention_rows += measure_attention(device, dtype, args.attention_cases,
                                                args.repeats, args.warmup)
        for size in sizes if names else []:
            print(f"measuring {device.type} {dtype} {size[0]}x{size[1]} ...", file=sys.stderr)
            rows += measure(device, dtype, size, names, args.memory_lengths, args.repeats,
                            args.warmup, not args.no_memory, args.threads, args.memory_probes)
    if attention_rows:
        print(format_attention_table(attention_rows))
    if rows:
        print(format_table(rows))
    environment = {
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "repeats": args.repeats, "warmup": args.warmup, "memory_probes": args.memory_probes,
        "memory_lengths": args.memory_lengths,  # None: each model's own
        "attention_backend": attention_backend(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(f"torch {environment['torch']}, {environment['threads']} CPU threads, attention "
          f"backend {environment['attention_backend']}, load average "
          f"{environment['load_average']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": environment, "rows": rows,
                                         "attention_rows": attention_rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
