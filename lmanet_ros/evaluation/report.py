"""What an evaluation leaves behind: metrics.json, report.md, report.html, PNG plots and an
overlay video.

The offline evaluation (``lmanet eval``) and the live scorer (``lmanet score``, ``lmanet replay
--score-out``) build the same payload with :func:`build_metrics` and write it with
:func:`write_report`, so both produce the same files with the same meaning. ``report.html`` is
``report.md`` as a web page (:mod:`.report_html`), with the plots (:mod:`.plots`) and videos.

``metrics.json`` (schema ``lmanet-eval/1``): ``partial`` (true when the run was interrupted),
``source`` (bag, topics, frames), ``parameters`` (device, precision, memory rules), ``classes``,
``timing`` (wall seconds per activity), ``host`` (offline: :mod:`.host`: cores, PyTorch threads,
load averages at start and end) and ``models``: one entry per evaluated model, each with
``model``, ``checkpoint``, ``checkpoint_id``, ``memory_length`` (offline with
``memory_length_origin``) and the scores of :meth:`lmanet_ros.metrics.RunScore.summary`
(accuracy, temporal_consistency, latency_ms, throughput_fps, memory_resets); offline also
``output_delay_frames`` (1: a delayed model, scored on the frames its labels belong to). A bag
with a corruption log adds a top-level ``corruption`` section and per model ``corruption``,
``gain`` and ``memory_check`` (:mod:`.corruption`; rendered by :mod:`.corruption_report`).
Fractions are in [0, 1]; a value that does not exist (no labels; the IoU of a class neither in
the ground truth nor predicted) is ``null``.
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
from lmanet_ros.pipeline import RANDOM_WEIGHTS_ID

from .corruption_report import CORRUPTION_PLOT, plot_corruption_kinds, render_corruption
from .plots import FLIP_PLOT, IOU_PLOT, LATENCY_PLOT, plot_class_iou, plot_flip_rate, plot_latency
from .render import ABSENT, num, pct, table
from .report_html import HTML_FILE, markdown_to_html
from .video import COMPARISON_FILE, VIDEO_FILE

__all__ = ["SCHEMA", "METRICS_FILE", "REPORT_FILE", "build_metrics", "write_json",
           "render_markdown", "write_report"]

SCHEMA = "lmanet-eval/1"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


def build_metrics(runs: Sequence[RunScore], models: Sequence[dict], *, source: dict,
                  parameters: dict, partial: bool, timing: dict | None = None,
                  host: dict | None = None, mode: str = "offline") -> dict:
    """Assemble the ``metrics.json`` payload.

    Args:
        runs: the scores, one per model, in the order of ``models``.
        models: per model: ``label``, ``model``, ``checkpoint``, ``checkpoint_id`` and anything
            else worth keeping (model info).
        source: where the frames came from (bag, storage, topics, frame counts).
        parameters: the settings that shape the results (device, precision, memory policy).
        partial: True when the run stopped before its end (Ctrl-C).
        timing: wall seconds per activity (decode, model, metrics, output bag, video, total).
        host: the machine's load (:meth:`.host.HostLoad.section`), when known.
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
        "host": host or {},
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
#: What a latency means, by mode (the report's latency section).
_LATENCY_MEANS = {
    "offline": "The latency is the pipeline's compute time per frame in this process "
               "(preprocessing, network, postprocessing), without transport; a node's latency "
               "also includes DDS transport and queueing.",
    "live": "The latency runs from publishing a frame to receiving the node's labels of it: DDS "
            "transport and queueing both ways on top of the node's compute time (not measured "
            "when someone else plays the bag).",
}


def _label_topic(source: dict) -> str:
    topic = source.get("label_topic")
    if topic is None:
        return "none (no ground truth: accuracy not scored)"
    return f"`{topic}`" + (" (labelIds mapped to trainIds)" if source.get("label_ids") else "")


def _frames_line(source: dict) -> str:
    total = source.get("frames_in_bag")
    text = f"- Frames evaluated: {source.get('frames_evaluated')}"
    text += f" of {total}" if total is not None else ""
    return text + f" (stride {source.get('stride', 1)})"


def _memory_length(models: Sequence[dict]) -> str:
    """The memory length T in force of each model and where it comes from."""
    def one(model: dict) -> str:
        length = model.get("memory_length")
        if length is None:
            return "not reported"
        origin = model.get("memory_length_origin")
        return f"{length} ({origin})" if origin else str(length)

    if len(models) == 1:
        return f"memory length: {one(models[0])}"
    return "memory length: " + ", ".join(f"`{m['label']}` {one(m)}" for m in models)


def _parameter(key: str, value: Any) -> str:
    """One item of the parameters line (an input size of 0 x 0: each frame's own)."""
    if key == "input_size" and value is not None:
        return "input size: " + ("x".join(map(str, value)) if any(value) else "each frame's own")
    return f"{key} = {'not set' if value is None else value}"


def _parameters(params: dict, models: Sequence[dict]) -> str:
    """The parameters line; the memory length per model, never a bare None."""
    items = [_memory_length(models)] if models else []
    items += [_parameter(key, value) for key, value in params.items()
              if key not in ("memory_length", "memory_length_origin")]
    return "- Parameters: " + ", ".join(items)


def _header(payload: dict, scored: bool) -> list[str]:
    """Title, partial-run warning, what was evaluated and how, what the numbers mean."""
    source = payload["source"]
    lines = [f"# LMANet evaluation: {Path(str(source.get('bag', '?'))).name}", ""]
    if payload["partial"]:
        lines += [f"**Partial run**: interrupted after {source.get('frames_evaluated', '?')} "
                  f"evaluated frames; the numbers cover those frames only.", ""]
    lines += [
        f"- Mode: {payload.get('mode', 'offline')}",
        f"- Bag: `{source.get('bag')}` ({source.get('storage') or 'storage not reported'})",
        f"- Image topics: {', '.join(f'`{t}`' for t in source.get('image_topics', []))}",
        f"- Label topic: {_label_topic(source)}",
        _frames_line(source),
        _parameters(payload["parameters"], payload["models"]),
        "",
    ]
    if scored:
        lines += ["Accuracy over the 19 Cityscapes classes, void ignored; mIoU averages the "
                  "classes that occur in the ground truth or the prediction."]
    elif source.get("label_topic") is None:
        lines += ["**Accuracy not scored**: no label topic, so no ground truth; temporal "
                  "consistency and latency are measured."]
    else:
        lines += [f"**Accuracy not scored**: no evaluated frame had a label on "
                  f"`{source['label_topic']}`; temporal consistency and latency are measured."]
    lines += ["Flip rate: share of pixels whose label changes between consecutive frames of a "
              "camera" + (" (GT-stable: where the ground truth keeps the same class)"
                          if scored else "") + ". Percent unless stated.", ""]
    return lines


def _summary(payload: dict, scored: bool) -> list[str]:
    """The summary table, one row per model (accuracy columns only when scored)."""
    header = ["Model", "Checkpoint"]
    header += ["mIoU", "Pixel acc.", "Flip rate", "Flip rate (GT-stable)"] if scored else \
        ["Flip rate"]
    header += ["Latency p50 / p90 / p99 / max (ms)", "Throughput (fps)", "Memory resets"]
    rows = []
    for model in payload["models"]:
        acc = model["accuracy"] or {}
        tc = model["temporal_consistency"]
        lat = model["latency_ms"]
        row = [f"`{model['label']}`", f"`{model.get('checkpoint_id') or 'not reported'}`"]
        row += [pct(acc.get("miou")), pct(acc.get("pixel_accuracy")), pct(tc["flip_rate"], 2),
                pct(tc["flip_rate_gt_stable"], 2)] if scored else [pct(tc["flip_rate"], 2)]
        row += [" / ".join(num(lat.get(k)) for k in ("p50", "p90", "p99", "max")),
                num(model.get("throughput_fps"), 2), str(model["memory_resets"]["total"])]
        rows.append(row)
    lines = ["## Summary", ""] + table(header, rows)
    random = [model["label"] for model in payload["models"]
              if model.get("checkpoint_id") == RANDOM_WEIGHTS_ID]
    if random:
        lines += ["", f"**Random weights**: {', '.join(f'`{label}`' for label in random)} ran "
                  "without a checkpoint (`random-init`): the labels and scores are noise."]
    frames = payload["source"].get("frames_evaluated")
    for model in payload["models"]:
        delay = model.get("output_delay_frames")
        if delay:
            lines += ["", f"`{model['label']}` labels each frame {delay} frame(s) late: scored "
                      f"against the frame its labels belong to ({model['frames']} of {frames} "
                      f"frames labelled: the last frame before each reset and the bag's last "
                      f"get none); its latency is compute only, {delay} frame period(s) come "
                      f"on top."]
    return lines


def _loads(values: Sequence[float] | None) -> str:
    return "not known" if values is None else " / ".join(f"{v:.2f}" for v in values)


def _latency(payload: dict) -> list[str]:
    """What the latencies measure and the load of the host they were measured on."""
    lines = ["", "## Latency", "", _LATENCY_MEANS.get(payload.get("mode", "offline"), "")]
    host = payload.get("host") or {}
    if host:
        threads = host.get("torch_threads")
        used = f"PyTorch used {threads} CPU thread(s)" if threads else \
            "the network ran in another process"
        cores = host.get("cores_available")
        physical = host.get("physical_cores")
        lines += ["", f"Host: {cores} logical CPU(s)" + (
                  f" ({physical} physical core(s))" if physical and physical != cores else "")
                  + " available to this process, "
                  f"{used}; load average (1 / 5 / 15 min) {_loads(host.get('load_average_start'))}"
                  f" at the start, {_loads(host.get('load_average_end'))} at the end."]
    return lines


def _iou_cell(value: float | None) -> str:
    return ABSENT if value is None else pct(value)


def _per_class(payload: dict) -> list[str]:
    """The per-class IoU table (%), ``absent`` for a class neither in the GT nor predicted."""
    models = payload["models"]
    rows = [[name] + [_iou_cell((m["accuracy"] or {}).get("per_class_iou", {}).get(name))
                      for m in models] for name in payload["classes"]]
    return (["", "## Per-class IoU (%)", ""]
            + table(["Class"] + [f"`{m['label']}`" for m in models], rows)
            + ["", f"{ABSENT}: the class is neither in the ground truth nor predicted (no IoU, "
               "not averaged into mIoU); 0.0: present, never right."])


def _resets_and_timing(payload: dict) -> list[str]:
    lines = ["", "## Memory resets", ""]
    reset_rows = [[f"`{model['label']}`", reason, str(count)] for model in payload["models"]
                  for reason, count in sorted(model["memory_resets"]["by_reason"].items())]
    lines += table(["Model", "Reason", "Count"], reset_rows) if reset_rows else ["No reset."]
    timing = payload.get("timing") or {}
    if timing:
        lines += ["", "## Wall time (s)", ""]
        lines += table(["Activity", "Seconds"],
                       [[key, num(value, 2)] for key, value in timing.items()])
    return lines


def render_markdown(payload: dict, figures: Sequence[tuple[str, str]] = ()) -> str:
    """The ``report.md`` text of a ``metrics.json`` payload (percent in the tables); ``figures``:
    (title, file name) of the plots and videos beside it."""
    scored = any(model["accuracy"] for model in payload["models"])
    lines = _header(payload, scored) + _summary(payload, scored) + _latency(payload)
    lines += render_corruption(payload)
    if scored:
        lines += _per_class(payload)
    lines += _resets_and_timing(payload)
    if figures:
        lines += ["", "## Figures", ""]
        for title, name in figures:
            lines += [f"![{title}]({name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically (a temporary file renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_report(out_dir: str | Path, payload: dict, runs: Sequence[RunScore], *,
                 plots: bool = True) -> list[Path]:
    """Write metrics.json, the PNG plots, report.md and report.html (the same report as a web
    page, the videos playable in it) into ``out_dir``; return the paths."""
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
    figures += [(title, name) for title, name in (("Input | overlay", VIDEO_FILE),
                                                  ("Input | each model's overlay",
                                                   COMPARISON_FILE)) if (out / name).exists()]
    markdown = render_markdown(payload, figures)
    written.append(_write_text(out / REPORT_FILE, markdown))
    written.append(_write_text(out / HTML_FILE, markdown_to_html(markdown)))
    return written
