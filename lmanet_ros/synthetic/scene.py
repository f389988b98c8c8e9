"""The world of a synthetic street sequence: layout, objects and their trajectories, and the
camera that drives through it (intrinsics, motion, lighting, sensor noise).

A camera drives down a straight street at constant speed with a slight yaw and pitch wobble. The
background (road with lane markings converging to the vanishing point, sidewalks, grass strips,
building and hedge facades, side streets, sky) is defined in world coordinates, so that
:mod:`~lmanet_ros.synthetic.render` can ray-cast it per pixel; poles, traffic signs and lights,
trees, parked and moving cars, walking and crossing persons are upright billboards made of flat
polygons (:class:`_Part`), each part carrying its trainId and instance id, so that labels are
exact. The ego vehicle's hood, where a sequence has one, is void (255).

Labels are Cityscapes trainIds (road 0, sidewalk 1, building 2, pole 5, traffic light 6, traffic
sign 7, vegetation 8, terrain 9, sky 10, person 11, car 13; 255 void). Lane markings are road, tree
trunks are vegetation, car windows and wheels are car, as in Cityscapes.

Determinism: the world is built in 60 m chunks, each from its own random stream
(``default_rng([seed, 1, chunk + 1])``), the layout from ``[seed, 0]``, the sensor from
``[seed, 2]``, so a world depends only on (seed, height, width, rate) and its length.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES, IGNORE_INDEX

__all__ = [
    "BLOCK_HEDGE", "BLOCK_STREET", "BUILDING", "CAM_HEIGHT", "CAR", "DETAIL_PX", "FAR",
    "MIN_OBJECT_PX", "NEAR", "NOISE_PAD", "PERSON", "POLE", "POLY_SHIFT", "P_MARKING", "P_ROAD",
    "P_SIDEWALK", "P_SKY", "P_TERRAIN", "P_WINDOW", "REQUIRED_CLASSES", "ROAD", "SIDEWALK", "SKY",
    "Scene", "TERRAIN", "TRAFFIC_LIGHT", "TRAFFIC_SIGN", "VEGETATION", "VOID", "ellipse", "frac",
    "texels",
]


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

# --- Scene constants (metres, pixels) --------------------------------------------------------
CHUNK_M = 60.0        # world built in chunks of this length along the street
CAM_HEIGHT = 1.4      # camera height above the road (m)
NEAR = 1.5            # billboards closer than this (camera depth, m) are not drawn
FAR = 120.0           # ... nor farther than this
MIN_OBJECT_PX = 2.0   # ... nor when smaller than this many pixels tall
DETAIL_PX = 24.0      # objects smaller than this are drawn without their inner details
TILE_BITS = 9         # the texture tile is 512 x 512 texels, indexed modulo its size
NOISE_PAD = 41        # the sensor-noise bank is this much larger than the image on each axis
POLY_SHIFT = 4        # fixed-point bits for cv2 polygon vertices
BLOCK_BUILDING, BLOCK_HEDGE, BLOCK_STREET = 0, 1, 2
# Palette entries of the background: fixed surfaces, then one per sky row, then one per block.
P_ROAD, P_SIDEWALK, P_TERRAIN, P_MARKING, P_WINDOW, P_SKY = 0, 1, 2, 3, 4, 16


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


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> np.ndarray:
    """(n, 2) vertices of the ellipse centred at (cx, cy) with radii (rx, ry), any units."""
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
    size = 1 << TILE_BITS

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
    shifts = rng.integers(0, 1 << TILE_BITS, 4)
    texture, clouds = _base_tiles()
    return (np.roll(texture, (int(shifts[0]), int(shifts[1])), (0, 1)).ravel(),
            np.roll(clouds, (int(shifts[2]), int(shifts[3])), (0, 1)).ravel())


def texels(tile: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Texels of the flattened tile at integer parts of (a, b), wrapped (a new float32 array)."""
    mask = (1 << TILE_BITS) - 1
    index = ((a.astype(np.intp) & mask) << TILE_BITS) | (b.astype(np.intp) & mask)
    return np.take(tile, index)


def frac(x: np.ndarray) -> np.ndarray:
    """Fractional part, in [0, 1) also for negative values."""
    return x - np.floor(x)


_CAR_PALETTE = np.array([
    [0.92, 0.92, 0.90], [0.08, 0.08, 0.09], [0.62, 0.63, 0.65], [0.38, 0.39, 0.41],
    [0.62, 0.08, 0.07], [0.10, 0.20, 0.52], [0.12, 0.30, 0.16], [0.70, 0.62, 0.45],
    [0.85, 0.60, 0.10], [0.30, 0.12, 0.30]], dtype=np.float32)
_SKIN = np.array([[0.95, 0.78, 0.65], [0.80, 0.60, 0.45], [0.55, 0.38, 0.25],
                  [0.35, 0.22, 0.15]], dtype=np.float32)


class Scene:
    """The world and camera of one sequence, built once from ``seed``.

    Args:
        seed: the sequence's seed (>= 0).
        height, width: image size in pixels (the camera's intrinsics and sensor follow it).
        n_frames: frames the camera will drive through (how far the world is built).
        rate: frames per second (Hz); frame i shows the world at ``i / rate`` seconds.

    Attributes read by the renderer are public: ``params`` (the JSON-ready scene parameters),
    the facade blocks (``block_*``), the background ``palette`` / ``palette_label``, the packed
    billboards (``verts`` (V, 2) object-local metres, ``part_*``, ``o*`` trajectory arrays,
    ``legs``), the camera (``f`` focal length in pixels, ``cx``, ``u`` per-column ray slopes),
    the sensor (``light`` (H, W, 3) gain in 0-255, ``noise_bank`` (H + NOISE_PAD, W + NOISE_PAD,
    3) float32 unit noise, ``noise_sigma`` grey levels) and ``instance_class`` (id -> trainId).
    """

    def __init__(self, seed: int, *, height: int, width: int, n_frames: int,
                 rate: float) -> None:
        self.seed, self.height, self.width = seed, height, width
        self.n_frames, self.rate = n_frames, rate
        self._next_instance = 1
        self.instance_class: dict[int, int] = {}
        self._build_scene()
        self._build_sensor()

    # ------------------------------------------------------------------ scene
    def _new_instance(self, train_id: int) -> int:
        instance_id = self._next_instance
        self._next_instance += 1
        self.instance_class[instance_id] = train_id
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
        self.params = {
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
        self.lanes, self.lane_w, self.road_half = lanes, lane_w, road_half
        self.sidewalk, self._parking, self._speed = sidewalk, parking, speed
        self.facade_x = np.array([road_half + sidewalk + terrain[0],
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
        self.sky_horizon = np.array([0.78, 0.84, 0.9], np.float32) * np.float32(
            rng.uniform(0.9, 1.05))
        self.cloudiness = float(rng.uniform(0.0, 0.9))
        self.tile, self.cloud_tile = _texture_tiles(rng)
        self.glass = rng.uniform(0.55, 1.7, 256).astype(np.float32)
        self.hood_col = (np.float32(rng.uniform(0.05, 0.5))
                         * _CAR_PALETTE[int(rng.integers(len(_CAR_PALETTE)))]).astype(np.float32)

        duration = self.n_frames / self.rate
        z_end = speed * duration + FAR + 14.0 * duration + CHUNK_M
        n_chunks = int(math.ceil(z_end / CHUNK_M)) + 1
        blocks: list[list[tuple]] = [[], []]
        self.objects: list[_Object] = []
        for chunk in range(-1, n_chunks):
            crng = np.random.default_rng([self.seed, 1, chunk + 1])
            self._build_chunk(crng, chunk * CHUNK_M, (chunk + 1) * CHUNK_M, blocks)
        self._pack_blocks(blocks)
        self._pack_objects()

    def _pack_blocks(self, blocks: list[list[tuple]]) -> None:
        """Facade blocks into arrays (left side first) and the background palette."""
        rows = blocks[0] + blocks[1]
        self.block_start = [np.array([r[0] for r in side]) for side in blocks]
        self.block_offset = (0, len(blocks[0]))
        self.block_start_all = np.array([r[0] for r in rows])
        self.block_kind = np.array([r[1] for r in rows], np.int32)
        self.block_height = np.array([r[2] for r in rows])
        self.block_pitch = np.array([r[4] for r in rows])
        self.block_floor = np.array([r[5] for r in rows])
        h = self.height
        self.p_blocks = P_SKY + h
        palette = np.zeros((self.p_blocks + len(rows), 3), np.float32)
        labels = np.full(len(palette), VOID, np.uint8)
        for entry, col, label in (
                (P_ROAD, self._road_col, ROAD), (P_SIDEWALK, self._walk_col, SIDEWALK),
                (P_TERRAIN, self._terrain_col, TERRAIN),
                (P_MARKING, np.array([0.85, 0.85, 0.83]), ROAD),
                (P_WINDOW, np.array([0.13, 0.15, 0.18]), BUILDING)):
            palette[entry], labels[entry] = col, label
        # Sky gradient over the rows above the nominal horizon: pale at the horizon.
        up = np.clip((self.params["horizon"] * h - np.arange(h) - 0.5) / (0.5 * h), 0.0, 1.0)
        palette[P_SKY:P_SKY + h] = (self.sky_horizon[None, :] * (1 - up[:, None])
                                    + self._sky_top[None, :] * up[:, None])
        labels[P_SKY:P_SKY + h] = SKY
        palette[self.p_blocks:] = np.array([r[3] for r in rows], np.float32)
        labels[self.p_blocks:] = np.where(self.block_kind == BLOCK_HEDGE, VEGETATION,
                                          BUILDING)
        self.palette = palette
        self.palette_label = labels

    def _build_chunk(self, rng: np.random.Generator, z_lo: float, z_hi: float,
                     blocks: list[list[tuple]]) -> None:
        road_half, sw = self.road_half, self.sidewalk
        streets: list[tuple[float, float, int]] = []
        for side in (0, 1):
            z = z_lo
            while z < z_hi:
                length = float(rng.uniform(8.0, 30.0))
                roll = rng.random()
                if roll < 0.12 and z - z_lo > 5 and z_hi - z > 20:
                    kind, length = BLOCK_STREET, float(rng.uniform(9.0, 14.0))
                    streets.append((z, z + length, side))
                elif roll < 0.32:
                    kind = BLOCK_HEDGE
                else:
                    kind = BLOCK_BUILDING
                if kind == BLOCK_HEDGE:
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
                        self._add_car(rng, sign_x * (self.lanes * self.lane_w + 1.1), z,
                                      rear=sign_x > 0)
                    z += float(rng.uniform(5.5, 9.0))
        # Oncoming traffic.
        for _ in range(int(rng.integers(1, 4))):
            lane = int(rng.integers(self.lanes))
            obj = self._add_car(rng, -(lane + 0.5) * self.lane_w, float(rng.uniform(z_lo, z_hi)),
                                rear=False)
            obj.vz = -float(rng.uniform(6.0, 14.0))
        # Traffic ahead in the other same-direction lane, or a lead car in the ego lane.
        if self.lanes == 2 and rng.random() < 0.7:
            obj = self._add_car(rng, 0.5 * self.lane_w, float(rng.uniform(z_lo, z_hi)), rear=True)
            obj.vz = self._speed + float(rng.uniform(-2.5, 2.5))
        if z_lo == 0.0 and rng.random() < 0.5:
            obj = self._add_car(rng, (self.lanes - 0.5) * self.lane_w,
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
                reach = float(self.facade_x.max()) + 12.0
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
                parts.append(_Part(ellipse(0.0, y, r, r), ring, TRAFFIC_SIGN, sign_id))
                parts.append(_Part(ellipse(0.0, y, 0.7 * r, 0.7 * r), white, TRAFFIC_SIGN,
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
                parts.append(_Part(ellipse(0.0, y + 0.3 - 0.3 * k, 0.1, 0.1, 12),
                                   np.array(colour, np.float32) * np.float32(scale),
                                   TRAFFIC_LIGHT, light_id, detail=True))
        self.objects.append(_Object("pole", parts, x0=x, z0=z))

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
        self.objects.append(_Object("tree", parts, x0=x, z0=z))

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
                _Part(ellipse(-half + 0.75, 0.33, 0.33, 0.33, 14), tyre, CAR, car_id),
                _Part(ellipse(half - 0.75, 0.33, 0.33, 0.33, 14), tyre, CAR, car_id),
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
        self.objects.append(obj)
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
            _Part(ellipse(0.0, shoulder + 0.9 * head_r, 0.8 * head_r, head_r, 14), skin,
                  PERSON, person_id),
        ]
        obj = _Object("person", parts, x0=x, z0=z, phase=float(rng.uniform(0, 2 * math.pi)),
                      leg=hip)
        self.objects.append(obj)
        return obj

    def _pack_objects(self) -> None:
        objs = self.objects
        self.ox0 = np.array([o.x0 for o in objs])
        self.ovx = np.array([o.vx for o in objs])
        self.ot0 = np.array([o.t0 for o in objs])
        self.oxlo = np.array([o.x_range[0] for o in objs])
        self.oxhi = np.array([o.x_range[1] for o in objs])
        self.oz0 = np.array([o.z0 for o in objs])
        self.ovz = np.array([o.vz for o in objs])
        self.ozamp = np.array([o.z_amp for o in objs])
        self.ozfreq = np.array([o.z_freq for o in objs])
        self.ota = np.array([o.t_range[0] for o in objs])
        self.otb = np.array([o.t_range[1] for o in objs])
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
        self.verts = np.concatenate(verts).astype(np.float64)
        self.vert_obj = np.concatenate(vert_obj)
        self.part_start = part_start
        self.part_cols = np.array(part_cols, np.float64)
        self.part_ids = part_ids
        self._obj_parts = obj_parts
        self.lod = lod
        self.part_obj = np.repeat(np.arange(len(objs)), [b - a for a, b in obj_parts])
        self.legs = np.array(legs, np.int64).reshape(-1, 2)
        self.leg_length = np.array([objs[k].leg for k, _ in legs])
        self.leg_phase = np.array([objs[k].phase for k, _ in legs])
        self.osize = np.array(sizes)
        lut = np.full(self._next_instance, VOID, np.uint8)
        for instance_id, train_id in self.instance_class.items():
            lut[instance_id] = train_id
        self.instance_label = lut

    # ------------------------------------------------------------------ camera / sensor
    def _build_sensor(self) -> None:
        h, w = self.height, self.width
        s = self.params
        self.f = s["focal"] * w
        self.cx = 0.5 * w
        self._cy = s["horizon"] * h
        self.u = (np.arange(w, dtype=np.float64) + 0.5 - self.cx) / self.f
        rng = np.random.default_rng([self.seed, 2])
        self.noise_bank = rng.standard_normal((h + NOISE_PAD, w + NOISE_PAD, 3),
                                              dtype=np.float32)
        self.noise_sigma = float(rng.uniform(1.5, 4.0))
        # Lighting: a horizontal gradient and a vignette, with the sequence's tint, in 0-255.
        xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)
        gain = (1.0 + s["light_slope"] * xs)[None, :] * (
            1.0 - 0.25 * (xs[None, :] ** 2 + ys[:, None] ** 2) / 2.0)
        self.light = (255.0 * s["brightness"] * gain[:, :, None]
                      * self._tint[None, None, :]).astype(np.float32)
        self.hood = None
        if s["hood"] > 0:
            top = h * (1.0 - s["hood"])
            ell = ellipse(0.5 * w, top + 0.25 * w, 0.8 * w, 0.25 * w, 72)
            self.hood = ell
        self.walk_period = float(rng.uniform(0.9, 1.2))

    def camera(self, t: float) -> tuple[float, float, float, float]:
        """Camera (x, z, yaw, horizon row) at time ``t``."""
        s = self.params
        omega = 2 * math.pi / s["yaw_period_s"]
        yaw = math.radians(s["yaw_amplitude_deg"]) * math.sin(omega * t + s["yaw_phase"])
        x = (self.lanes - 0.5) * self.lane_w + s["sway_m"] * math.sin(
            0.5 * omega * t + s["yaw_phase"])
        pitch = math.radians(s["pitch_deg"]) * math.sin(2 * math.pi * 1.3 * t + s["yaw_phase"])
        return x, self._speed * t, yaw, self._cy + self.f * math.tan(pitch)
