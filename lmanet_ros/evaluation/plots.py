"""The PNG plots of an evaluation: per-class IoU (``class_iou.png``), the latency histogram
(``latency_hist.png``) and the flip rate over time (``flip_rate.png``); each function returns
None (and writes nothing) when the run has nothing to show."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmanet_ros.metrics import RunScore

from .render import ABSENT, figure, pct

__all__ = ["FLIP_PLOT", "IOU_PLOT", "LATENCY_PLOT", "class_iou_figure", "plot_class_iou",
           "plot_flip_rate", "plot_latency"]

IOU_PLOT = "class_iou.png"
LATENCY_PLOT = "latency_hist.png"
FLIP_PLOT = "flip_rate.png"
#: Colour of the marker of a class absent from ground truth and prediction (matplotlib grey).
_ABSENT_COLOR = "0.55"


def class_iou_figure(payload: dict):
    """The per-class IoU figure of a metrics.json payload, or None without labels.

    One bar per class and model (IoU in percent); a class neither in the ground truth nor
    predicted (IoU null) gets no bar but a grey vertical ``absent`` mark, so it cannot be taken
    for a class scored 0 %; the legend says so.
    """
    models = [m for m in payload["models"] if m["accuracy"]]
    if not models:
        return None
    names = payload["classes"]
    made = figure(max(8.0, 0.55 * len(names) * max(1, len(models)) ** 0.5), 4.5)
    axes = made.add_subplot()
    width = 0.8 / len(models)
    absent_box = {"boxstyle": "round,pad=0.2", "facecolor": "0.93", "edgecolor": _ABSENT_COLOR}
    for index, model in enumerate(models):
        per_class = model["accuracy"]["per_class_iou"]
        x = np.arange(len(names)) + (index - (len(models) - 1) / 2) * width
        present = [k for k, name in enumerate(names) if per_class.get(name) is not None]
        axes.bar(x[present], [100.0 * per_class[names[k]] for k in present], width,
                 label=f"{model['label']} (mIoU {pct(model['accuracy']['miou'])} %)")
        for k, name in enumerate(names):
            if per_class.get(name) is None:
                axes.text(x[k], 2.0, ABSENT, rotation=90, ha="center", va="bottom",
                          fontsize=7, color=_ABSENT_COLOR, bbox=absent_box)
    from matplotlib.patches import Patch

    handles, _ = axes.get_legend_handles_labels()
    handles.append(Patch(facecolor="0.93", edgecolor=_ABSENT_COLOR,
                         label=f"{ABSENT}: not in the ground truth, not predicted (no IoU)"))
    axes.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("IoU (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Per-class IoU")
    axes.legend(handles=handles, fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    made.tight_layout()
    return made


def plot_class_iou(path: str | Path, payload: dict) -> Path | None:
    """Write :func:`class_iou_figure` to ``path`` (PNG); None without labels."""
    made = class_iou_figure(payload)
    if made is None:
        return None
    made.savefig(path)
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
