"""Tests of the ``robot-v2`` corruption recipe (lmanet_ros.synthetic.corruption, issue 12):
schedule rates and shares, timing rules, what each kind does to the image, determinism."""
from __future__ import annotations

import collections

import numpy as np
import pytest
from synthetic_helpers import H, W

from lmanet_ros.synthetic import CORRUPTIONS, SynthSequence
from lmanet_ros.synthetic import corruption as rc
from lmanet_ros.synthetic.corruption import (ROBOT_FRAMES, ROBOT_KINDS, corruption_schedule,
                                             recipe_name, wiper_columns)

RECIPE = "robot-v2"


def _events(schedule: list[list[tuple[str, dict]]]) -> list[tuple[int, int, str, dict]]:
    """(first frame, frames, kind, parameters) of every event of a schedule."""
    events = []
    for i, frame_events in enumerate(schedule):
        for kind, params in frame_events:
            if params["step"] == 0:
                n = 1
                while i + n < len(schedule) and any(k == kind and p["step"] == n
                                                    for k, p in schedule[i + n]):
                    n += 1
                events.append((i, n, kind, params))
    return events


def _first(kind: str, seed: int = 10000, n_frames: int = 60) -> tuple[SynthSequence, int, dict]:
    """A 64x128 robot-v2 sequence, the first frame ``kind`` hits in it and its parameters."""
    for s in range(seed, seed + 10):
        video = SynthSequence(s, height=H, width=W, n_frames=n_frames, corruption=RECIPE)
        for i, events in enumerate(video._schedule):
            if events and events[0][0] == kind:
                return video, i, events[0][1]
    raise AssertionError(f"no {kind} event")


def test_robot_recipe_is_the_last_choice_and_named():
    assert CORRUPTIONS == ("none", "standard", "robot-v2")
    assert recipe_name("robot-v2") == rc.ROBOT_RECIPE == "robot-v2"
    assert recipe_name("standard") == rc.CORRUPTION_RECIPE == "standard-v1"
    assert recipe_name("none") is None
    video = SynthSequence(5, height=H, width=W, n_frames=3, corruption=RECIPE)
    assert video.describe()["corruption_recipe"] == "robot-v2"
    assert set(ROBOT_FRAMES) == set(ROBOT_KINDS) == {
        "wiper", "dropout", "heavy_noise", "glare", "night_blur"}


@pytest.mark.parametrize("base", [0, 10000, 10008, 12345])
def test_hit_fraction_and_kind_shares_over_a_bag(base):
    hits, kinds = 0, collections.Counter()
    for seed in range(base, base + 8):
        schedule = corruption_schedule(seed, 60, H, W, RECIPE)
        hits += sum(1 for events in schedule if events)
        kinds.update(kind for _, _, kind, _ in _events(schedule))
    assert 0.20 <= hits / (8 * 60) <= 0.30
    total = sum(kinds.values())
    assert set(kinds) == set(ROBOT_KINDS)
    for kind in ROBOT_KINDS:
        assert 0.15 <= kinds[kind] / total <= 0.25, (kind, kinds)


def test_kinds_take_turns_so_every_sequence_is_balanced():
    for seed in range(200):
        kinds = [kind for _, _, kind, _ in _events(corruption_schedule(seed, 120, H, W, RECIPE))]
        assert kinds == [ROBOT_KINDS[(seed + j) % 5] for j in range(len(kinds))]
        counts = collections.Counter(kinds)
        assert max(counts.values()) - min(counts.get(k, 0) for k in ROBOT_KINDS) <= 1


def test_lead_in_gaps_one_event_at_a_time_and_durations():
    for seed in range(40):
        schedule = corruption_schedule(seed, 200, H, W, RECIPE)
        assert all(events == [] for events in schedule[:rc.ROBOT_LEAD_IN])
        assert all(len(events) <= 1 for events in schedule)
        events = _events(schedule)
        assert events and events[0][0] >= rc.ROBOT_LEAD_IN
        for (start, n, kind, params), (next_start, *_) in zip(events, events[1:] + [(None,)]):
            lo, hi = ROBOT_FRAMES[kind]
            assert lo <= params["frames"] <= hi, (kind, params["frames"])
            if next_start is None:     # the last event may be cut by the sequence's end
                assert n <= params["frames"]
            else:
                assert n == params["frames"]
                assert next_start - (start + n) >= rc.ROBOT_MIN_GAP
            steps = [schedule[start + k][0][1]["step"] for k in range(n)]
            assert steps == list(range(n))


def test_parameters_are_within_the_documented_ranges():
    for seed in range(20):
        for _, n, kind, p in _events(corruption_schedule(seed, 200, 128, 256, RECIPE)):
            if kind == "wiper":
                assert rc.WIPER_COVER[0] <= p["cover"] <= rc.WIPER_COVER[1]
                assert rc.WIPER_SWEEP[0] <= p["sweep"] <= rc.WIPER_SWEEP[1]
                assert rc.WIPER_LEVEL[0] <= p["level"] <= rc.WIPER_LEVEL[1]
            elif kind == "heavy_noise":
                assert rc.HEAVY_NOISE_SIGMA[0] <= p["sigma"] <= rc.HEAVY_NOISE_SIGMA[1]
            elif kind == "glare":
                assert rc.GLARE_GAIN[0] <= p["gain"] <= rc.GLARE_GAIN[1]
                assert rc.GLARE_BLOOM[0] <= p["bloom"] <= rc.GLARE_BLOOM[1]
            elif kind == "night_blur":
                assert rc.NIGHT_GAIN[0] <= p["gain"] <= rc.NIGHT_GAIN[1]
                assert rc.NIGHT_SIGMA[0] <= p["sigma"] <= rc.NIGHT_SIGMA[1]
                lo, hi = (round(f * 256) for f in rc.NIGHT_BLUR)
                assert lo <= p["length"] <= hi


def test_schedule_does_not_depend_on_the_length_or_the_access_order():
    for seed in (3, 10001):
        short = corruption_schedule(seed, 30, H, W, RECIPE)
        assert repr(short) == repr(corruption_schedule(seed, 90, H, W, RECIPE)[:30])
    a = SynthSequence(10002, height=H, width=W, n_frames=40, corruption=RECIPE)
    b = SynthSequence(10002, height=H, width=W, n_frames=25, corruption=RECIPE)
    order = [24, 3, 17, 9, 12, 0, 20]
    frames_b = {i: b.frame(i) for i in order}
    for i in sorted(order):
        frame = a.frame(i)
        assert frame.corruptions == frames_b[i].corruptions
        np.testing.assert_array_equal(frame.image, frames_b[i].image)


def test_same_seed_same_frames_and_labels_stay_clean():
    clean = SynthSequence(10003, height=H, width=W, n_frames=40)
    first = SynthSequence(10003, height=H, width=W, n_frames=40, corruption=RECIPE)
    second = SynthSequence(10003, height=H, width=W, n_frames=40, corruption=RECIPE)
    assert first.corruption_log == second.corruption_log
    hit = 0
    for a, b, c in zip(first, second, clean):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.labels, c.labels)
        np.testing.assert_array_equal(a.instances, c.instances)
        np.testing.assert_array_equal(a.clean_image, c.image)
        if a.corruptions:
            hit += 1
            assert not np.array_equal(a.image, a.clean_image)
        else:
            np.testing.assert_array_equal(a.image, a.clean_image)
    assert hit > 0


def test_dropout_is_a_black_frame():
    video, i, _ = _first("dropout")
    assert not video.frame(i).image.any()


def test_wiper_is_a_dark_band_covering_the_stated_fraction_and_sweeping():
    video, i, p = _first("wiper")
    lefts = []
    for step in range(p["frames"]):
        frame = video.frame(i + step)
        assert frame.corruptions == ("wiper",)
        x0, x1 = wiper_columns(dict(p, step=step), W)
        assert 0 <= x0 < x1 <= W
        lefts.append(x0)
        changed = np.any(frame.image != frame.clean_image, axis=2)
        assert not changed[:, :x0].any() and not changed[:, x1:].any()
        band = frame.image[:, x0:x1].astype(np.float32)
        assert band.max() <= 255 * rc.WIPER_LEVEL[1] * 1.3 + 1
        assert band.mean() < 0.5 * frame.clean_image[:, x0:x1].mean()
        assert rc.WIPER_COVER[0] - 0.02 <= (x1 - x0) / W <= rc.WIPER_COVER[1] + 0.02
    moves = np.abs(np.diff(lefts)) / W
    assert np.all((moves >= rc.WIPER_SWEEP[0] - 0.02) & (moves <= rc.WIPER_SWEEP[1] + 0.02))


def test_heavy_noise_leaves_a_large_residual():
    video, i, _ = _first("heavy_noise")
    frame = video.frame(i)
    residual = frame.image.astype(np.float32) - frame.clean_image
    assert np.sqrt(np.mean(residual ** 2)) > 60.0       # sigma >= 100 before clipping
    if i + 1 < len(video) and video.corruption_log[i + 1] == ("heavy_noise",):
        other = video.frame(i + 1)
        assert not np.array_equal(other.image.astype(np.int16) - other.clean_image,
                                  residual.astype(np.int16))    # a new pattern every frame


def test_glare_is_brighter_with_a_bloom():
    video, i, p = _first("glare")
    frame = video.frame(i)
    image, clean = frame.image.astype(np.float32), frame.clean_image.astype(np.float32)
    assert image.mean() > 1.5 * clean.mean()
    assert np.all(image >= np.minimum(255.0, clean * p["gain"]) - 1.0)   # gain plus a bloom
    cy, cx = min(int(p["cy"]), H - 1), min(int(p["cx"]), W - 1)
    assert image[cy, cx].min() >= min(255.0, 255.0 * p["bloom"] * 0.9)


def test_night_blur_is_darker():
    video, i, p = _first("night_blur")
    frame = video.frame(i)
    assert frame.image.mean() < 0.5 * frame.clean_image.mean()
    assert frame.image.mean() < (p["gain"] + 0.1) * frame.clean_image.mean() + p["sigma"]
