"""Procedural street-scene video with exact Cityscapes trainId labels (no ROS).

A camera drives down a straight street at constant speed with a slight yaw and pitch wobble. The
background (road with lane markings converging to the vanishing point, sidewalks, grass strips,
building and hedge facades, side streets, sky) is ray-cast per pixel in world coordinates, so its
textures move with the world as the camera advances; poles, traffic signs and lights, trees, parked
and moving cars, walking and crossing persons are drawn as upright billboards, far to near, with
the same polygons into the image, the label map and the instance map. Labels are therefore exact:
every label pixel is the class of the surface that coloured the image pixel. The ego vehicle's
hood, where a sequence has one, is void (255).

Labels are Cityscapes trainIds (road 0, sidewalk 1, building 2, pole 5, traffic light 6, traffic
sign 7, vegetation 8, terrain 9, sky 10, person 11, car 13; 255 void). Lane markings are road, tree
trunks are vegetation, car windows and wheels are car, as in Cityscapes.

Determinism: a sequence is fully defined by (seed, height, width, rate, corruption). The world is
built in 60 m chunks, each from its own random stream, and the corruption schedule is drawn frame by
frame, so frame i is the same whatever the number of frames asked for. When a tool makes several
sequences, sequence k has seed ``base_seed + k``.

Timing: frame i shows the world at ``i / rate`` seconds (``DEFAULT_RATE_HZ`` = 17).
:func:`frame_stamps` gives camera-like capture stamps: the nominal period plus a Gaussian jitter
of ``STAMP_JITTER_S`` = 1 ms (clipped to 3 sigma), starting at ``START_TIME_NS``; tools that put
several sequences in one bag leave ``SEQUENCE_GAP_S`` = 5 s between them.

Seeds, fixed before any model is trained on these data:

- ``TRAIN_SEEDS = range(0, 1000)``: for training.
- ``HELDOUT_SEEDS = range(10000, 10016)``: held out for evaluation; never train on them.

Corruption recipe ``standard`` (``CORRUPTION_RECIPE = "standard-v1"``), applied to the IMAGE only;
labels stay the clean truth. The first ``CLEAN_LEAD_IN`` (3) frames of a sequence are always
clean, so a memory of past frames has something to recall. From then on, independently per frame:

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
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import cv2
import numpy as np

from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES, IGNORE_INDEX


# --- Cityscapes trainIds used by the generator -------------------------------------------------
def _train_id(name: str) -> int:
    return CITYSCAPES_CLASS_NAMES.index(name)


ROAD = _train_id("road")
SIDEWALK = _train_id("sidewalk")
BUILDING = _train_id("building")
POLE = _train_id("pole")
TRAFFIC_LIGHT = _train_id("traffic light")
TRAFFIC_SIGN = _train_id("traffic sign")
VEGETATION = _train_id("vegetation")
TERRAIN = _train_id("terrain")
SKY = _train_id("sky")
PERSON = _train_id("person")
CAR = _train_id("car")
VOID = IGNORE_INDEX

#: Classes every generated sequence of reasonable length shows.
REQUIRED_CLASSES: tuple[int, ...] = (
    ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN, VEGETATION, SKY, PERSON, CAR)

# --- Seeds and the corruption recipe (see the module docstring) --------------------------------
TRAIN_SEEDS = range(0, 1000)
HELDOUT_SEEDS = range(10000, 10016)

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

# --- Timing -------------------------------------------------------------------------------------
DEFAULT_RATE_HZ = 17.0
#: Header stamp of the first frame of the first sequence (fixed, so bags are reproducible).
START_TIME_NS = 1_700_000_000 * 10**9
#: Gap between the end of one sequence and the start of the next one in a bag.
SEQUENCE_GAP_S = 5.0
#: Capture-time jitter (standard deviation, clipped at 3 sigma).
STAMP_JITTER_S = 0.001

# --- Scene constants ----------------------------------------------------------------------------
_CHUNK_M = 60.0        # world built in chunks of this length along the street
_CAM_HEIGHT = 1.4      # camera height above the road (m)
_NEAR = 1.5            # billboards closer than this (camera depth, m) are not drawn
_FAR = 120.0           # ... nor farther than this
_MIN_OBJECT_PX = 2.0   # ... nor when smaller than this many pixels tall
_DETAIL_PX = 24.0      # objects smaller than this are drawn without their inner details
_TILE_BITS = 9         # the texture tile is 512 x 512 texels, indexed modulo its size
_NOISE_PAD = 41        # the sensor-noise bank is this much larger than the image on each axis
_SHIFT = 4             # fixed-point bits for cv2 polygon vertices
_BLOCK_BUILDING, _BLOCK_HEDGE, _BLOCK_STREET = 0, 1, 2
# Palette entries of the background: fixed surfaces, then one per sky row, then one per block.
_P_ROAD, _P_SIDEWALK, _P_TERRAIN, _P_MARKING, _P_WINDOW, _P_SKY = 0, 1, 2, 3, 4, 16


@dataclasses.dataclass(frozen=True)
class SynthFrame:
    """One generated frame.

    ``image`` is what the camera delivers (corrupted when the recipe says so), ``clean_image`` the
    same frame without corruption; both (H, W, 3) uint8 RGB. ``labels`` is (H, W) uint8 trainIds
    (255 void). ``instances`` is (H, W) int32: 0 for background ("stuff") pixels, otherwise the id
    of the object part that was drawn there; ``instance_classes`` maps each id drawn in the frame
    to its trainId (an id drawn but hidden by nearer objects is listed too). ``corruptions``
    lists the corruption kinds applied to ``image``.
    """

    index: int
    time_s: float
    image: np.ndarray
    clean_image: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    instance_classes: dict[int, int]
    corruptions: tuple[str, ...]


@dataclasses.dataclass
class _Part:
    """A flat polygon of an object, in object-local metres (lateral offset, height)."""

    polygon: np.ndarray     # (N, 2) float64
    colour: np.ndarray      # (3,) float32 in [0, 1]
    train_id: int
    instance_id: int
    detail: bool = False    # lies inside other parts; skipped when the object is small


@dataclasses.dataclass
class _Object:
    """A billboard with a simple parametric trajectory."""

    kind: str
    parts: list[_Part]
    x0: float
    vx: float = 0.0
    t0: float = 0.0
    x_range: tuple[float, float] = (-1e9, 1e9)
    z0: float = 0.0
    vz: float = 0.0
    z_amp: float = 0.0
    z_freq: float = 0.0
    t_range: tuple[float, float] = (-1e9, 1e9)
    phase: float = 0.0
    leg: float = 0.0
    unique_ids: list[int] = dataclasses.field(default_factory=list)  # set by _pack_objects


def _check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> np.ndarray:
    theta = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(theta), cy + ry * np.sin(theta)], axis=1)


def _blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float,
          n: int = 24) -> np.ndarray:
    """An ellipse with a randomly wobbling radius (tree crowns)."""
    theta = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    radius = 1.0 + sum(rng.uniform(0.03, 0.1) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
                       for k in (3, 5, 7))
    return np.stack([cx + rx * radius * np.cos(theta), cy + ry * radius * np.sin(theta)], axis=1)


def _rect(a0: float, a1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[a0, y0], [a1, y0], [a1, y1], [a0, y1]], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _base_tiles() -> tuple[np.ndarray, np.ndarray]:
    """Two 512 x 512 noise tiles of zero mean and unit variance, made once per process from a
    fixed seed: a multi-octave texture and smooth clouds. Sequences use rolled copies."""
    rng = np.random.default_rng(20240604)
    size = 1 << _TILE_BITS

    def smooth(sigma: float) -> np.ndarray:
        layer = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0),
                                 sigma, borderType=cv2.BORDER_REFLECT)
        return layer / max(float(layer.std()), 1e-6)

    texture = 0.5 * smooth(0.7) + 0.8 * smooth(3.0) + smooth(14.0)
    clouds = smooth(24.0)
    tiles = []
    for tile in (texture, clouds):
        tile = tile - tile.mean()
        tiles.append((tile / max(float(tile.std()), 1e-6)).astype(np.float32))
    return tiles[0], tiles[1]


def _texture_tiles(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """This sequence's flattened texture and cloud tiles: the shared tiles, randomly rolled."""
    shifts = rng.integers(0, 1 << _TILE_BITS, 4)
    texture, clouds = _base_tiles()
    return (np.roll(texture, (int(shifts[0]), int(shifts[1])), (0, 1)).ravel(),
            np.roll(clouds, (int(shifts[2]), int(shifts[3])), (0, 1)).ravel())


def _lookup(tile: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Texels of the flattened tile at integer parts of (a, b), wrapped (a new float32 array)."""
    mask = (1 << _TILE_BITS) - 1
    index = ((a.astype(np.intp) & mask) << _TILE_BITS) | (b.astype(np.intp) & mask)
    return np.take(tile, index)


def _frac(x: np.ndarray) -> np.ndarray:
    """Fractional part, in [0, 1) also for negative values."""
    return x - np.floor(x)


_CAR_PALETTE = np.array([
    [0.92, 0.92, 0.90], [0.08, 0.08, 0.09], [0.62, 0.63, 0.65], [0.38, 0.39, 0.41],
    [0.62, 0.08, 0.07], [0.10, 0.20, 0.52], [0.12, 0.30, 0.16], [0.70, 0.62, 0.45],
    [0.85, 0.60, 0.10], [0.30, 0.12, 0.30]], dtype=np.float32)
_SKIN = np.array([[0.95, 0.78, 0.65], [0.80, 0.60, 0.45], [0.55, 0.38, 0.25],
                  [0.35, 0.22, 0.15]], dtype=np.float32)


class SynthSequence:
    """A deterministic procedural street video.

    ``SynthSequence(seed, height=..., width=..., n_frames=...)`` builds the world; frames are
    rendered on demand with ``frame(i)`` (random access) or by iterating. ``corruption`` is one of
    ``CORRUPTIONS``; ``corruption_log`` lists the kinds scheduled for every frame.
    """

    def __init__(self, seed: int, *, height: int, width: int, n_frames: int,
                 rate: float = DEFAULT_RATE_HZ, corruption: str = "none") -> None:
        self.seed = _check_positive_int("seed", seed, 0)
        self.height = _check_positive_int("height", height, 32)
        self.width = _check_positive_int("width", width, 32)
        self.n_frames = _check_positive_int("n_frames", n_frames, 1)
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of Hz, got {rate!r}")
        self.rate = float(rate)
        if corruption not in CORRUPTIONS:
            raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
        self.corruption = corruption
        self._next_instance = 1
        self._instance_class: dict[int, int] = {}
        self._build_scene()
        self._build_sensor()
        self._schedule = self._build_schedule()

    # ------------------------------------------------------------------ public
    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[SynthFrame]:
        for i in range(self.n_frames):
            yield self.frame(i)

    @property
    def corruption_log(self) -> list[tuple[str, ...]]:
        """The corruption kinds applied to each frame (empty tuples with ``corruption="none"``)."""
        return [tuple(kind for kind, _ in events) for events in self._schedule]

    def describe(self) -> dict:
        """JSON-ready description of the sequence (seed, size, rate, scene parameters)."""
        return {
            "seed": self.seed, "height": self.height, "width": self.width,
            "frames": self.n_frames, "rate_hz": self.rate, "corruption": self.corruption,
            "corruption_recipe": CORRUPTION_RECIPE if self.corruption == "standard" else None,
            "scene": {key: (round(value, 4) if isinstance(value, float) else value)
                      for key, value in self.scene.items()},
        }

    def frame(self, index: int) -> SynthFrame:
        """Render frame ``index`` (0-based)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < self.n_frames:
            raise ValueError(f"index must be in [0, {self.n_frames}), got {index!r}")
        index = int(index)
        t = index / self.rate
        colour, labels, instances, drawn = self._render(index, t)
        clean = self._finish(colour, index)
        image = clean
        events = self._schedule[index]
        if events:
            image = self._corrupt(clean, index, events)
        classes = {k: self._instance_class[k] for k in drawn}
        return SynthFrame(index=index, time_s=t, image=image, clean_image=clean, labels=labels,
                          instances=instances, instance_classes=classes,
                          corruptions=tuple(kind for kind, _ in events))

    # ------------------------------------------------------------------ scene
    def _new_instance(self, train_id: int) -> int:
        instance_id = self._next_instance
        self._next_instance += 1
        self._instance_class[instance_id] = train_id
        return instance_id

    def _build_scene(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        lanes = int(rng.integers(1, 3))
        lane_w = float(rng.uniform(3.0, 3.6))
        parking = bool(rng.random() < 0.6)
        road_half = lanes * lane_w + (2.3 if parking else 0.3)
        sidewalk = float(rng.uniform(2.5, 4.5))
        terrain = [float(rng.uniform(1.0, 4.0)) if rng.random() < 0.5 else 0.0 for _ in range(2)]
        speed = float(rng.uniform(6.0, 12.0))
        self.scene = {
            "lanes_per_direction": lanes, "lane_width_m": lane_w, "parking_lane": parking,
            "road_half_width_m": road_half, "sidewalk_width_m": sidewalk,
            "terrain_left_m": terrain[0], "terrain_right_m": terrain[1], "speed_mps": speed,
            "yaw_amplitude_deg": float(rng.uniform(1.0, 3.5)),
            "yaw_period_s": float(rng.uniform(3.0, 7.0)),
            "yaw_phase": float(rng.uniform(0, 2 * math.pi)),
            "sway_m": float(rng.uniform(0.05, 0.3)),
            "pitch_deg": float(rng.uniform(0.1, 0.6)),
            "horizon": float(rng.uniform(0.4, 0.48)),
            "focal": float(rng.uniform(0.75, 1.0)),
            "fog_m": float(rng.uniform(120.0, 400.0)),
            "hood": float(rng.uniform(0.04, 0.09)) if rng.random() < 0.6 else 0.0,
            "brightness": float(rng.uniform(0.8, 1.15)),
            "light_slope": float(rng.uniform(-0.35, 0.35)),
        }
        self._lanes, self._lane_w, self._road_half = lanes, lane_w, road_half
        self._sidewalk, self._parking, self._speed = sidewalk, parking, speed
        self._facade_x = np.array([road_half + sidewalk + terrain[0],
                                   road_half + sidewalk + terrain[1]])  # left, right
        self._tint = (1.0 + rng.uniform(-0.07, 0.07, 3)).astype(np.float32)
        self._road_col = np.float32(rng.uniform(0.22, 0.42)) * (
            1 + rng.uniform(-0.04, 0.04, 3)).astype(np.float32)
        self._walk_col = (np.float32(rng.uniform(0.38, 0.62))
                          * np.array([1.0, 0.97, 0.9], np.float32)
                          * (1 + rng.uniform(-0.05, 0.05, 3)).astype(np.float32))
        self._terrain_col = np.array([0.36, 0.42, 0.2], np.float32) * np.float32(
            rng.uniform(0.7, 1.2))
        self._sky_top = np.array([0.25, 0.45, 0.8], np.float32) * np.float32(
            rng.uniform(0.8, 1.1))
        self._sky_horizon = np.array([0.78, 0.84, 0.9], np.float32) * np.float32(
            rng.uniform(0.9, 1.05))
        self._cloudiness = float(rng.uniform(0.0, 0.9))
        self._tile, self._cloud_tile = _texture_tiles(rng)
        self._glass = rng.uniform(0.55, 1.7, 256).astype(np.float32)
        self._hood_col = (np.float32(rng.uniform(0.05, 0.5))
                          * _CAR_PALETTE[int(rng.integers(len(_CAR_PALETTE)))]).astype(np.float32)

        duration = self.n_frames / self.rate
        z_end = speed * duration + _FAR + 14.0 * duration + _CHUNK_M
        n_chunks = int(math.ceil(z_end / _CHUNK_M)) + 1
        blocks: list[list[tuple]] = [[], []]
        self._objects: list[_Object] = []
        for chunk in range(-1, n_chunks):
            crng = np.random.default_rng([self.seed, 1, chunk + 1])
            self._build_chunk(crng, chunk * _CHUNK_M, (chunk + 1) * _CHUNK_M, blocks)
        self._pack_blocks(blocks)
        self._pack_objects()

    def _pack_blocks(self, blocks: list[list[tuple]]) -> None:
        """Facade blocks into arrays (left side first) and the background palette."""
        rows = blocks[0] + blocks[1]
        self._block_start = [np.array([r[0] for r in side]) for side in blocks]
        self._block_offset = (0, len(blocks[0]))
        self._block_start_all = np.array([r[0] for r in rows])
        self._block_kind = np.array([r[1] for r in rows], np.int32)
        self._block_height = np.array([r[2] for r in rows])
        self._block_pitch = np.array([r[4] for r in rows])
        self._block_floor = np.array([r[5] for r in rows])
        h = self.height
        self._p_blocks = _P_SKY + h
        palette = np.zeros((self._p_blocks + len(rows), 3), np.float32)
        labels = np.full(len(palette), VOID, np.uint8)
        for entry, col, label in (
                (_P_ROAD, self._road_col, ROAD), (_P_SIDEWALK, self._walk_col, SIDEWALK),
                (_P_TERRAIN, self._terrain_col, TERRAIN),
                (_P_MARKING, np.array([0.85, 0.85, 0.83]), ROAD),
                (_P_WINDOW, np.array([0.13, 0.15, 0.18]), BUILDING)):
            palette[entry], labels[entry] = col, label
        # Sky gradient over the rows above the nominal horizon: pale at the horizon.
        up = np.clip((self.scene["horizon"] * h - np.arange(h) - 0.5) / (0.5 * h), 0.0, 1.0)
        palette[_P_SKY:_P_SKY + h] = (self._sky_horizon[None, :] * (1 - up[:, None])
                                      + self._sky_top[None, :] * up[:, None])
        labels[_P_SKY:_P_SKY + h] = SKY
        palette[self._p_blocks:] = np.array([r[3] for r in rows], np.float32)
        labels[self._p_blocks:] = np.where(self._block_kind == _BLOCK_HEDGE, VEGETATION,
                                           BUILDING)
        self._palette = palette
        self._palette_label = labels

    def _build_chunk(self, rng: np.random.Generator, z_lo: float, z_hi: float,
                     blocks: list[list[tuple]]) -> None:
        road_half, sw = self._road_half, self._sidewalk
        streets: list[tuple[float, float, int]] = []
        for side in (0, 1):
            z = z_lo
            while z < z_hi:
                length = float(rng.uniform(8.0, 30.0))
                roll = rng.random()
                if roll < 0.12 and z - z_lo > 5 and z_hi - z > 20:
                    kind, length = _BLOCK_STREET, float(rng.uniform(9.0, 14.0))
                    streets.append((z, z + length, side))
                elif roll < 0.32:
                    kind = _BLOCK_HEDGE
                else:
                    kind = _BLOCK_BUILDING
                if kind == _BLOCK_HEDGE:
                    colour = np.array([0.18, 0.36, 0.12]) * rng.uniform(0.6, 1.3) \
                        + rng.uniform(-0.04, 0.04, 3)
                    height = float(rng.uniform(2.0, 7.0))
                else:
                    grey = rng.uniform(0.3, 0.8)
                    colour = grey * (1 + rng.uniform(-0.18, 0.18, 3)) \
                        * np.array([1.0, 0.95, 0.86])
                    height = float(rng.uniform(7.0, 28.0))
                blocks[side].append((z, kind, height, np.clip(colour, 0.03, 1.0),
                                     float(rng.uniform(2.2, 4.0)), float(rng.uniform(2.8, 3.6))))
                z += length

        # Poles (half with a sign or a traffic light) along both kerbs.
        for side, sign_x in ((0, -1.0), (1, 1.0)):
            z = z_lo + float(rng.uniform(0, 15))
            while z < z_hi:
                self._add_pole(rng, sign_x * (road_half + 0.35), z)
                z += float(rng.uniform(14.0, 30.0))
        # Trees on the outer sidewalk edge / grass strip.
        for side, sign_x in ((0, -1.0), (1, 1.0)):
            if rng.random() < 0.3:
                continue
            z = z_lo + float(rng.uniform(0, 10))
            while z < z_hi:
                x = sign_x * (road_half + sw - float(rng.uniform(0.5, 0.9)))
                self._add_tree(rng, x, z)
                z += float(rng.uniform(8.0, 20.0))
        # Parked cars.
        if self._parking:
            for sign_x in (-1.0, 1.0):
                z = z_lo + float(rng.uniform(0, 10))
                while z < z_hi:
                    if rng.random() < 0.6:
                        self._add_car(rng, sign_x * (self._lanes * self._lane_w + 1.1), z,
                                      rear=sign_x > 0)
                    z += float(rng.uniform(5.5, 9.0))
        # Oncoming traffic.
        for _ in range(int(rng.integers(1, 4))):
            lane = int(rng.integers(self._lanes))
            obj = self._add_car(rng, -(lane + 0.5) * self._lane_w, float(rng.uniform(z_lo, z_hi)),
                                rear=False)
            obj.vz = -float(rng.uniform(6.0, 14.0))
        # Traffic ahead in the other same-direction lane, or a lead car in the ego lane.
        if self._lanes == 2 and rng.random() < 0.7:
            obj = self._add_car(rng, 0.5 * self._lane_w, float(rng.uniform(z_lo, z_hi)), rear=True)
            obj.vz = self._speed + float(rng.uniform(-2.5, 2.5))
        if z_lo == 0.0 and rng.random() < 0.5:
            obj = self._add_car(rng, (self._lanes - 0.5) * self._lane_w,
                                float(rng.uniform(12.0, 30.0)), rear=True)
            obj.vz, obj.z_amp, obj.z_freq = self._speed, float(rng.uniform(1, 4)), 0.35
        # Pedestrians walking along the sidewalks.
        for _ in range(int(rng.integers(1, 5))):
            sign_x = -1.0 if rng.random() < 0.5 else 1.0
            x = sign_x * (road_half + float(rng.uniform(0.7, max(sw - 0.4, 0.8))))
            obj = self._add_person(rng, x, float(rng.uniform(z_lo, z_hi)))
            obj.vz = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.7))
        # Pedestrians crossing the road, timed to cross when the camera is 15-60 m away.
        for _ in range(int(rng.integers(0, 3))):
            z = float(rng.uniform(z_lo, z_hi))
            direction = 1.0 if rng.random() < 0.5 else -1.0
            x_start = -direction * (road_half + 0.6)
            obj = self._add_person(rng, x_start, z)
            obj.vx = direction * float(rng.uniform(1.0, 1.8))
            obj.t0 = (z - float(rng.uniform(15.0, 60.0))) / self._speed
            obj.x_range = (-(road_half + 0.6), road_half + 0.6)
        # Cars crossing at side streets, timed to cross when the camera is 25-80 m away.
        for z0, z1, side in streets:
            if rng.random() < 0.7:
                zc = 0.5 * (z0 + z1)
                direction = 1.0 if rng.random() < 0.5 else -1.0
                reach = float(self._facade_x.max()) + 12.0
                obj = self._add_car(rng, -direction * reach, zc, rear=False, side_view=True)
                obj.vx = direction * float(rng.uniform(5.0, 10.0))
                obj.t0 = (zc - float(rng.uniform(25.0, 80.0))) / self._speed
                obj.x_range = (-reach, reach)
                obj.t_range = (obj.t0, obj.t0 + 2 * reach / abs(obj.vx))

    def _add_pole(self, rng: np.random.Generator, x: float, z: float) -> None:
        height = float(rng.uniform(3.5, 7.0))
        width = float(rng.uniform(0.1, 0.18))
        grey = float(rng.uniform(0.25, 0.6))
        parts = [_Part(_rect(-width / 2, width / 2, 0.0, height),
                       np.array([grey, grey, grey * 1.05], np.float32), POLE,
                       self._new_instance(POLE))]
        roll = rng.random()
        if roll < 0.45:
            sign_id = self._new_instance(TRAFFIC_SIGN)
            y = float(rng.uniform(2.2, min(height - 0.4, 3.0)))
            r = float(rng.uniform(0.28, 0.4))
            shape = int(rng.integers(3))
            ring = np.array([[0.8, 0.08, 0.08], [0.1, 0.25, 0.7], [0.9, 0.75, 0.1]][shape],
                            np.float32) * np.float32(rng.uniform(0.8, 1.1))
            white = np.array([0.92, 0.92, 0.9], np.float32)
            if shape == 0:      # round prohibitory sign: red ring, white face
                parts.append(_Part(_ellipse(0.0, y, r, r), ring, TRAFFIC_SIGN, sign_id))
                parts.append(_Part(_ellipse(0.0, y, 0.7 * r, 0.7 * r), white, TRAFFIC_SIGN,
                                   sign_id, detail=True))
            elif shape == 1:    # blue square information sign with a white arrow
                parts.append(_Part(_rect(-r, r, y - r, y + r), ring, TRAFFIC_SIGN, sign_id))
                parts.append(_Part(np.array([[-0.15 * r, y - 0.6 * r], [0.15 * r, y - 0.6 * r],
                                             [0.15 * r, y + 0.1 * r], [0.45 * r, y + 0.1 * r],
                                             [0.0, y + 0.65 * r], [-0.45 * r, y + 0.1 * r],
                                             [-0.15 * r, y + 0.1 * r]]),
                                   white, TRAFFIC_SIGN, sign_id, detail=True))
            else:               # yellow diamond priority sign with a white border
                diamond = np.array([[0, y - 1.2 * r], [1.2 * r, y], [0, y + 1.2 * r],
                                    [-1.2 * r, y]])
                parts.append(_Part(diamond, white, TRAFFIC_SIGN, sign_id))
                parts.append(_Part(np.array([[0, y - 0.8 * r], [0.8 * r, y], [0, y + 0.8 * r],
                                             [-0.8 * r, y]]), ring, TRAFFIC_SIGN, sign_id,
                                   detail=True))
        elif roll < 0.65:
            light_id = self._new_instance(TRAFFIC_LIGHT)
            y = height - 0.55
            parts.append(_Part(_rect(-0.17, 0.17, y - 0.5, y + 0.45),
                               np.array([0.08, 0.08, 0.07], np.float32), TRAFFIC_LIGHT, light_id))
            lit = int(rng.integers(3))
            for k, colour in enumerate(([1.0, 0.15, 0.1], [1.0, 0.75, 0.1], [0.2, 1.0, 0.4])):
                scale = 1.0 if k == lit else 0.25
                parts.append(_Part(_ellipse(0.0, y + 0.3 - 0.3 * k, 0.1, 0.1, 12),
                                   np.array(colour, np.float32) * np.float32(scale),
                                   TRAFFIC_LIGHT, light_id, detail=True))
        self._objects.append(_Object("pole", parts, x0=x, z0=z))

    def _add_tree(self, rng: np.random.Generator, x: float, z: float) -> None:
        tree_id = self._new_instance(VEGETATION)
        trunk_h = float(rng.uniform(1.8, 3.2))
        trunk_w = float(rng.uniform(0.18, 0.35))
        green = np.array([0.2, 0.42, 0.14]) * rng.uniform(0.6, 1.25)
        parts = [_Part(_rect(-trunk_w / 2, trunk_w / 2, 0.0, trunk_h + 0.5),
                       np.array([0.3, 0.22, 0.14], np.float32) * np.float32(rng.uniform(0.7, 1.2)),
                       VEGETATION, tree_id)]
        rx, ry = float(rng.uniform(1.0, 2.2)), float(rng.uniform(1.3, 2.6))
        cy = trunk_h + 0.85 * ry
        parts.append(_Part(_blob(rng, 0.0, cy, rx, ry), green.astype(np.float32), VEGETATION,
                           tree_id))
        light = np.clip(green * rng.uniform(1.15, 1.4), 0, 1).astype(np.float32)
        parts.append(_Part(_blob(rng, -0.2 * rx, cy + 0.2 * ry, 0.55 * rx, 0.5 * ry), light,
                           VEGETATION, tree_id, detail=True))
        self._objects.append(_Object("tree", parts, x0=x, z0=z))

    def _add_car(self, rng: np.random.Generator, x: float, z: float, *, rear: bool,
                 side_view: bool = False) -> _Object:
        car_id = self._new_instance(CAR)
        body = _CAR_PALETTE[int(rng.integers(len(_CAR_PALETTE)))] * np.float32(
            rng.uniform(0.85, 1.1)) + rng.uniform(-0.04, 0.04, 3).astype(np.float32)
        body = np.clip(body, 0.02, 1.0).astype(np.float32)
        glass = np.array([0.1, 0.12, 0.15], np.float32) * np.float32(rng.uniform(0.7, 1.6))
        tyre = np.array([0.05, 0.05, 0.05], np.float32)
        height = float(rng.uniform(1.35, 1.65))
        if side_view:
            half = float(rng.uniform(1.9, 2.3))
            parts = [
                _Part(np.array([[-half, 0.3], [half, 0.3], [half, 0.95], [half - 0.3, 1.05],
                                [-half + 0.2, 1.05], [-half, 0.9]]), body, CAR, car_id),
                _Part(np.array([[-half + 0.9, 1.0], [half - 1.0, 1.0], [half - 1.5, height],
                                [-half + 1.3, height]]), body, CAR, car_id),
                _Part(np.array([[-half + 1.05, 1.03], [half - 1.15, 1.03],
                                [half - 1.55, height - 0.07], [-half + 1.4, height - 0.07]]),
                      glass, CAR, car_id, detail=True),
                _Part(_ellipse(-half + 0.75, 0.33, 0.33, 0.33, 14), tyre, CAR, car_id),
                _Part(_ellipse(half - 0.75, 0.33, 0.33, 0.33, 14), tyre, CAR, car_id),
            ]
        else:
            half = float(rng.uniform(0.85, 1.0))
            lamp = np.array([0.8, 0.05, 0.05] if rear else [0.95, 0.92, 0.75], np.float32)
            parts = [
                _Part(_rect(-half + 0.1, -half + 0.4, 0.0, 0.35), tyre, CAR, car_id),
                _Part(_rect(half - 0.4, half - 0.1, 0.0, 0.35), tyre, CAR, car_id),
                _Part(np.array([[-half, 0.25], [half, 0.25], [half, 0.9], [half - 0.1, 1.0],
                                [-half + 0.1, 1.0], [-half, 0.9]]), body, CAR, car_id),
                _Part(np.array([[-half + 0.12, 1.0], [half - 0.12, 1.0], [half - 0.3, height],
                                [-half + 0.3, height]]), body, CAR, car_id),
                _Part(np.array([[-half + 0.2, 1.03], [half - 0.2, 1.03],
                                [half - 0.34, height - 0.06], [-half + 0.34, height - 0.06]]),
                      glass, CAR, car_id, detail=True),
                _Part(_rect(-half + 0.05, -half + 0.35, 0.7, 0.85), lamp, CAR, car_id,
                      detail=True),
                _Part(_rect(half - 0.35, half - 0.05, 0.7, 0.85), lamp, CAR, car_id,
                      detail=True),
                _Part(_rect(-0.3, 0.3, 0.4, 0.55), np.array([0.9, 0.9, 0.85], np.float32), CAR,
                      car_id, detail=True),
            ]
        obj = _Object("car", parts, x0=x, z0=z)
        self._objects.append(obj)
        return obj

    def _add_person(self, rng: np.random.Generator, x: float, z: float) -> _Object:
        person_id = self._new_instance(PERSON)
        tall = float(rng.uniform(1.55, 1.95))
        shirt = np.clip(rng.uniform(0.05, 0.9, 3), 0, 1).astype(np.float32)
        trousers = np.clip(rng.uniform(0.05, 0.5) * (1 + rng.uniform(-0.3, 0.3, 3)), 0,
                           1).astype(np.float32)
        skin = _SKIN[int(rng.integers(len(_SKIN)))]
        hip = 0.5 * tall
        shoulder = 0.82 * tall
        head_r = 0.065 * tall
        parts = [
            _Part(np.zeros((4, 2)), trousers, PERSON, person_id),  # legs: set per frame
            _Part(np.zeros((4, 2)), trousers, PERSON, person_id),
            _Part(np.array([[-0.3, hip - 0.05], [0.3, hip - 0.05], [0.3, shoulder - 0.03],
                            [0.22, shoulder], [-0.22, shoulder], [-0.3, shoulder - 0.03]]),
                  shirt, PERSON, person_id),
            _Part(_ellipse(0.0, shoulder + 0.9 * head_r, 0.8 * head_r, head_r, 14), skin,
                  PERSON, person_id),
        ]
        obj = _Object("person", parts, x0=x, z0=z, phase=float(rng.uniform(0, 2 * math.pi)),
                      leg=hip)
        self._objects.append(obj)
        return obj

    def _pack_objects(self) -> None:
        objs = self._objects
        self._ox0 = np.array([o.x0 for o in objs])
        self._ovx = np.array([o.vx for o in objs])
        self._ot0 = np.array([o.t0 for o in objs])
        self._oxlo = np.array([o.x_range[0] for o in objs])
        self._oxhi = np.array([o.x_range[1] for o in objs])
        self._oz0 = np.array([o.z0 for o in objs])
        self._ovz = np.array([o.vz for o in objs])
        self._ozamp = np.array([o.z_amp for o in objs])
        self._ozfreq = np.array([o.z_freq for o in objs])
        self._ota = np.array([o.t_range[0] for o in objs])
        self._otb = np.array([o.t_range[1] for o in objs])
        # All part polygons in one vertex array, so that a frame projects them in one go.
        verts, vert_obj, part_start, part_cols, part_ids = [], [], [0], [], []
        obj_parts, sizes, legs, lod = [], [], [], []
        for k, obj in enumerate(objs):
            first_part = len(part_ids)
            coarse = [first_part + j for j, part in enumerate(obj.parts) if not part.detail]
            if obj.kind == "person":
                legs.append((k, part_start[-1]))
            for part in obj.parts:
                verts.append(part.polygon)
                vert_obj.append(np.full(len(part.polygon), k))
                part_start.append(part_start[-1] + len(part.polygon))
                part_cols.append(part.colour)
                part_ids.append(part.instance_id)
            obj_parts.append((first_part, len(part_ids)))
            lod.append((list(range(first_part, len(part_ids))), coarse))
            obj.unique_ids = sorted({part.instance_id for part in obj.parts})
            sizes.append(float(np.ptp(np.concatenate([p.polygon[:, 1] for p in obj.parts]))))
        self._verts = np.concatenate(verts).astype(np.float64)
        self._vert_obj = np.concatenate(vert_obj)
        self._part_start = part_start
        self._part_cols = np.array(part_cols, np.float64)
        self._part_ids = part_ids
        self._obj_parts = obj_parts
        self._lod = lod
        self._part_obj = np.repeat(np.arange(len(objs)), [b - a for a, b in obj_parts])
        self._legs = np.array(legs, np.int64).reshape(-1, 2)
        self._leg_length = np.array([objs[k].leg for k, _ in legs])
        self._leg_phase = np.array([objs[k].phase for k, _ in legs])
        self._osize = np.array(sizes)
        lut = np.full(self._next_instance, VOID, np.uint8)
        for instance_id, train_id in self._instance_class.items():
            lut[instance_id] = train_id
        self._instance_label = lut

    # ------------------------------------------------------------------ camera / sensor
    def _build_sensor(self) -> None:
        h, w = self.height, self.width
        s = self.scene
        self._f = s["focal"] * w
        self._cx = 0.5 * w
        self._cy = s["horizon"] * h
        self._u = (np.arange(w, dtype=np.float64) + 0.5 - self._cx) / self._f
        rng = np.random.default_rng([self.seed, 2])
        self._noise_bank = rng.standard_normal((h + _NOISE_PAD, w + _NOISE_PAD, 3),
                                               dtype=np.float32)
        self._noise_sigma = float(rng.uniform(1.5, 4.0))
        # Lighting: a horizontal gradient and a vignette, with the sequence's tint, in 0-255.
        xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)
        gain = (1.0 + s["light_slope"] * xs)[None, :] * (
            1.0 - 0.25 * (xs[None, :] ** 2 + ys[:, None] ** 2) / 2.0)
        self._light = (255.0 * s["brightness"] * gain[:, :, None]
                       * self._tint[None, None, :]).astype(np.float32)
        self._hood = None
        if s["hood"] > 0:
            top = h * (1.0 - s["hood"])
            ell = _ellipse(0.5 * w, top + 0.25 * w, 0.8 * w, 0.25 * w, 72)
            self._hood = ell
        self._walk_period = float(rng.uniform(0.9, 1.2))

    def _camera(self, t: float) -> tuple[float, float, float, float]:
        """Camera (x, z, yaw, horizon row) at time ``t``."""
        s = self.scene
        omega = 2 * math.pi / s["yaw_period_s"]
        yaw = math.radians(s["yaw_amplitude_deg"]) * math.sin(omega * t + s["yaw_phase"])
        x = (self._lanes - 0.5) * self._lane_w + s["sway_m"] * math.sin(
            0.5 * omega * t + s["yaw_phase"])
        pitch = math.radians(s["pitch_deg"]) * math.sin(2 * math.pi * 1.3 * t + s["yaw_phase"])
        return x, self._speed * t, yaw, self._cy + self._f * math.tan(pitch)

    # ------------------------------------------------------------------ rendering
    def _render(self, index: int, t: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """Colour (float32, 0-1), labels, instances and the instance ids drawn at time ``t``."""
        h, w = self.height, self.width
        cam_x, cam_z, yaw, cy = self._camera(t)
        cos_y, sin_y = math.cos(yaw), math.sin(yaw)
        f32 = np.float32
        dxw = (self._u * cos_y + sin_y).astype(f32)       # world ray direction per column
        dzw = (-self._u * sin_y + cos_y).astype(f32)
        dy = ((np.arange(h) + 0.5 - cy) / self._f).astype(f32)
        rg = int(np.searchsorted(dy, 1e-3))               # first row that sees the ground

        # The frame is composed from a palette index, a shade and a haze amount per pixel:
        # colour = palette[index] * shade * (1 - haze) + horizon colour * haze.
        pidx = np.empty((h, w), np.intp)  # native index type: np.take needs no conversion
        shade = np.ones((h, w), f32)
        haze = np.zeros((h, w), f32)

        if rg > 0:  # sky: one palette entry per row (gradient), clouds blend to the horizon
            pidx[:rg] = (_P_SKY + np.arange(rg, dtype=np.intp))[:, None]
            if self._cloudiness > 0:
                azimuth = (np.arctan(self._u) + yaw).astype(f32)
                cloud = _lookup(self._cloud_tile, dy[:rg, None] * f32(self._f),
                                azimuth[None, :] * f32(self._f))
                cloud -= f32(1.4 - self._cloudiness)
                np.clip(cloud, 0.0, 0.9, out=cloud)
                haze[:rg] = cloud

        if rg < h:  # ground: ray-plane intersection
            tg = (_CAM_HEIGHT / dy[rg:])[:, None]
            xg = f32(cam_x) + tg * dxw[None, :]
            zg = f32(cam_z) + tg * dzw[None, :]
            ax = np.abs(xg)
            rh, sw = f32(self._road_half), f32(self._sidewalk)
            code = (ax >= rh).view(np.uint8) + (ax >= rh + sw).view(np.uint8)
            beyond = (xg <= -f32(self._facade_x[0])) | (xg >= f32(self._facade_x[1]))
            if beyond.any():
                street = self._in_street(zg[beyond], xg[beyond])
                code[beyond] = np.where(street, _P_ROAD, _P_TERRAIN)
            lanes = f32(self._lanes * self._lane_w)
            rel = xg * f32(1.0 / self._lane_w)
            dashed = ((np.abs(rel - np.round(rel)) < f32(0.08 / self._lane_w))
                      & (ax < lanes - f32(0.5)) & (_frac(zg * f32(1 / 9.0)) < f32(1 / 3.0)))
            edge = np.abs(ax - lanes) < f32(0.09)
            marking = (dashed | edge) & (ax < rh)
            code[marking] = _P_MARKING
            walk = code == _P_SIDEWALK
            joints = (_frac(zg * f32(1 / 1.1)) < f32(0.045)) | (
                _frac((ax - rh) * f32(1 / 1.1)) < f32(0.045))
            curb = ax < rh + f32(0.18)
            amp = (f32(0.16) * np.exp(-tg / f32(40.0))).astype(f32)
            tex = _lookup(self._tile, zg * f32(8.0), xg * f32(8.0))
            gshade = f32(1.0) + amp * tex
            gshade *= f32(1.0) + (walk & curb).view(np.uint8) * f32(0.25) - (
                walk & joints).view(np.uint8) * f32(0.2)
            pidx[rg:] = code
            shade[rg:] = gshade
            haze[rg:] = 1.0 - np.exp(-tg / f32(self.scene["fog_m"]))

        # Facades: vertical planes at x = -facade_x[0] (left) and +facade_x[1] (right).
        right = dxw > 1e-4
        left = dxw < -1e-4
        tf = np.full(w, np.inf, np.float64)
        tf[right] = (self._facade_x[1] - cam_x) / dxw[right]
        tf[left] = (-self._facade_x[0] - cam_x) / dxw[left]
        valid = np.isfinite(tf) & (tf > 0)
        tf[~valid] = 1.0
        zf = cam_z + tf * dzw
        block = np.zeros(w, np.intp)
        for side, mask in ((0, left & valid), (1, right & valid)):
            starts = self._block_start[side]
            idx = np.clip(np.searchsorted(starts, zf[mask], side="right") - 1, 0, len(starts) - 1)
            block[mask] = idx + self._block_offset[side]
        kind = self._block_kind[block]
        valid &= kind != _BLOCK_STREET
        hedge = kind == _BLOCK_HEDGE
        top = self._block_height[block] + hedge * (0.6 * np.sin(zf * 1.7) + 0.3 * np.sin(zf * 4.1))
        lo = np.where(valid, (_CAM_HEIGHT - top) / tf, np.inf).astype(f32)
        hi = np.where(valid, _CAM_HEIGHT / tf, -np.inf).astype(f32)
        r0 = int(np.searchsorted(dy, lo.min())) if valid.any() else h
        r1 = int(np.searchsorted(dy, hi.max())) if valid.any() else h
        if r1 > r0:
            dys = dy[r0:r1, None]
            fmask = (dys >= lo[None, :]) & (dys < hi[None, :])
            tf32 = tf.astype(f32)
            above = f32(_CAM_HEIGHT) - tf32[None, :] * dys        # height on the facade (m)
            along = (zf - self._block_start_all[block]).astype(f32)
            pitch = self._block_pitch[block].astype(f32)
            floor_h = self._block_floor[block].astype(f32)
            storey = above * (f32(1.0) / floor_h)[None, :]
            storey_index = np.floor(storey)
            in_storey = storey - storey_index                     # fraction of the storey
            col_win = (_frac(along / pitch) < f32(0.55)) & ~hedge
            win = (col_win[None, :] & (in_storey > (f32(0.9) / floor_h)[None, :])
                   & (in_storey < (f32(2.3) / floor_h)[None, :])
                   & (above > f32(2.5)) & (above < (top.astype(f32) - f32(1.0))[None, :]))
            fcode = np.where(win, np.intp(_P_WINDOW), (block + self._p_blocks)[None, :])
            tex = _lookup(self._tile, above * f32(10.0), zf.astype(f32)[None, :] * f32(10.0))
            amp = np.where(hedge, f32(0.35), f32(0.08)).astype(f32)
            fshade = f32(1.0) + amp[None, :] * tex
            pane = (storey_index.astype(np.intp) * 7
                    + np.floor(along / pitch).astype(np.intp)[None, :]) & 255
            fshade = np.where(win, np.take(self._glass, pane), fshade)
            fhaze = (1.0 - np.exp(-tf32 / f32(self.scene["fog_m"])))[None, :]
            np.copyto(pidx[r0:r1], fcode, where=fmask)
            np.copyto(shade[r0:r1], fshade, where=fmask)
            np.copyto(haze[r0:r1], np.broadcast_to(fhaze, fmask.shape), where=fmask)

        labels = np.take(self._palette_label, pidx)
        keep = shade * (f32(1.0) - haze)
        channels = [np.take(self._palette[:, k], pidx) * keep + self._sky_horizon[k] * haze
                    for k in range(3)]
        colour = cv2.merge(channels)
        instances = np.zeros((h, w), np.int32)
        drawn = self._draw_objects(colour, instances, t, cam_x, cam_z, cos_y, sin_y, cy)
        if drawn:
            object_labels = np.take(self._instance_label, instances)
            np.copyto(labels, object_labels, where=instances > 0)
        if self._hood is not None:
            pts = [np.round(self._hood * (1 << _SHIFT)).astype(np.int32)]
            cv2.fillPoly(colour, pts, tuple(float(c) for c in self._hood_col), cv2.LINE_8, _SHIFT)
            cv2.fillPoly(labels, pts, VOID, cv2.LINE_8, _SHIFT)
            cv2.fillPoly(instances, pts, 0, cv2.LINE_8, _SHIFT)
        return colour, labels, instances, drawn

    def _in_street(self, z: np.ndarray, x: np.ndarray) -> np.ndarray:
        out = np.zeros(z.shape, bool)
        for side, sel in ((0, x < 0), (1, x >= 0)):
            starts = self._block_start[side]
            idx = np.clip(np.searchsorted(starts, z[sel], side="right") - 1, 0, len(starts) - 1)
            out[sel] = self._block_kind[idx + self._block_offset[side]] == _BLOCK_STREET
        return out

    def _draw_objects(self, colour: np.ndarray, instances: np.ndarray, t: float, cam_x: float,
                      cam_z: float, cos_y: float, sin_y: float, cy: float) -> list[int]:
        """Draw the visible billboards far to near; return the instance ids drawn."""
        x = np.clip(self._ox0 + self._ovx * (t - self._ot0), self._oxlo, self._oxhi)
        z = self._oz0 + self._ovz * t + self._ozamp * np.sin(self._ozfreq * t)
        dx, dz = x - cam_x, z - cam_z
        xc = cos_y * dx - sin_y * dz
        zc = sin_y * dx + cos_y * dz
        depth = np.maximum(zc, _NEAR)
        scale = self._f / depth                                    # pixels per metre
        half_view = 0.5 * self.width / self._f
        visible = ((zc > _NEAR) & (zc < _FAR) & (np.abs(xc) < zc * half_view + 6.0)
                   & (t >= self._ota) & (t <= self._otb)
                   & (self._osize * scale >= _MIN_OBJECT_PX))
        order = np.flatnonzero(visible)
        if not len(order):
            return []
        order = order[np.argsort(-zc[order], kind="stable")].tolist()
        self._pose_legs(t)
        fixed = float(1 << _SHIFT)
        u0 = self._cx + self._f * xc / depth
        v0 = cy + _CAM_HEIGHT * scale
        vs = scale[self._vert_obj]
        pts = np.empty(self._verts.shape, np.int32)
        pts[:, 0] = np.round((u0[self._vert_obj] + self._verts[:, 0] * vs) * fixed)
        pts[:, 1] = np.round((v0[self._vert_obj] - self._verts[:, 1] * vs) * fixed)
        haze = (1.0 - np.exp(-depth / self.scene["fog_m"]))[:, None]
        haze = haze[self._part_obj]
        cols = (self._part_cols * (1.0 - haze) + self._sky_horizon[None, :] * haze).tolist()
        starts, ids = self._part_start, self._part_ids
        drawn: list[int] = []
        detailed = (self._osize * scale >= _DETAIL_PX).tolist()
        for k in order:
            for j in self._lod[k][0 if detailed[k] else 1]:
                part = [pts[starts[j]:starts[j + 1]]]
                cv2.fillPoly(colour, part, cols[j], cv2.LINE_8, _SHIFT)
                cv2.fillPoly(instances, part, ids[j], cv2.LINE_8, _SHIFT)
            drawn.extend(self._objects[k].unique_ids)
        return drawn

    def _pose_legs(self, t: float) -> None:
        """Swing the legs (the first two parts, 4 vertices each) of the walking persons."""
        if not len(self._legs):
            return
        objs, start = self._legs[:, 0], self._legs[:, 1]
        moving = (self._ovx[objs] != 0) | (self._ovz[objs] != 0)
        leg = self._leg_length
        swing = np.where(moving, 0.28 * leg * np.sin(
            2 * math.pi * t / self._walk_period + self._leg_phase), 0.0)
        for j, sign in ((0, 1.0), (1, -1.0)):
            foot = sign * (0.1 + swing)
            inner, outer = sorted((0.02 * sign, 0.19 * sign))
            base = start + 4 * j
            self._verts[base, 0], self._verts[base, 1] = inner, leg
            self._verts[base + 1, 0], self._verts[base + 1, 1] = outer, leg
            self._verts[base + 2, 0], self._verts[base + 2, 1] = foot + 0.07, 0.0
            self._verts[base + 3, 0], self._verts[base + 3, 1] = foot - 0.07, 0.0

    def _finish(self, colour: np.ndarray, index: int) -> np.ndarray:
        """Apply lighting, tint and sensor noise; return uint8 RGB."""
        rng = np.random.default_rng([self.seed, 3, index])
        oy, ox = (int(v) for v in rng.integers(0, _NOISE_PAD, 2))
        noise = self._noise_bank[oy:oy + self.height, ox:ox + self.width]
        out = colour * self._light
        out += noise * np.float32(self._noise_sigma)
        return np.clip(out, 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ corruption
    def _build_schedule(self) -> list[list[tuple[str, dict]]]:
        schedule: list[list[tuple[str, dict]]] = [[] for _ in range(self.n_frames)]
        if self.corruption == "none":
            return schedule
        rng = np.random.default_rng([self.seed, 4])
        h, w = self.height, self.width
        occluder_until = -1
        for i in range(self.n_frames):
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
            events = schedule[i]
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
                n = min(occ["frames"], self.n_frames - i)
                occluder_until = i + n - 1
                for k in range(n):
                    schedule[i + k].append(("occluder", dict(occ, step=k)))
        return schedule

    def _corrupt(self, image: np.ndarray, index: int, events: list[tuple[str, dict]]) -> np.ndarray:
        out = image.copy()
        h, w = self.height, self.width
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
                rng = np.random.default_rng([self.seed, 5, index])
                oy, ox = (int(v) for v in rng.integers(0, _NOISE_PAD, 2))
                noise = self._noise_bank[oy:oy + h, ox:ox + w][:, :, ::-1]
                out = np.clip(out + noise * np.float32(p["sigma"]), 0, 255).astype(np.uint8)
            elif kind == "occluder":
                self._draw_occluder(out, p)
        return out

    def _draw_occluder(self, out: np.ndarray, p: dict) -> None:
        h, w = self.height, self.width
        area = p["area"] * h * w
        ry = math.sqrt(area / (math.pi * p["aspect"]))
        rx = ry * p["aspect"]
        cx = p["cx"] + (p["vx"] * p["step"] if p["blob"] else 0.0)
        poly = _ellipse(cx, p["cy"], rx, ry, 16) - np.array([cx, p["cy"]])
        poly = poly * np.asarray(p["wobble"])[:, None] + np.array([cx, p["cy"]])
        pts = [np.round(poly * (1 << _SHIFT)).astype(np.int32)]
        colour = np.asarray(p["colour"], np.float32) * (0.3 if p["blob"] else 1.0)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, pts, 1, cv2.LINE_8, _SHIFT)
        sel = mask.astype(bool)
        if not p["blob"]:   # lens dirt: textured, slightly translucent
            ys, xs = np.nonzero(sel)
            tex = 1.0 + 0.25 * _lookup(self._tile, ys * 0.5, xs * 0.5)
            fill = 255.0 * colour[None, :] * tex[:, None]
            out[sel] = np.clip(0.15 * out[sel] + 0.85 * fill, 0, 255).astype(np.uint8)
        else:
            out[sel] = np.clip(255.0 * colour, 0, 255).astype(np.uint8)


def split_for_seed(seed: int) -> str:
    """Folder split of a sequence: ``"val"`` for held-out seeds, ``"train"`` otherwise."""
    return "val" if seed in HELDOUT_SEEDS else "train"


def sequence_name(seed: int) -> str:
    """Name of the sequence with ``seed`` in folders and JSON (no underscores)."""
    return f"synth{seed:05d}"


def frame_stamps(n_frames: int, rate: float, start_ns: int, seed: int) -> np.ndarray:
    """Capture stamps (int64 ns) of ``n_frames`` frames at ``rate`` Hz with a small jitter.

    Stamps are strictly increasing; the jitter is deterministic for ``seed``.
    """
    n_frames = _check_positive_int("n_frames", n_frames, 1)
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    rng = np.random.default_rng([seed, 6])
    jitter = np.clip(rng.standard_normal(n_frames), -3, 3) * STAMP_JITTER_S
    jitter[0] = 0.0
    period = 1.0 / rate
    jitter = np.clip(jitter, -0.4 * period, 0.4 * period)
    times = np.arange(n_frames) * period + jitter
    return start_ns + np.round(times * 1e9).astype(np.int64)
