"""Image corruptions of synthetic sequences: the recipe ``standard`` (``CORRUPTION_RECIPE =
"standard-v1"``), its per-frame schedule (the corruption log) and how each kind is applied.

The recipe is applied to the IMAGE only; labels stay the clean truth. The first
``CLEAN_LEAD_IN`` (3) frames of a sequence are always clean, so a memory of past frames has
something to recall. From then on, independently per frame:

- ``occluder`` (``P_OCCLUDER`` = 0.05 per frame to start one when none is active): a lens-dirt
  patch (textured ellipse-ish polygon) or a dark blob passing across the view, covering
  ``OCCLUDER_AREA`` = 4-15 % of the image, lasting 1-3 frames (``OCCLUDER_FRAMES``).
- ``noise_burst`` (``P_NOISE_BURST`` = 0.05): additive Gaussian noise, sigma ``NOISE_SIGMA`` =
  18-40 grey levels.
- ``exposure_flicker`` (``P_EXPOSURE`` = 0.05): gain ``EXPOSURE_DARK`` = 0.35-0.6 or
  ``EXPOSURE_BRIGHT`` = 1.6-2.2 (half of the cases each), clipped to 0-255.
- ``motion_blur`` (``P_MOTION_BLUR`` = 0.05): linear blur of ``BLUR_LENGTH`` = 3-6 % of the image
  width, direction within 30 degrees of horizontal.
- ``lost_detail`` (``P_LOST_DETAIL`` = 0.05): half of the cases down-and-up sampling by a factor
  ``DOWNSAMPLE`` = 6-10, otherwise JPEG at quality ``JPEG_QUALITY`` = 4-10 (blockiness).

Several kinds may hit the same frame; they are applied in the order exposure, blur, lost detail,
noise, occluder. Every frame reports the kinds applied (``SynthFrame.corruptions``). Roughly a
quarter of the frames after the lead-in carry at least one corruption.

The schedule is drawn frame by frame from ``default_rng([seed, 4])`` (every variable for every
frame), so frame i's corruptions do not depend on the number of frames asked for.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from lmanet_ros.synthetic.scene import NOISE_PAD, POLY_SHIFT, ellipse, texels

__all__ = [
    "BLUR_LENGTH", "CLEAN_LEAD_IN", "CORRUPTIONS", "CORRUPTION_KINDS", "CORRUPTION_RECIPE",
    "DOWNSAMPLE", "EXPOSURE_BRIGHT", "EXPOSURE_DARK", "JPEG_QUALITY", "NOISE_SIGMA",
    "OCCLUDER_AREA", "OCCLUDER_FRAMES", "P_EXPOSURE", "P_LOST_DETAIL", "P_MOTION_BLUR",
    "P_NOISE_BURST", "P_OCCLUDER", "corrupt", "corruption_schedule",
]

CORRUPTIONS: tuple[str, ...] = ("none", "standard")
CORRUPTION_RECIPE = "standard-v1"
CORRUPTION_KINDS: tuple[str, ...] = (
    "occluder", "noise_burst", "exposure_flicker", "motion_blur", "lost_detail")
CLEAN_LEAD_IN = 3
P_OCCLUDER = 0.05
P_NOISE_BURST = 0.05
P_EXPOSURE = 0.05
P_MOTION_BLUR = 0.05
P_LOST_DETAIL = 0.05
OCCLUDER_AREA = (0.04, 0.15)
OCCLUDER_FRAMES = (1, 3)
NOISE_SIGMA = (18.0, 40.0)
EXPOSURE_DARK = (0.35, 0.6)
EXPOSURE_BRIGHT = (1.6, 2.2)
BLUR_LENGTH = (0.03, 0.06)
DOWNSAMPLE = (6, 10)
JPEG_QUALITY = (4, 10)


def corruption_schedule(seed: int, n_frames: int, height: int, width: int, corruption: str
                        ) -> list[list[tuple[str, dict]]]:
    """The corruption events of every frame of a (``height`` x ``width`` pixels) sequence:
    per frame a list of ``(kind, parameters)`` in the order they apply; all empty for
    ``corruption="none"``. Frame i's events do not depend on ``n_frames``."""
    events_of: list[list[tuple[str, dict]]] = [[] for _ in range(n_frames)]
    if corruption == "none":
        return events_of
    rng = np.random.default_rng([seed, 4])
    h, w = height, width
    occluder_until = -1
    for i in range(n_frames):
        # Draw every variable for every frame so frame i never depends on n_frames.
        draws = rng.random(5)
        occ = {
            "frames": int(rng.integers(OCCLUDER_FRAMES[0], OCCLUDER_FRAMES[1] + 1)),
            "area": float(rng.uniform(*OCCLUDER_AREA)),
            "aspect": float(rng.uniform(0.5, 2.0)),
            "cx": float(rng.uniform(0.1, 0.9)) * w, "cy": float(rng.uniform(0.1, 0.9)) * h,
            "vx": float(rng.uniform(-0.25, 0.25)) * w, "blob": bool(rng.random() < 0.5),
            "colour": rng.uniform(0.05, 0.6, 3).astype(np.float32).tolist(),
            "wobble": rng.uniform(0.75, 1.25, 16).tolist(),
        }
        sigma = float(rng.uniform(*NOISE_SIGMA))
        dark = bool(rng.random() < 0.5)
        gain = float(rng.uniform(*(EXPOSURE_DARK if dark else EXPOSURE_BRIGHT)))
        length = max(3, int(round(float(rng.uniform(*BLUR_LENGTH)) * w)))
        angle = float(rng.uniform(-30.0, 30.0))
        use_jpeg = bool(rng.random() < 0.5)
        factor = int(rng.integers(DOWNSAMPLE[0], DOWNSAMPLE[1] + 1))
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        if i < CLEAN_LEAD_IN:
            continue
        events = events_of[i]
        if draws[2] < P_EXPOSURE:
            events.append(("exposure_flicker", {"gain": gain}))
        if draws[3] < P_MOTION_BLUR:
            events.append(("motion_blur", {"length": length, "angle": angle}))
        if draws[4] < P_LOST_DETAIL:
            events.append(("lost_detail", {"jpeg": use_jpeg, "factor": factor,
                                           "quality": quality}))
        if draws[1] < P_NOISE_BURST:
            events.append(("noise_burst", {"sigma": sigma}))
        if i > occluder_until and draws[0] < P_OCCLUDER:
            n = min(occ["frames"], n_frames - i)
            occluder_until = i + n - 1
            for k in range(n):
                events_of[i + k].append(("occluder", dict(occ, step=k)))
    return events_of


def corrupt(image: np.ndarray, index: int, events: list[tuple[str, dict]], *, seed: int,
            noise_bank: np.ndarray, tile: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with ``events`` (frame ``index``'s schedule) applied, a
    new array. ``noise_bank`` is the sequence's (H + NOISE_PAD, W + NOISE_PAD, 3) float32
    unit noise, ``tile`` its flattened texture tile (lens-dirt occluders)."""
    out = image.copy()
    h, w = image.shape[:2]
    for kind, p in events:
        if kind == "exposure_flicker":
            out = cv2.convertScaleAbs(out, alpha=p["gain"], beta=0.0)
        elif kind == "motion_blur":
            n = p["length"]
            kernel = np.zeros((n, n), np.float32)
            c = (n - 1) / 2.0
            dx = math.cos(math.radians(p["angle"])) * c
            dy = math.sin(math.radians(p["angle"])) * c
            cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))),
                     (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
            kernel /= kernel.sum()
            out = cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_REFLECT)
        elif kind == "lost_detail":
            if p["jpeg"]:
                ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, p["quality"]])
                if ok:
                    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            else:
                small = cv2.resize(out, (max(1, w // p["factor"]), max(1, h // p["factor"])),
                                   interpolation=cv2.INTER_AREA)
                out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        elif kind == "noise_burst":
            rng = np.random.default_rng([seed, 5, index])
            oy, ox = (int(v) for v in rng.integers(0, NOISE_PAD, 2))
            noise = noise_bank[oy:oy + h, ox:ox + w][:, :, ::-1]
            out = np.clip(out + noise * np.float32(p["sigma"]), 0, 255).astype(np.uint8)
        elif kind == "occluder":
            _draw_occluder(out, p, tile)
    return out


def _draw_occluder(out: np.ndarray, p: dict, tile: np.ndarray) -> None:
    """Draw one step of an occluder (lens dirt or a dark blob) into ``out`` in place."""
    h, w = out.shape[:2]
    area = p["area"] * h * w
    ry = math.sqrt(area / (math.pi * p["aspect"]))
    rx = ry * p["aspect"]
    cx = p["cx"] + (p["vx"] * p["step"] if p["blob"] else 0.0)
    poly = ellipse(cx, p["cy"], rx, ry, 16) - np.array([cx, p["cy"]])
    poly = poly * np.asarray(p["wobble"])[:, None] + np.array([cx, p["cy"]])
    pts = [np.round(poly * (1 << POLY_SHIFT)).astype(np.int32)]
    colour = np.asarray(p["colour"], np.float32) * (0.3 if p["blob"] else 1.0)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, pts, 1, cv2.LINE_8, POLY_SHIFT)
    sel = mask.astype(bool)
    if not p["blob"]:   # lens dirt: textured, slightly translucent
        ys, xs = np.nonzero(sel)
        tex = 1.0 + 0.25 * texels(tile, ys * 0.5, xs * 0.5)
        fill = 255.0 * colour[None, :] * tex[:, None]
        out[sel] = np.clip(0.15 * out[sel] + 0.85 * fill, 0, 255).astype(np.uint8)
    else:
        out[sel] = np.clip(255.0 * colour, 0, 255).astype(np.uint8)
