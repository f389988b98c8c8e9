"""Clip datasets (lmanet_ros.training.datasets) on tiny folders written by the tests."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from training_helpers import CAR, HEIGHT, ROAD, SKY, WIDTH, scene, write_synth_tree

from lmanet_ros.sizes import parse_size
from lmanet_ros.training.datasets import (MAX_TRANSLATION, ClipDataset, DatasetError,
                                          build_clip_dataset, cityscapes_clips, label_histogram,
                                          synth_clips)


def reference_augment(array: np.ndarray, flip: bool, dy: int, dx: int, fill: int) -> np.ndarray:
    """Flip, then out[y, x] = in[y - dy, x - dx] (fill outside): written pixel by pixel."""
    src = array[:, ::-1] if flip else array
    out = np.full_like(array, fill)
    height, width = array.shape[:2]
    for y in range(height):
        for x in range(width):
            if 0 <= y - dy < height and 0 <= x - dx < width:
                out[y, x] = src[y - dy, x - dx]
    return out


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return write_synth_tree(tmp_path_factory.mktemp("synth"))


@pytest.mark.parametrize("clip_length, first_target, expected_targets", [
    (1, None, list(range(0, 8))),
    (4, None, list(range(3, 8))),
    (4, 5, [5, 6, 7]),
    (1, 5, [5, 6, 7]),
])
def test_synth_clip_assembly(synth_root, clip_length, first_target, expected_targets):
    clips = synth_clips(synth_root, "train", clip_length, first_target=first_target)
    assert len(clips) == 2 * len(expected_targets)
    dataset = ClipDataset(clips)
    for index, clip in enumerate(clips):
        frames, label = dataset[index]
        assert frames.shape == (clip_length, 3, HEIGHT, WIDTH) and frames.dtype == torch.uint8
        sequence = int(clip.sequence[-5:])
        # Frames oldest first, consecutive, ending at the labelled frame.
        numbers = [int(f[0, 0, 0]) for f in frames]
        assert numbers == list(range(clip.frame - clip_length + 1, clip.frame + 1))
        assert all(int(f[0, 0, 1]) == sequence for f in frames)
        # The label is that of the last frame, not of any other.
        assert np.array_equal(label.numpy(), scene(clip.frame, sequence)[1])
    assert sorted({c.frame for c in clips}) == expected_targets


def test_clips_of_a_delayed_model_end_one_frame_after_the_target(synth_root):
    """future_frames=1 (the delayed STF): frames t-1, t, t+1 for target t; the label is t's;
    the last frame of a sequence has no future and is no target."""
    clips = synth_clips(synth_root, "train", 3, future_frames=1)
    assert sorted({c.frame for c in clips}) == [2, 3, 4, 5, 6]  # 7 has no frame 8
    dataset = ClipDataset(clips)
    for index, clip in enumerate(clips):
        frames, label = dataset[index]
        numbers = [int(f[0, 0, 0]) for f in frames]
        assert numbers == [clip.frame - 1, clip.frame, clip.frame + 1]
        assert np.array_equal(label.numpy(), scene(clip.frame, int(clip.sequence[-5:]))[1])
    with pytest.raises(ValueError, match="future_frames"):
        synth_clips(synth_root, "train", 3, future_frames=3)


def test_synth_skips_unlabelled_frames_and_checks_arguments(tmp_path):
    root = write_synth_tree(tmp_path, sequences=1, frames=6, splits=("train",),
                            unlabelled=(4,))
    assert [c.frame for c in synth_clips(root, "train", 2)] == [1, 2, 3, 5]
    assert [c.frame for c in synth_clips(root, "train", 2, target_stride=2)] == [1, 3]
    with pytest.raises(ValueError, match="first_target"):
        synth_clips(root, "train", 4, first_target=2)
    with pytest.raises(DatasetError, match="missing folder"):
        synth_clips(root, "val", 2)
    with pytest.raises(DatasetError, match="no labelled frame"):
        synth_clips(root, "train", 7)
    with pytest.raises(ValueError, match="clip_length"):
        synth_clips(root, "train", 0)


def test_augmentation_is_identical_across_the_clip(synth_root):
    dataset = build_clip_dataset("synth", synth_root, "train", clip_length=3, augment=True,
                                 seed=7)
    plain = build_clip_dataset("synth", synth_root, "train", clip_length=3)
    draws = [dataset.augmentation(i) for i in range(len(dataset))]
    assert {d[0] for d in draws} == {False, True}
    checked_flip = False
    for index, (flip, dy, dx) in enumerate(draws):
        assert abs(dy) <= MAX_TRANSLATION and abs(dx) <= MAX_TRANSLATION
        frames, label = dataset[index]
        raw_frames, raw_label = plain[index]
        for frame, raw in zip(frames, raw_frames):
            expected = reference_augment(raw.permute(1, 2, 0).numpy(), flip, dy, dx, 0)
            assert np.array_equal(frame.permute(1, 2, 0).numpy(), expected)
        assert np.array_equal(label.numpy(), reference_augment(raw_label.numpy(), flip, dy, dx,
                                                               255))
        if flip:
            checked_flip = True
            # The green ramp (2 * x) runs right to left in every frame of a flipped clip.
            ramp = frames[:, 1, HEIGHT // 2, 4:WIDTH - 4].int()
            assert (ramp[:, 1:] < ramp[:, :-1]).all()
    assert checked_flip


def test_augmentation_draws_depend_on_seed_epoch_and_index_only(synth_root):
    dataset = build_clip_dataset("synth", synth_root, "train", clip_length=2, augment=True)
    epoch0 = [dataset.augmentation(i) for i in range(len(dataset))]
    dataset.set_epoch(1)
    epoch1 = [dataset.augmentation(i) for i in range(len(dataset))]
    assert epoch0 != epoch1
    dataset.set_epoch(0)
    assert [dataset.augmentation(i) for i in range(len(dataset))] == epoch0
    direct = [dataset[i][0] for i in range(len(dataset))]
    loader = DataLoader(dataset, batch_size=3, num_workers=2)
    batched = torch.cat([frames for frames, _ in loader])
    assert torch.equal(batched, torch.stack(direct))


def test_resize_to_working_size(synth_root):
    dataset = build_clip_dataset("synth", synth_root, "train", clip_length=2, size=(16, 32))
    frames, label = dataset[0]
    assert frames.shape == (2, 3, 16, 32) and label.shape == (16, 32)
    assert set(np.unique(label.numpy())) <= {SKY, ROAD, CAR, 255}  # nearest: no blends


def test_label_histogram(synth_root):
    dataset = build_clip_dataset("synth", synth_root, "train", clip_length=1)
    expected = np.zeros(19, np.int64)
    for clip in dataset.clips:
        label = scene(clip.frame, int(clip.sequence[-5:]))[1]
        for cls in (SKY, ROAD, CAR):
            expected[cls] += int((label == cls).sum())
    assert np.array_equal(label_histogram(dataset), expected)
    assert label_histogram(dataset, max_labels=3).sum() < expected.sum()


# Cityscapes labelIds -> trainIds, written out from cityscapesScripts' labels.py for the test.
CITYSCAPES_IDS = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255,
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8,
    22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17,
    33: 18,
}


def write_cityscapes_tree(root: Path, split: str = "train", city: str = "aachen",
                          snippets: int = 2) -> np.ndarray:
    """Sequence frames 000000..000029 of each snippet and the annotated _000019 labelIds."""
    label_ids = np.zeros((HEIGHT, WIDTH), np.uint8)
    label_ids.ravel()[:] = np.arange(HEIGHT * WIDTH) % 36  # every id 0..33 plus unknown 34, 35
    for snippet in range(snippets):
        image_dir = root / "leftImg8bit_sequence" / split / city
        label_dir = root / "gtFine" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{city}_{snippet:06d}"
        for frame in range(30):
            image = np.full((HEIGHT, WIDTH, 3), 7, np.uint8)
            image[0, 0] = (frame, snippet, 0)
            cv2.imwrite(str(image_dir / f"{stem}_{frame:06d}_leftImg8bit.png"), image)
        cv2.imwrite(str(label_dir / f"{stem}_000019_gtFine_labelIds.png"), label_ids)
        # Other gtFine files must not be taken for labels.
        cv2.imwrite(str(label_dir / f"{stem}_000019_gtFine_color.png"), label_ids)
    return label_ids


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    label_ids = write_cityscapes_tree(tmp_path)
    dataset = build_clip_dataset("cityscapes", tmp_path, "train", clip_length=4)
    assert len(dataset) == 2
    expected = np.vectorize(lambda i: CITYSCAPES_IDS.get(int(i), 255))(label_ids)
    for index, clip in enumerate(dataset.clips):
        frames, label = dataset[index]
        assert clip.frame == 19
        assert np.array_equal(label.numpy(), expected.astype(np.uint8))
        # Frames 16..19 of the right snippet, oldest first (BGR files read as RGB).
        assert [int(f[2, 0, 0]) for f in frames] == [16, 17, 18, 19]
        assert all(int(f[1, 0, 0]) == index for f in frames)


def test_cityscapes_missing_sequence_frame_is_an_error(tmp_path):
    write_cityscapes_tree(tmp_path, snippets=1)
    (tmp_path / "leftImg8bit_sequence/train/aachen/aachen_000000_000017_leftImg8bit.png").unlink()
    assert len(cityscapes_clips(tmp_path, "train", 2)) == 1  # frames 18, 19 still there
    with pytest.raises(DatasetError, match="000017"):
        cityscapes_clips(tmp_path, "train", 3)
    with pytest.raises(DatasetError, match="leftImg8bit_sequence"):
        cityscapes_clips(tmp_path / "nowhere", "train", 3)


@pytest.mark.parametrize("text, expected", [("128x256", (128, 256)), (" 64 X 8 ", (64, 8))])
def test_parse_size(text, expected):
    assert parse_size(text, multiple_of=8) == expected


@pytest.mark.parametrize("text", ["128", "128x0", "100x256", "axb", "-8x8"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text, multiple_of=8)


def test_dataset_kind_and_size_are_checked(synth_root):
    with pytest.raises(ValueError, match="dataset kind"):
        build_clip_dataset("kitti", synth_root, "train", clip_length=1)
    with pytest.raises(DatasetError, match="at least one clip"):
        ClipDataset([])


def test_hit_repeat_lists_corrupted_targets_more_often(tmp_path):
    """Targets whose image the corruption log marks are repeated; the rest appear once."""
    import json
    root = write_synth_tree(tmp_path, sequences=1, frames=8, splits=("train",))
    (root / "sequences.json").write_text(json.dumps({"runs": [{"sequences": [
        {"name": "synth00000", "corrupted_frames": {"5": ["dropout"], "6": ["glare"]}}]}]}))
    plain = [c.frame for c in synth_clips(root, "train", 2, first_target=4)]
    repeated = [c.frame for c in synth_clips(root, "train", 2, first_target=4, hit_repeat=3)]
    assert plain == [4, 5, 6, 7]
    assert repeated == [4, 5, 5, 5, 6, 6, 6, 7]
    with pytest.raises(ValueError, match="hit_repeat must be >= 1"):
        synth_clips(root, "train", 2, hit_repeat=0)
    (root / "sequences.json").write_text("{}")
    with pytest.raises(DatasetError, match="not an lmanet synth description"):
        synth_clips(root, "train", 2, hit_repeat=2)
