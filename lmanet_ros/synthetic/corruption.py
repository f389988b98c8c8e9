"""Image corruptions of synthetic sequences: the recipes ``standard`` (``CORRUPTION_RECIPE =
"standard-v1"``) and ``robot-v2`` (``ROBOT_RECIPE``), their per-frame schedules (the corruption
log) and how each kind is applied. :func:`recipe_name` maps a ``corruption`` choice to its recipe.

Recipes are applied to the IMAGE only; labels stay the clean truth.

standard-v1
-----------

The first
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

robot-v2
--------

Camera failures that a memory of earlier frames can bridge (pre-registered in
``docs/robot-v2-preregistration.md``; any change to it is a new recipe name). ONE event at a time;
the first ``ROBOT_LEAD_IN`` (4) frames are clean and at least ``ROBOT_MIN_GAP`` (2) clean frames
separate two events. Every later frame that may start an event starts one with probability
``P_ROBOT_EVENT`` = 0.18, which puts the expected share of hit frames at 25 % for 60-frame
sequences (26-27 % for long ones). Widths are fractions of the image width W, grey levels are
0-255:

===============  ==========================  =======================================================
kind             frames                      what the camera delivers
===============  ==========================  =======================================================
``wiper``        ``WIPER_FRAMES`` 2-4        a dark opaque band (level ``WIPER_LEVEL`` = 0.02-0.10
                                             of white, lightly textured) over the full height,
                                             covering ``WIPER_COVER`` = 30-60 % of the image, moving
                                             by ``WIPER_SWEEP`` = 10-25 % of W per frame, left or
                                             right
``dropout``      ``DROPOUT_FRAMES`` 1-2      a black frame
``heavy_noise``  ``HEAVY_NOISE_FRAMES`` 1-4  additive Gaussian noise of sigma ``HEAVY_NOISE_SIGMA``
                                             = 100-160 grey levels (a new pattern every frame)
``glare``        ``GLARE_FRAMES`` 1-4        gain ``GLARE_GAIN`` = 2.5-4 plus a bright Gaussian
                                             bloom (peak ``GLARE_BLOOM`` = 0.6-1.0 of white, radius
                                             ``GLARE_RADIUS`` = 20-45 % of W, centred in the upper
                                             40 %)
``night_blur``   ``NIGHT_FRAMES`` 1-4        linear motion blur of ``NIGHT_BLUR`` = 8-15 % of W
                                             (within 30 degrees of horizontal), gain ``NIGHT_GAIN``
                                             = 0.20-0.35, then noise of sigma ``NIGHT_SIGMA`` = 8-16
===============  ==========================  =======================================================

The kinds take turns: event j of the sequence with seed s is ``ROBOT_KINDS[(s + j) % 5]``, i.e. a
bag of the five emptied in a fixed order and refilled when empty, entered at position ``s % 5``.
By construction the counts of any two kinds in one sequence differ by at most one, and the last,
partly used bags of consecutive seeds hold different kinds, so over a bag of several sequences
every kind is close to 20 % of the events (a bag shuffled per sequence would leave that to luck:
about 8 % of 8 x 60-frame bags of consecutive seeds would put a kind outside 15-25 %, against
1.3 % with the rotation). The hit share of a bag is random (2.5 % of those bags fall outside
20-30 %).

The schedule is drawn frame by frame from ``default_rng([seed, 8])``: every frame draws the start
variable and the duration and parameters of every kind, used or not, so frame i's events do not
depend on the number of frames asked for (an event running past the end is cut); the noise
patterns of frame i come from ``default_rng([seed, 9, i])``. Frames are independent of the order
they are rendered in.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from lmanet_ros.synthetic.scene import NOISE_PAD, POLY_SHIFT, ellipse, texels

__all__ = [
    "BLUR_LENGTH", "CLEAN_LEAD_IN", "CORRUPTIONS", "CORRUPTION_KINDS", "CORRUPTION_RECIPE",
    "DOWNSAMPLE", "DROPOUT_FRAMES", "EXPOSURE_BRIGHT", "EXPOSURE_DARK", "GLARE_BLOOM",
    "GLARE_FRAMES", "GLARE_GAIN", "GLARE_RADIUS", "HEAVY_NOISE_FRAMES", "HEAVY_NOISE_SIGMA",
    "JPEG_QUALITY", "NIGHT_BLUR", "NIGHT_FRAMES", "NIGHT_GAIN", "NIGHT_SIGMA", "NOISE_SIGMA",
    "OCCLUDER_AREA", "OCCLUDER_FRAMES", "P_EXPOSURE", "P_LOST_DETAIL", "P_MOTION_BLUR",
    "P_NOISE_BURST", "P_OCCLUDER", "P_ROBOT_EVENT", "ROBOT_FRAMES", "ROBOT_KINDS",
    "ROBOT_LEAD_IN", "ROBOT_MIN_GAP", "ROBOT_RECIPE", "WIPER_COVER", "WIPER_FRAMES",
    "WIPER_LEVEL", "WIPER_SWEEP", "corrupt", "corruption_schedule", "recipe_name",
    "wiper_columns",
]

#: The ``corruption`` choices of a sequence (and of ``lmanet synth --corruption``), in order.
CORRUPTIONS: tuple[str, ...] = ("none", "standard", "robot-v2")
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

# --- robot-v2 (see the module docstring's table) ------------------------------------------------
ROBOT_RECIPE: str = "robot-v2"
ROBOT_KINDS: tuple[str, ...] = ("wiper", "dropout", "heavy_noise", "glare", "night_blur")
ROBOT_LEAD_IN: int = 4
ROBOT_MIN_GAP: int = 2
P_ROBOT_EVENT: float = 0.18
WIPER_FRAMES: tuple[int, int] = (2, 4)
DROPOUT_FRAMES: tuple[int, int] = (1, 2)
HEAVY_NOISE_FRAMES: tuple[int, int] = (1, 4)
GLARE_FRAMES: tuple[int, int] = (1, 4)
NIGHT_FRAMES: tuple[int, int] = (1, 4)
#: Frames (inclusive range) an event of each kind lasts.
ROBOT_FRAMES: dict[str, tuple[int, int]] = {
    "wiper": WIPER_FRAMES, "dropout": DROPOUT_FRAMES, "heavy_noise": HEAVY_NOISE_FRAMES,
    "glare": GLARE_FRAMES, "night_blur": NIGHT_FRAMES}
WIPER_COVER: tuple[float, float] = (0.30, 0.60)
WIPER_SWEEP: tuple[float, float] = (0.10, 0.25)
WIPER_LEVEL: tuple[float, float] = (0.02, 0.10)
HEAVY_NOISE_SIGMA: tuple[float, float] = (100.0, 160.0)
GLARE_GAIN: tuple[float, float] = (2.5, 4.0)
GLARE_BLOOM: tuple[float, float] = (0.6, 1.0)
GLARE_RADIUS: tuple[float, float] = (0.20, 0.45)
NIGHT_BLUR: tuple[float, float] = (0.08, 0.15)
NIGHT_GAIN: tuple[float, float] = (0.20, 0.35)
NIGHT_SIGMA: tuple[float, float] = (8.0, 16.0)

_RECIPES = {"standard": CORRUPTION_RECIPE, "robot-v2": ROBOT_RECIPE}


def recipe_name(corruption: str) -> str | None:
    """The versioned recipe name of a ``corruption`` choice (``"standard"`` ->
    ``"standard-v1"``, ``"robot-v2"`` -> ``"robot-v2"``); None for ``"none"``."""
    return _RECIPES.get(corruption)


def corruption_schedule(seed: int, n_frames: int, height: int, width: int, corruption: str
                        ) -> list[list[tuple[str, dict]]]:
    """The corruption events of every frame of a (``height`` x ``width`` pixels) sequence:
    per frame a list of ``(kind, parameters)`` in the order they apply (at most one for
    ``robot-v2``; its parameters carry ``frames``, the event's drawn length, and ``step``, this
    frame's 0-based position in it); all empty for ``corruption="none"``. Frame i's events do not
    depend on ``n_frames``."""
    events_of: list[list[tuple[str, dict]]] = [[] for _ in range(n_frames)]
    if corruption == "none":
        return events_of
    if corruption == "robot-v2":
        _robot_schedule(events_of, seed, height, width)
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


def _robot_draws(rng: np.random.Generator, height: int, width: int) -> dict[str, dict]:
    """One frame's draws of robot-v2: the parameters (``frames`` included) an event of every
    kind would have if it started at this frame. Always the same number of draws. Units: wiper
    ``cover``/``sweep``/``start`` are fractions of the width, glare ``cx``/``cy``/``radius`` and
    the night blur ``length`` are pixels, sigmas grey levels."""
    frames = {kind: int(rng.integers(lo, hi + 1)) for kind, (lo, hi) in ROBOT_FRAMES.items()}
    cover = float(rng.uniform(*WIPER_COVER))
    sweep = float(rng.uniform(*WIPER_SWEEP))
    # Keep the band inside the image for the whole event: with these ranges the slowest
    # sweep this allows is (1 - 0.6) / 3 = 13 % of W, still inside WIPER_SWEEP.
    sweep = min(sweep, (1.0 - cover) / max(frames["wiper"] - 1, 1))
    start = float(rng.random()) * (1.0 - cover - sweep * (frames["wiper"] - 1))
    wiper = {"cover": cover, "sweep": sweep, "start": start,
             "rightward": bool(rng.random() < 0.5), "level": float(rng.uniform(*WIPER_LEVEL))}
    sigma = float(rng.uniform(*HEAVY_NOISE_SIGMA))
    glare = {"gain": float(rng.uniform(*GLARE_GAIN)), "bloom": float(rng.uniform(*GLARE_BLOOM)),
             "radius": float(rng.uniform(*GLARE_RADIUS)) * width,
             "cx": float(rng.uniform(0.1, 0.9)) * width,
             "cy": float(rng.uniform(0.0, 0.4)) * height}
    night = {"length": max(3, int(round(float(rng.uniform(*NIGHT_BLUR)) * width))),
             "angle": float(rng.uniform(-30.0, 30.0)), "gain": float(rng.uniform(*NIGHT_GAIN)),
             "sigma": float(rng.uniform(*NIGHT_SIGMA))}
    params = {"wiper": wiper, "dropout": {}, "heavy_noise": {"sigma": sigma}, "glare": glare,
              "night_blur": night}
    return {kind: dict(params[kind], frames=frames[kind]) for kind in ROBOT_KINDS}


def _robot_schedule(events_of: list[list[tuple[str, dict]]], seed: int, height: int,
                    width: int) -> None:
    """Fill ``events_of`` (one empty list per frame) with robot-v2's events, in place."""
    n_frames = len(events_of)
    rng = np.random.default_rng([seed, 8])
    free_from = ROBOT_LEAD_IN     # first frame that may start an event
    started = 0
    for i in range(n_frames):
        # Draw every variable for every frame so frame i never depends on n_frames.
        starts = bool(rng.random() < P_ROBOT_EVENT)
        draws = _robot_draws(rng, height, width)
        if i < free_from or not starts:
            continue
        kind = ROBOT_KINDS[(seed + started) % len(ROBOT_KINDS)]
        started += 1
        params = draws[kind]
        free_from = i + params["frames"] + ROBOT_MIN_GAP
        for k in range(min(params["frames"], n_frames - i)):
            events_of[i + k].append((kind, dict(params, step=k)))


def corrupt(image: np.ndarray, index: int, events: list[tuple[str, dict]], *, seed: int,
            noise_bank: np.ndarray, tile: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with ``events`` (frame ``index``'s schedule) applied, a
    new array. ``noise_bank`` is the sequence's (H + NOISE_PAD, W + NOISE_PAD, 3) float32
    unit noise, ``tile`` its flattened texture tile (lens-dirt occluders, the wiper band)."""
    out = image.copy()
    h, w = image.shape[:2]
    for kind, p in events:
        if kind == "exposure_flicker":
            out = cv2.convertScaleAbs(out, alpha=p["gain"], beta=0.0)
        elif kind == "motion_blur":
            out = _motion_blur(out, p["length"], p["angle"])
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
            noise = _noise(noise_bank, h, w, [seed, 5, index])
            out = np.clip(out + noise * np.float32(p["sigma"]), 0, 255).astype(np.uint8)
        elif kind == "occluder":
            _draw_occluder(out, p, tile)
        elif kind == "wiper":
            _draw_wiper(out, p, tile)
        elif kind == "dropout":
            out[:] = 0
        elif kind == "heavy_noise":
            noise = _noise(noise_bank, h, w, [seed, 9, index])
            out = np.clip(out + noise * np.float32(p["sigma"]), 0, 255).astype(np.uint8)
        elif kind == "glare":
            yy, xx = np.ogrid[:h, :w]
            r2 = ((yy - p["cy"]) ** 2 + (xx - p["cx"]) ** 2).astype(np.float32)
            bloom = np.exp(r2 / np.float32(-2.0 * p["radius"] ** 2)) * np.float32(255 * p["bloom"])
            out = np.clip(out * np.float32(p["gain"]) + bloom[:, :, None], 0, 255).astype(np.uint8)
        elif kind == "night_blur":
            noise = _noise(noise_bank, h, w, [seed, 9, index])
            blurred = _motion_blur(out, p["length"], p["angle"])
            out = np.clip(blurred * np.float32(p["gain"]) + noise * np.float32(p["sigma"]),
                          0, 255).astype(np.uint8)
    return out


def _noise(noise_bank: np.ndarray, height: int, width: int, key: list[int]) -> np.ndarray:
    """A (height, width, 3) float32 unit-noise view of ``noise_bank`` at an offset drawn from
    ``default_rng(key)``, channels reversed (so it does not repeat the sensor noise)."""
    rng = np.random.default_rng(key)
    oy, ox = (int(v) for v in rng.integers(0, NOISE_PAD, 2))
    return noise_bank[oy:oy + height, ox:ox + width][:, :, ::-1]


def _motion_blur(image: np.ndarray, length: int, angle: float) -> np.ndarray:
    """``image`` (H, W, 3) uint8 blurred along a line of ``length`` pixels at ``angle`` degrees
    from horizontal (a new array)."""
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2.0
    dx = math.cos(math.radians(angle)) * c
    dy = math.sin(math.radians(angle)) * c
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))),
             (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def wiper_columns(p: dict, width: int) -> tuple[int, int]:
    """Columns ``[x0, x1)`` of an image ``width`` pixels wide that step ``p["step"]`` of the
    wiper event ``p`` covers."""
    left = p["start"] + p["sweep"] * p["step"]
    if not p["rightward"]:
        left = 1.0 - p["cover"] - left
    x0 = int(round(left * width))
    return x0, min(width, x0 + int(round(p["cover"] * width)))


def _draw_wiper(out: np.ndarray, p: dict, tile: np.ndarray) -> None:
    """Draw one step of a wiper (a dark, lightly textured, opaque band) into ``out`` in place."""
    h, w = out.shape[:2]
    x0, x1 = wiper_columns(p, w)
    ys, xs = np.mgrid[:h, x0:x1]
    tex = 1.0 + 0.25 * texels(tile, ys.ravel() * 0.5, xs.ravel() * 0.5)
    band = np.float32(255.0 * p["level"]) * tex.reshape(h, x1 - x0)
    out[:, x0:x1] = np.clip(band, 0, 255).astype(np.uint8)[:, :, None]


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
