"""Synthetic street sequences: frames on demand from a seed, with their timing and names.

A sequence is fully defined by (seed, height, width, rate, corruption): its world
(:mod:`~lmanet_ros.synthetic.scene`), rendered frame by frame
(:mod:`~lmanet_ros.synthetic.render`), corrupted by a per-frame schedule
(:mod:`~lmanet_ros.synthetic.corruption`); frame i is the same whatever the number of frames
asked for. When a tool makes several sequences, sequence k has seed ``base_seed + k``.

Timing: frame i shows the world at ``i / rate`` seconds (``DEFAULT_RATE_HZ`` = 17).
:func:`frame_stamps` gives camera-like capture stamps: the nominal period plus a Gaussian jitter
of ``STAMP_JITTER_S`` = 1 ms (clipped to 3 sigma), starting at ``START_TIME_NS``; tools that put
several sequences in one bag leave ``SEQUENCE_GAP_S`` = 5 s between them.

Seeds, fixed before any model is trained on these data:

- ``TRAIN_SEEDS = range(0, 1000)``: for training.
- ``HELDOUT_SEEDS = range(10000, 10016)``: held out for evaluation; never train on them.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from lmanet_ros.stamps import NS_PER_S
from lmanet_ros.synthetic.corruption import (CORRUPTIONS, corrupt, corruption_schedule,
                                             recipe_name)
from lmanet_ros.synthetic.render import finish, render
from lmanet_ros.synthetic.scene import Scene

__all__ = [
    "DEFAULT_RATE_HZ", "HELDOUT_SEEDS", "SEQUENCE_GAP_S", "STAMP_JITTER_S", "START_TIME_NS",
    "TRAIN_SEEDS", "SynthFrame", "SynthSequence", "frame_stamps", "sequence_name",
    "split_for_seed",
]

# --- Seeds (see the module docstring) -----------------------------------------------------------
TRAIN_SEEDS = range(0, 1000)
HELDOUT_SEEDS = range(10000, 10016)

# --- Timing -------------------------------------------------------------------------------------
DEFAULT_RATE_HZ = 17.0
#: Header stamp of the first frame of the first sequence (fixed, so bags are reproducible).
START_TIME_NS = 1_700_000_000 * NS_PER_S
#: Gap between the end of one sequence and the start of the next one in a bag.
SEQUENCE_GAP_S = 5.0
#: Capture-time jitter (standard deviation, clipped at 3 sigma).
STAMP_JITTER_S = 0.001


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


def _check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class SynthSequence:
    """A deterministic procedural street video.

    ``SynthSequence(seed, height=..., width=..., n_frames=...)`` builds the world; frames are
    rendered on demand with ``frame(i)`` (random access) or by iterating. ``corruption`` is one of
    ``CORRUPTIONS``; ``corruption_log`` lists the kinds scheduled for every frame. ``world`` is
    the :class:`~lmanet_ros.synthetic.scene.Scene`, ``scene`` its JSON-ready parameters.
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
        self.world = Scene(self.seed, height=self.height, width=self.width,
                           n_frames=self.n_frames, rate=self.rate)
        self.scene = self.world.params
        self._schedule = corruption_schedule(self.seed, self.n_frames, self.height, self.width,
                                             corruption)

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
        """JSON-ready description of the sequence (seed, size, rate, corruption recipe, scene
        parameters)."""
        return {
            "seed": self.seed, "height": self.height, "width": self.width,
            "frames": self.n_frames, "rate_hz": self.rate, "corruption": self.corruption,
            "corruption_recipe": recipe_name(self.corruption),
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
        colour, labels, instances, drawn = render(self.world, t)
        clean = finish(self.world, colour, index)
        image = clean
        events = self._schedule[index]
        if events:
            image = corrupt(clean, index, events, seed=self.seed,
                            noise_bank=self.world.noise_bank, tile=self.world.tile)
        classes = {k: self.world.instance_class[k] for k in drawn}
        return SynthFrame(index=index, time_s=t, image=image, clean_image=clean, labels=labels,
                          instances=instances, instance_classes=classes,
                          corruptions=tuple(kind for kind, _ in events))


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
    return start_ns + np.round(times * NS_PER_S).astype(np.int64)
