"""The corruption part of ``report.md`` and its plot ``corruption_kinds.png``, from the payload's
``corruption`` entries (:mod:`.corruption` explains what they mean)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .render import figure, num, pct, table

__all__ = ["CORRUPTION_PLOT", "corruption_rows", "plot_corruption_kinds", "render_corruption"]

CORRUPTION_PLOT = "corruption_kinds.png"


def _scored(payload: dict) -> bool:
    """True when the run has corruption scores (a log and labels)."""
    return bool(payload.get("corruption")) and any(
        (m.get("corruption") or {}).get("frames", {}).get("bag") for m in payload["models"])


def corruption_rows(payload: dict) -> list[tuple[str, dict]]:
    """(row name, scores ``{bag, hit, clean, kinds}``) of every model, memory check and
    reference, in report order: each model followed by its memory check, then the references."""
    section = payload["corruption"]
    baseline = section["baseline"]
    rows = []
    for model in payload["models"]:
        rows.append((f"`{model['label']}`", model["corruption"]))
        if model.get("memory_check"):
            rows.append((f"`{model['label']}` memory check (memory = current frame)",
                         model["memory_check"]))
    references = section["references"]
    if references.get("clean_version"):
        rows.append((f"`{baseline}` on the clean versions (reference)",
                     references["clean_version"]))
    rows.append((f"last clean frame of `{baseline}` (oracle)", references["last_clean_oracle"]))
    return rows


def _signed(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100.0 * value:+.{digits}f}"


def _counts(section: dict) -> list[str]:
    frames = section["frames"]
    total = frames["frames"]
    share = f" ({pct(frames['hit'] / total)} %)" if total else ""
    kinds = ", ".join(f"{kind} {count}" for kind, count in frames["kinds"].items()) or "none"
    topics = section["topics"]
    line = (f"Frames of `{topics['camera']}` in the corruption log `{topics['corruption']}`: "
            f"{total}; hit {frames['hit']}{share}, clean {frames['clean']}; hit frames per kind: "
            f"{kinds}.")
    notes = [f"{frames[key]} {what}" for key, what in (
        ("unlogged", "frames not in the log (not grouped)"),
        ("no_oracle", "hit frames without an earlier clean frame (no oracle)"),
        ("no_clean_version", "hit frames without a clean version")) if frames.get(key)]
    if notes:
        line += " " + "; ".join(notes).capitalize() + "."
    clean = (f"Clean versions: `{topics['clean']}`." if topics.get("clean") else
             "No clean versions in the bag: no clean-version reference.")
    return [line, "", clean]


def _gain_row(model: dict) -> list[str]:
    """A model's row of the gain table: gains in points, the memory check's share removed."""
    gain, check = model["gain"], model.get("memory_check") or {}
    return [f"`{model['label']}`", *(_signed(gain[g]) for g in ("bag", "hit", "clean")),
            _signed(gain["flip_rate"], 2),
            "–" if check.get("gain_removed") is None else f"{pct(check['gain_removed'], 0)} %",
            {True: "yes", False: "no", None: "–"}[check.get("credited")]]


def _verdict(label: str, model: dict) -> str:
    check = model.get("memory_check")
    gain = model["gain"]["hit"]
    if check is None:
        return f"- `{label}`: no memory check (a single-frame model, or the check is off)."
    if check["gain_removed"] is None:
        return (f"- `{label}`: no hit-frame gain over the baseline ({_signed(gain)} mIoU): "
                "nothing to credit to the memory.")
    share = f"{100.0 * check['gain_removed']:.0f} %"
    if check["credited"] is None:
        return (f"- `{label}`: the hit-frame gain ({_signed(gain)} mIoU) is too small to say "
                f"whether it comes from the memory (the memory check removes {share} of it).")
    if check["credited"]:
        return (f"- `{label}`: the memory check removes {share} of the hit-frame gain "
                f"({_signed(gain)} mIoU): the gain comes from the past frames, **credited to the "
                "memory**.")
    return (f"- `{label}`: the memory check removes only {share} of the hit-frame gain "
            f"({_signed(gain)} mIoU): most of it stays without the past frames, **not credited "
            "to the memory**.")


def render_corruption(payload: dict) -> list[str]:
    """The ``report.md`` lines of the corruption section (none without a corruption log)."""
    section = payload.get("corruption")
    if not section:
        return []
    recipe = section.get("recipe") or "unnamed recipe"
    lines = ["", f"## Accuracy under corruption ({recipe})", ""] + _counts(section)
    if not _scored(payload):
        return lines + ["", "No labelled frame in the log: accuracy by corruption not measured."]
    baseline = section["baseline"]
    kinds = list(section["frames"]["kinds"])
    rows = corruption_rows(payload)
    first = rows[0][1]["frames"]
    lines += [
        "", "mIoU (%) over the bag, on hit frames (corruption log not empty), on clean frames and "
        "on the hit frames of each kind. References, from the single-frame baseline "
        f"`{baseline}`: the clean version of each hit frame, and the last clean frame (its "
        "prediction of the most recent unhit frame, scored against the current labels); on "
        "clean frames both are the baseline's own prediction. Memory check: the same network "
        "with its memory replaced by the current frame.", ""]
    header = ["Row", "bag", "hit", "clean", *kinds]
    body = [["frames", *(str(first[g]) for g in ("bag", "hit", "clean")),
             *(str(first["kinds"].get(k, 0)) for k in kinds)]]
    body += [[name, *(pct(scores[g]) for g in ("bag", "hit", "clean")),
              *(pct(scores["kinds"].get(k)) for k in kinds)] for name, scores in rows]
    lines += table(header, body)
    base = next(m for m in payload["models"] if m["label"] == baseline)["corruption"]
    clean = (section["references"].get("clean_version") or {}).get("hit")
    oracle = section["references"]["last_clean_oracle"]["hit"]
    if clean is not None and base["hit"] is not None:
        loss = clean - base["hit"]
        recovered = (f"; the last-clean-frame oracle recovers "
                     f"{100.0 * (oracle - base['hit']) / loss:.0f} % of it"
                     if oracle is not None and loss > 0 else "")
        lines += ["", f"On hit frames `{baseline}` loses {num(100.0 * loss)} mIoU against the "
                  f"clean versions{recovered}."]
    gains = [m for m in payload["models"] if m.get("gain") and m["info"].get("temporal")]
    if gains:
        lines += ["", f"### Gain over the single-frame baseline `{baseline}`", "",
                  "mIoU points and flip-rate percentage points (negative flip rate: steadier); "
                  "memory check: share of the hit-frame gain that disappears with the memory "
                  f"replaced by the current frame (credited to the memory from "
                  f"{100.0 * section['memory_credit']:.0f} %; no verdict for a hit-frame gain "
                  f"under {num(100.0 * section['min_credited_gain'])} mIoU).", ""]
        lines += table(["Model", "bag", "hit", "clean", "flip rate", "memory check removes",
                        "credited to the memory"], [_gain_row(m) for m in gains])
        lines += [""] + [_verdict(m["label"], m) for m in gains]
    return lines


def plot_corruption_kinds(path: str | Path, payload: dict) -> Path | None:
    """Grouped bars of mIoU (%) per kind, on all hit frames and on clean frames, one bar per
    model, memory check and reference; None without corruption scores."""
    if not _scored(payload):
        return None
    kinds = list(payload["corruption"]["frames"]["kinds"])
    groups = [*kinds, "all hit", "clean"]
    rows = corruption_rows(payload)
    fig = figure(max(7.0, 1.1 * len(groups) * max(1.0, len(rows) / 3)), 4.5)
    axes = fig.add_subplot()
    width = 0.8 / len(rows)
    x = np.arange(len(groups))
    for index, (name, scores) in enumerate(rows):
        values = [scores["kinds"].get(k) for k in kinds] + [scores["hit"], scores["clean"]]
        axes.bar(x + (index - (len(rows) - 1) / 2) * width,
                 [np.nan if v is None else 100.0 * v for v in values], width,
                 label=name.replace("`", ""))
    axes.set_xticks(x, groups, rotation=20, ha="right", fontsize=9)
    axes.set_ylabel("mIoU (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"mIoU by corruption kind ({payload['corruption'].get('recipe') or '?'})")
    axes.legend(fontsize=7)
    axes.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
