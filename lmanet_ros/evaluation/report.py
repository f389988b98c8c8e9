"""What an evaluation leaves behind: metrics.json, report.md, PNG plots and an overlay video.

The offline evaluation (``lmanet eval``) and the live scorer (``lmanet score``, ``lmanet replay
--score-out``) build the same payload with :func:`build_metrics` and write it with
:func:`write_report`, so both produce the same files with the same meaning.

``metrics.json`` (schema ``lmanet-eval/1``): ``partial`` (true when the run was interrupted),
``source`` (bag, topics, frames), ``parameters`` (device, precision, memory rules), ``classes``,
``timing`` (wall seconds per activity) and ``models``: one entry per evaluated model, each with
``model``, ``checkpoint``, ``checkpoint_id`` and the scores of :meth:`lmanet_ros.metrics.RunScore.
summary` (accuracy, temporal_consistency, latency_ms, throughput_fps, memory_resets); offline also
``output_delay_frames`` (1: a delayed model, scored on the frames its labels belong to). A bag
with a corruption log adds a top-level ``corruption`` section and per model ``corruption``,
``gain`` and ``memory_check`` (:mod:`.corruption`; rendered by :mod:`.corruption_report`).
Fractions are in [0, 1]; a value that does not exist (no labels, no class) is ``null``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmanet_ros.metrics import RunScore

from .corruption_report import CORRUPTION_PLOT, plot_corruption_kinds, render_corruption
from .render import figure, num, pct, table
from .video import VIDEO_FILE

__all__ = ["SCHEMA", "METRICS_FILE", "REPORT_FILE", "IOU_PLOT", "LATENCY_PLOT", "FLIP_PLOT",
           "build_metrics", "write_json", "render_markdown", "plot_class_iou", "plot_latency",
           "plot_flip_rate", "write_report"]

SCHEMA = "lmanet-eval/1"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
IOU_PLOT = "class_iou.png"
LATENCY_PLOT = "latency_hist.png"
FLIP_PLOT = "flip_rate.png"


def build_metrics(runs: Sequence[RunScore], models: Sequence[dict], *, source: dict,
                  parameters: dict, partial: bool, timing: dict | None = None,
                  mode: str = "offline") -> dict:
    """Assemble the ``metrics.json`` payload.

    Args:
        runs: the scores, one per model, in the order of ``models``.
        models: per model: ``label``, ``model``, ``checkpoint``, ``checkpoint_id`` and anything
            else worth keeping (model info).
        source: where the frames came from (bag, storage, topics, frame counts).
        parameters: the settings that shape the results (device, precision, memory policy).
        partial: True when the run stopped before its end (Ctrl-C).
        timing: wall seconds per activity (decode, model, metrics, output bag, video, total).
        mode: ``offline`` (pipeline in this process) or ``live`` (a running node scored).
    """
    if len(runs) != len(models):
        raise ValueError(f"{len(runs)} runs but {len(models)} model descriptions")
    class_names = list(runs[0].class_names) if runs else []
    return {
        "schema": SCHEMA,
        "mode": mode,
        "partial": bool(partial),
        "source": source,
        "parameters": parameters,
        "classes": class_names,
        "timing": timing or {},
        "models": [{**model, **run.summary()} for model, run in zip(models, runs)],
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite(value: Any) -> Any:
    """Replace NaN/inf anywhere in a JSON-ready structure by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as JSON atomically (a temporary file renamed), so a reader or an
    interruption never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as stream:
        json.dump(_finite(payload), stream, indent=1, default=_json_default, allow_nan=False)
        stream.write("\n")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------- markdown
def render_markdown(payload: dict, figures: Sequence[tuple[str, str]] = ()) -> str:
    """The ``report.md`` text of a ``metrics.json`` payload (percent in the tables)."""
    source, params, models = payload["source"], payload["parameters"], payload["models"]
    lines = [f"# LMANet evaluation: {Path(str(source.get('bag', '?'))).name}", ""]
    if payload["partial"]:
        lines += [f"**Partial run**: interrupted after {source.get('frames_evaluated', '?')} "
                  f"evaluated frames; the numbers cover those frames only.", ""]
    lines += [
        f"- Mode: {payload.get('mode', 'offline')}",
        f"- Bag: `{source.get('bag')}` ({source.get('storage', '?')})",
        f"- Image topics: {', '.join(f'`{t}`' for t in source.get('image_topics', []))}",
        f"- Label topic: `{source.get('label_topic')}`"
        + (" (labelIds mapped to trainIds)" if source.get("label_ids") else ""),
        f"- Frames evaluated: {source.get('frames_evaluated')} of {source.get('frames_in_bag')}"
        f" (stride {source.get('stride', 1)})",
        "- Parameters: " + ", ".join(f"{key} = {value}" for key, value in params.items()),
        "",
        "Accuracy over the 19 Cityscapes classes, void ignored; mIoU averages the classes that "
        "occur in the ground truth or the prediction. Flip rate: share of pixels whose label "
        "changes between consecutive frames of a camera (GT-stable: where the ground truth keeps "
        "the same class). Percent unless stated.",
        "",
        "## Summary",
        "",
    ]
    rows = []
    for model in models:
        acc = model["accuracy"] or {}
        tc = model["temporal_consistency"]
        lat = model["latency_ms"]
        rows.append([
            f"`{model['label']}`", f"`{model.get('checkpoint_id')}`",
            pct(acc.get("miou")), pct(acc.get("pixel_accuracy")),
            pct(tc["flip_rate"], 2), pct(tc["flip_rate_gt_stable"], 2),
            " / ".join(num(lat.get(k)) for k in ("p50", "p90", "p99", "max")),
            num(model.get("throughput_fps"), 2), str(model["memory_resets"]["total"]),
        ])
    lines += table(["Model", "Checkpoint", "mIoU", "Pixel acc.", "Flip rate",
                    "Flip rate (GT-stable)", "Latency p50 / p90 / p99 / max (ms)",
                    "Throughput (fps)", "Memory resets"], rows)
    for model in models:
        delay = model.get("output_delay_frames")
        if delay:
            lines += ["", f"`{model['label']}` labels each frame {delay} frame(s) late: scored "
                      f"against the frame its labels belong to ({model['frames']} of "
                      f"{source.get('frames_evaluated')} frames labelled: the last frame before "
                      f"each reset and the bag's last get none); its latency is compute only, "
                      f"{delay} frame period(s) come on top."]
    lines += render_corruption(payload)
    if any(model["accuracy"] for model in models):
        lines += ["", "## Per-class IoU", ""]
        class_rows = []
        for index, name in enumerate(payload["classes"]):
            row = [name]
            for model in models:
                per_class = (model["accuracy"] or {}).get("per_class_iou", {})
                row.append(pct(per_class.get(name)))
            class_rows.append(row)
        lines += table(["Class"] + [f"`{m['label']}`" for m in models], class_rows)
        lines += ["", "– : the class is neither in the ground truth nor predicted (not averaged)."]
    else:
        lines += ["", "No label topic: accuracy not measured."]
    lines += ["", "## Memory resets", ""]
    reset_rows = []
    for model in models:
        for reason, count in sorted(model["memory_resets"]["by_reason"].items()):
            reset_rows.append([f"`{model['label']}`", reason, str(count)])
    lines += table(["Model", "Reason", "Count"], reset_rows) if reset_rows else ["None."]
    timing = payload.get("timing") or {}
    if timing:
        lines += ["", "## Wall time (s)", ""]
        lines += table(["Activity", "Seconds"],
                       [[key, num(value, 2)] for key, value in timing.items()])
    if figures:
        lines += ["", "## Figures", ""]
        for title, name in figures:
            lines += [f"![{title}]({name})", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------- plots
def plot_class_iou(path: str | Path, payload: dict) -> Path | None:
    """Per-class IoU bars in percent, the models side by side; None without labels."""
    models = [m for m in payload["models"] if m["accuracy"]]
    if not models:
        return None
    names = payload["classes"]
    fig = figure(max(8.0, 0.55 * len(names) * max(1, len(models)) ** 0.5), 4.5)
    axes = fig.add_subplot()
    width = 0.8 / len(models)
    x = np.arange(len(names))
    for index, model in enumerate(models):
        per_class = model["accuracy"]["per_class_iou"]
        values = [100.0 * v if v is not None else 0.0 for v in (per_class[n] for n in names)]
        miou = model["accuracy"]["miou"]
        axes.bar(x + (index - (len(models) - 1) / 2) * width, values, width,
                 label=f"{model['label']} (mIoU {pct(miou)} %)")
    axes.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("IoU (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Per-class IoU")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_latency(path: str | Path, runs: Sequence[RunScore]) -> Path | None:
    """Histogram of per-frame latency (ms) of every model; None without latencies."""
    runs = [run for run in runs if run.latency_ms]
    if not runs:
        return None
    fig = figure(7.0, 4.0)
    axes = fig.add_subplot()
    values = np.concatenate([np.asarray(run.latency_ms) for run in runs])
    bins = np.linspace(values.min(), values.max() + 1e-6, 40)
    for run in runs:
        p50, p99 = np.percentile(run.latency_ms, [50, 99])
        axes.hist(run.latency_ms, bins=bins, alpha=0.6,
                  label=f"{run.name} (p50 {p50:.1f}, p99 {p99:.1f} ms)")
    axes.set_xlabel("latency per frame (ms)")
    axes.set_ylabel("frames")
    axes.set_title("Latency")
    axes.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_flip_rate(path: str | Path, runs: Sequence[RunScore]) -> Path | None:
    """Flip rate (%) per frame over the run, overall (solid) and GT-stable (dashed)."""
    runs = [run for run in runs if run.temporal.samples]
    if not runs:
        return None
    fig = figure(8.0, 4.0)
    axes = fig.add_subplot()
    for run in runs:
        samples = run.temporal.samples
        index = [s.index for s in samples]
        line, = axes.plot(index, [100.0 * s.flip_rate for s in samples], lw=1,
                          label=f"{run.name}: all pixels")
        stable = [(s.index, 100.0 * s.flip_rate_gt_stable) for s in samples
                  if s.flip_rate_gt_stable is not None]
        if stable:
            axes.plot(*zip(*stable), lw=1, ls="--", color=line.get_color(),
                      label=f"{run.name}: GT-stable pixels")
        for event in run.resets:
            axes.axvline(event.index, color=line.get_color(), alpha=0.25, lw=0.8)
    axes.set_xlabel("evaluated frame (vertical lines: memory resets)")
    axes.set_ylabel("pixels flipped vs previous frame (%)")
    axes.set_title("Flip rate over time")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_report(out_dir: str | Path, payload: dict, runs: Sequence[RunScore], *,
                 plots: bool = True) -> list[Path]:
    """Write metrics.json, the PNG plots and report.md into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / METRICS_FILE, payload)]
    figures = []
    if plots:
        for title, name, made in (
                ("Per-class IoU", IOU_PLOT, lambda p: plot_class_iou(p, payload)),
                ("Latency histogram", LATENCY_PLOT, lambda p: plot_latency(p, runs)),
                ("Flip rate over time", FLIP_PLOT, lambda p: plot_flip_rate(p, runs)),
                ("mIoU by corruption kind", CORRUPTION_PLOT,
                 lambda p: plot_corruption_kinds(p, payload))):
            if made(out / name) is not None:
                figures.append((title, name))
                written.append(out / name)
    if (out / VIDEO_FILE).exists():
        figures.append(("Input | overlay", VIDEO_FILE))
    report = out / REPORT_FILE
    tmp = report.with_name(report.name + ".tmp")
    tmp.write_text(render_markdown(payload, figures), encoding="utf-8")
    os.replace(tmp, report)
    written.append(report)
    return written
