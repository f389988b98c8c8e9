"""Step latency of each inference backend, in one run: PyTorch with the plain attention, PyTorch
with the compiled attention kernel, onnxruntime and OpenVINO, on the same weights and frame.

Rows: each model of ``--models`` (default erfnet and lmanet_erfnet) at ``--size`` (default
256x512) with ``--checkpoint`` (default the demo weights) at memory length ``--memory-length``
(default 4; single-frame models 0), ``--threads`` CPU threads (default 1) for every backend.

- ``torch-plain``: ``model.step`` with ``LMANET_ATTENTION=torch`` (the tiled matrix-product
  attention, :mod:`lmanet_ros.models.attention`); ``torch-compiled``: the same model with
  ``LMANET_ATTENTION=compiled`` (the C++ kernel; the row is skipped with a note when it is not
  built). ERFNet has no attention: its two torch rows are the same network.
- ``onnxruntime``, ``openvino``: :class:`lmanet_ros.runtime.RuntimeModel` on the graphs of the
  graph cache (``--cache-dir``, default ``$LMANET_CACHE`` or ``~/.cache/lmanet_ros/onnx``;
  exported on a miss, which takes seconds per graph before any timing), in the layout the
  backends use (``auto``: LMANet's split layout, the attention in the compiled kernel between
  two graphs); ``onnxruntime-fill``, ``openvino-fill``: the self-contained fill-level graphs of
  ``lmanet export`` (the attention as ONNX ops; for a model without the split layout the row
  is skipped: it would repeat the one before).
- Step time: the median over ``--repeats`` rounds after ``--warmup`` rounds; in each round every
  backend of the model steps once, in turn (round-robin, so that the load of other processes
  falls on all alike), with its memory full at T (the memory each step returns is fed to the
  next, so the step also pushes the frame's entry), under ``torch.inference_mode``.
- Ratios: the median over rounds of (backend step / torch-plain step of the same round) and
  (/ torch-compiled), so a drift of the machine's load cancels.

Usage (the numbers of issue 16)::

    python benchmarks/backend_latency.py --threads 1 --repeats 20 --json backend_latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmanet_ros.models import list_models  # noqa: E402
from lmanet_ros.models.attention import BACKEND_ENV, attention_backend  # noqa: E402
from lmanet_ros.runtime import GRAPH_BACKENDS, load_model  # noqa: E402
from lmanet_ros.runtime.split import supports_split  # noqa: E402
from lmanet_ros.sizes import size_type  # noqa: E402

#: The torch rows: name -> value of $LMANET_ATTENTION during their steps.
TORCH_ROWS = {"torch-plain": "torch", "torch-compiled": "compiled"}
#: The rows of the fill-level graphs: name -> backend.
FILL_ROWS = {f"{backend}-fill": backend for backend in GRAPH_BACKENDS}
#: Every row, in the table's order.
ROWS = (*TORCH_ROWS, *GRAPH_BACKENDS, *FILL_ROWS)
#: The ratio denominators.
REFERENCES = tuple(TORCH_ROWS)

Step = Callable[[], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--models", default="erfnet,lmanet_erfnet",
                        help="registry names, comma separated (default: %(default)s)")
    parser.add_argument("--checkpoint", default="demo",
                        help="weights of every model: a file or tag (default: %(default)s)")
    parser.add_argument("--size", type=size_type(minimum=8), default=(256, 512), metavar="HxW",
                        help="input size (default: 256x512)")
    parser.add_argument("--memory-length", type=int, default=4, metavar="T",
                        help="T of the temporal models (default: %(default)s)")
    parser.add_argument("--backends", default=",".join(ROWS),
                        help="rows, comma separated (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (default: 3)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="graph cache folder (default: $LMANET_CACHE, else "
                        "~/.cache/lmanet_ros/onnx)")
    parser.add_argument("--json", type=Path, help="write the rows and settings here")
    return parser


def _stepper(model, x: torch.Tensor, attention: str | None) -> Step:
    """One step of ``model`` on ``x`` per call, its memory carried over (full at T)."""
    state = {"memory": None}

    def step() -> None:
        if attention is not None:
            os.environ[BACKEND_ENV] = attention
        with torch.inference_mode():
            _, state["memory"] = model.step(x, state["memory"])
    for _ in range(max(1, model.memory_length)):
        step()  # fill the memory
    return step


def _compiled_missing() -> str | None:
    """Why the compiled attention kernel cannot run, or None."""
    os.environ[BACKEND_ENV] = "compiled"
    described = attention_backend()
    return None if described.startswith("compiled") else described


def steppers(name: str, args: argparse.Namespace, backends: list[str]
             ) -> tuple[dict[str, Step], dict[str, str]]:
    """(row -> step function, row -> note) for one model."""
    x = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(0))
    length = args.memory_length
    torch_model = load_model(name, args.checkpoint).model
    if torch_model.info.temporal:
        torch_model.memory_length = length
    steps, notes = {}, {}
    for row in backends:
        if row in TORCH_ROWS:
            missing = _compiled_missing() if TORCH_ROWS[row] == "compiled" else None
            if missing:
                notes[row] = f"skipped: {missing}"
                continue
            steps[row] = _stepper(torch_model, x, TORCH_ROWS[row])
        else:
            if row in FILL_ROWS and not supports_split(torch_model):
                notes[row] = f"skipped: {name} has only the fill layout (row {FILL_ROWS[row]})"
                continue
            model = load_model(name, args.checkpoint, backend=FILL_ROWS.get(row, row),
                               input_size=args.size, memory_length=length,
                               num_threads=args.threads, cache_dir=args.cache_dir,
                               layout="fill" if row in FILL_ROWS else "auto").model
            exported = model.graphs.exported
            notes[row] = f"{model.layout} layout" + (
                f", exported {list(exported)}" if exported else "")
            steps[row] = _stepper(model, x, None)
    return steps, notes


def time_rounds(steps: dict[str, Step], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Row -> step times in ms, one per timed round (every row once per round, in turn)."""
    times: dict[str, list[float]] = {row: [] for row in steps}
    for index in range(warmup + repeats):
        for row, step in steps.items():
            start = time.perf_counter()
            step()
            if index >= warmup:
                times[row].append((time.perf_counter() - start) * 1e3)
    return times


def summarise(name: str, times: dict[str, list[float]], notes: dict[str, str]) -> list[dict]:
    """One JSON row per backend of a model: median ms, ratios to the torch rows."""
    rows = []
    for row in ROWS:
        if row not in times and row not in notes:
            continue
        entry = {"model": name, "backend": row, "note": notes.get(row, "")}
        if row in times:
            entry["step_ms"] = statistics.median(times[row])
            for reference in REFERENCES:
                if reference in times:
                    entry[f"ratio_to_{reference}"] = statistics.median(
                        a / b for a, b in zip(times[row], times[reference]))
        rows.append(entry)
    return rows


def print_table(rows: list[dict]) -> None:
    header = (f"{'model':<16}{'backend':<16}{'step ms':>9}"
              + "".join(f"{'/' + ref:>16}" for ref in REFERENCES) + "  note")
    print(header)
    for row in rows:
        ratios = "".join(f"{row[f'ratio_to_{ref}']:>15.2f}x" if f"ratio_to_{ref}" in row
                         else f"{'-':>16}" for ref in REFERENCES)
        step = f"{row['step_ms']:>9.1f}" if "step_ms" in row else f"{'-':>9}"
        print(f"{row['model']:<16}{row['backend']:<16}{step}{ratios}  {row['note']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [n for n in models if n not in list_models()]
    unknown += [b for b in backends if b not in ROWS]
    if unknown:
        print(f"unknown models or backends: {unknown}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    before = os.environ.get(BACKEND_ENV)
    rows = []
    try:
        for name in models:
            steps, notes = steppers(name, args, backends)
            rows += summarise(name, time_rounds(steps, args.warmup, args.repeats), notes)
    finally:
        os.environ.pop(BACKEND_ENV, None)
        if before is not None:
            os.environ[BACKEND_ENV] = before
    print_table(rows)
    if args.json:
        settings = {key: (list(value) if isinstance(value, tuple) else
                          str(value) if isinstance(value, Path) else value)
                    for key, value in vars(args).items() if key != "json"}
        args.json.write_text(json.dumps({"settings": settings, "torch": torch.__version__,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
