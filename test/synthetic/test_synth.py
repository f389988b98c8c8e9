"""Tests of the synthetic street generator (lmanet_ros.synthetic).

The `lmanet synth` command is tested in test/tools/test_synth_cli.py."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from lmanet_ros import synthetic as synth
from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES, IGNORE_INDEX
from lmanet_ros.synthetic import corruption
from lmanet_ros.synthetic import (CAR, CLEAN_LEAD_IN, CORRUPTION_KINDS, HELDOUT_SEEDS, PERSON,
                                  REQUIRED_CLASSES, TRAIN_SEEDS, SynthSequence, frame_stamps)
from synthetic_helpers import H, W

THING_CLASSES = {synth.POLE, synth.TRAFFIC_LIGHT, synth.TRAFFIC_SIGN, PERSON, CAR}


def _sequence(seed: int = 3, n_frames: int = 12, corruption: str = "none") -> SynthSequence:
    return SynthSequence(seed, height=H, width=W, n_frames=n_frames, corruption=corruption)


def test_trainids_are_cityscapes():
    names = {synth.ROAD: "road", synth.SIDEWALK: "sidewalk", synth.BUILDING: "building",
             synth.POLE: "pole", synth.TRAFFIC_LIGHT: "traffic light",
             synth.TRAFFIC_SIGN: "traffic sign", synth.VEGETATION: "vegetation",
             synth.TERRAIN: "terrain", synth.SKY: "sky", PERSON: "person", CAR: "car"}
    for train_id, name in names.items():
        assert CITYSCAPES_CLASS_NAMES[train_id] == name
    assert synth.VOID == IGNORE_INDEX == 255


def test_seed_sets_are_fixed_and_disjoint():
    assert TRAIN_SEEDS == range(0, 1000)
    assert HELDOUT_SEEDS == range(10000, 10016)
    assert not set(TRAIN_SEEDS) & set(HELDOUT_SEEDS)
    assert synth.split_for_seed(HELDOUT_SEEDS[0]) == "val"
    assert synth.split_for_seed(TRAIN_SEEDS[5]) == "train"


def test_frames_have_the_documented_types():
    frame = _sequence().frame(5)
    assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
    assert frame.clean_image.shape == (H, W, 3) and frame.clean_image.dtype == np.uint8
    assert frame.labels.shape == (H, W) and frame.labels.dtype == np.uint8
    assert frame.instances.shape == (H, W) and frame.instances.dtype == np.int32
    assert frame.index == 5 and frame.time_s == pytest.approx(5 / synth.DEFAULT_RATE_HZ)
    assert set(np.unique(frame.labels)) <= set(range(19)) | {IGNORE_INDEX}


def test_same_seed_gives_identical_frames():
    first, second = _sequence(corruption="standard"), _sequence(corruption="standard")
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.instances, b.instances)
        assert a.corruptions == b.corruptions


def test_frames_do_not_depend_on_the_sequence_length_or_access_order():
    short, long = _sequence(n_frames=8, corruption="standard"), _sequence(
        n_frames=40, corruption="standard")
    for index in (7, 3, 0):  # random access, backwards
        a, b = short.frame(index), long.frame(index)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert short.corruption_log == long.corruption_log[:8]


def test_different_seeds_differ():
    a, b = _sequence(seed=1).frame(4), _sequence(seed=2).frame(4)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.labels, b.labels)


def test_the_camera_moves_and_objects_move():
    sequence = _sequence(n_frames=10)
    first, last = sequence.frame(0), sequence.frame(9)
    assert np.mean(first.labels != last.labels) > 0.02
    assert np.mean(np.abs(first.clean_image.astype(int) - last.clean_image.astype(int))) > 5


@pytest.mark.parametrize("seed", [0, 7, HELDOUT_SEEDS[0]])
def test_labels_contain_the_required_classes_over_a_sequence(seed):
    present = set()
    for frame in _sequence(seed=seed, n_frames=20):
        present |= set(np.unique(frame.labels).tolist())
    missing = set(REQUIRED_CLASSES) - present
    assert not missing, [CITYSCAPES_CLASS_NAMES[c] for c in missing]


@pytest.mark.parametrize("seed", [0, 5])
def test_labels_are_exact_where_objects_were_drawn(seed):
    """Every drawn object part's pixels carry its class, and every car / person label pixel
    belongs to a drawn car / person: the label of a thing is exactly where it was drawn."""
    cars_seen = persons_seen = 0
    for frame in _sequence(seed=seed, n_frames=15):
        classes = frame.instance_classes
        ids = np.unique(frame.instances)
        for instance_id in ids[ids > 0]:
            region = frame.instances == instance_id
            assert np.all(frame.labels[region] == classes[int(instance_id)])
        for train_id in (CAR, PERSON):
            drawn = np.isin(frame.instances, [k for k, c in classes.items() if c == train_id])
            np.testing.assert_array_equal(frame.labels == train_id, drawn)
        # Background pixels never carry a thing class.
        background = frame.labels[frame.instances == 0]
        assert not set(np.unique(background).tolist()) & THING_CLASSES
        cars_seen += int(np.any(frame.labels == CAR))
        persons_seen += int(np.any(frame.labels == PERSON))
    assert cars_seen and persons_seen


def test_a_car_is_drawn_in_the_image_where_its_label_is():
    """The pixels of a near car differ from what the background would be there."""
    sequence = _sequence(seed=0, n_frames=15)
    for frame in sequence:
        classes = frame.instance_classes
        cars = [k for k, c in classes.items() if c == CAR]
        areas = [(int(np.sum(frame.instances == k)), k) for k in cars]
        if areas and max(areas)[0] > 60:
            break
    else:
        pytest.fail("no car of more than 60 pixels in 15 frames")
    region = frame.instances == max(areas)[1]
    inside = frame.clean_image[region].astype(float).mean(axis=0)
    ring = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~region
    ring &= frame.instances == 0
    outside = frame.clean_image[ring].astype(float).mean(axis=0)
    assert np.abs(inside - outside).max() > 5


def test_corruption_changes_the_image_but_not_the_labels():
    clean = _sequence(seed=11, n_frames=40)
    corrupted = _sequence(seed=11, n_frames=40, corruption="standard")
    changed = 0
    for a, b in zip(clean, corrupted):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.instances, b.instances)
        np.testing.assert_array_equal(a.image, b.clean_image)
        assert a.corruptions == ()
        if b.corruptions:
            assert not np.array_equal(b.image, b.clean_image), b.corruptions
            changed += 1
        else:
            np.testing.assert_array_equal(b.image, b.clean_image)
    assert changed > 0


def test_standard_recipe_applies_every_kind_over_a_long_sequence():
    log = _sequence(seed=0, n_frames=300, corruption="standard").corruption_log
    assert len(log) == 300
    applied = {kind for kinds in log for kind in kinds}
    assert applied == set(CORRUPTION_KINDS)
    assert all(kinds == () for kinds in log[:CLEAN_LEAD_IN])
    # Occluders last 1..3 consecutive frames.
    runs, current = [], 0
    for kinds in log + [()]:
        if "occluder" in kinds:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert runs and max(runs) <= corruption.OCCLUDER_FRAMES[1] * 2  # two events may touch
    corrupted = sum(1 for kinds in log if kinds) / len(log)
    assert 0.1 < corrupted < 0.45


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_every_corruption_kind_changes_the_frame(kind):
    sequence = _sequence(seed=0, n_frames=300, corruption="standard")
    index = next(i for i, kinds in enumerate(sequence.corruption_log) if kind in kinds)
    frame = sequence.frame(index)
    assert kind in frame.corruptions
    assert np.mean(frame.image != frame.clean_image) > 0.01


@pytest.mark.parametrize("kwargs, name", [
    (dict(height=16), "height"), (dict(width=0), "width"), (dict(n_frames=0), "n_frames"),
    (dict(rate=0.0), "rate"), (dict(rate=float("nan")), "rate"),
    (dict(corruption="heavy"), "corruption"), (dict(seed=-1), "seed"),
])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, name):
    args = dict(seed=0, height=H, width=W, n_frames=4)
    args.update(kwargs)
    seed = args.pop("seed")
    with pytest.raises(ValueError, match=name):
        SynthSequence(seed, **args)


@pytest.mark.parametrize("index", [-1, 4, 1.5, True])
def test_frame_index_out_of_range(index):
    with pytest.raises(ValueError, match="index"):
        _sequence(n_frames=4).frame(index)


def test_frame_stamps_are_camera_like():
    stamps = frame_stamps(200, 17.0, 10**18, seed=4)
    assert stamps.dtype == np.int64 and stamps[0] == 10**18
    periods = np.diff(stamps) / 1e9
    assert np.all(periods > 0)
    assert abs(np.mean(periods) - 1 / 17) < 1e-3
    assert 0 < np.std(periods) < 0.01
    np.testing.assert_array_equal(stamps, frame_stamps(200, 17.0, 10**18, seed=4))


def test_generate_returns_what_it_wrote(tmp_path):
    result = synth.generate(tmp_path / "gen", frames=4, height=H, width=W, bag=None,
                            show_progress=False)
    assert result.bag is None and result.frames == 4
    assert result.description == tmp_path / "gen" / "sequences.json"
    (image_dir,), (label_dir,) = result.image_folders, result.label_folders
    assert sorted(p.name for p in image_dir.iterdir()) == [
        f"synth00000_{i:06d}_leftImg8bit.png" for i in range(4)]
    assert len(list(label_dir.glob("*_gtFine_labelTrainIds.png"))) == 4
    with pytest.raises(ValueError, match="nothing to write"):
        synth.generate(tmp_path / "none", frames=2, height=H, width=W, bag=None,
                       folder=False)
