"""Tests for lmanet_ros.classes: Cityscapes tables and ClassSet."""
import json

import numpy as np
import pytest

from lmanet_ros.classes import (
    CITYSCAPES_CLASS_NAMES,
    CITYSCAPES_COLORS,
    CITYSCAPES_LABELS,
    IGNORE_INDEX,
    LABEL_ID_TO_TRAIN_ID,
    ClassSet,
    label_ids_to_train_ids,
)

EXPECTED_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)


def test_cityscapes_class_names_in_train_id_order():
    assert CITYSCAPES_CLASS_NAMES == EXPECTED_NAMES
    assert IGNORE_INDEX == 255


@pytest.mark.parametrize("train_id, color", [
    (0, (128, 64, 128)),   # road
    (1, (244, 35, 232)),   # sidewalk
    (2, (70, 70, 70)),     # building
    (8, (107, 142, 35)),   # vegetation
    (10, (70, 130, 180)),  # sky
    (11, (220, 20, 60)),   # person
    (13, (0, 0, 142)),     # car
    (18, (119, 11, 32)),   # bicycle
])
def test_cityscapes_colors(train_id, color):
    assert CITYSCAPES_COLORS.shape == (19, 3) and CITYSCAPES_COLORS.dtype == np.uint8
    assert tuple(CITYSCAPES_COLORS[train_id]) == color


@pytest.mark.parametrize("label_id, train_id", [
    (0, 255), (1, 255), (3, 255), (6, 255),
    (7, 0), (8, 1), (9, 255), (10, 255), (11, 2), (12, 3), (13, 4),
    (14, 255), (15, 255), (16, 255), (17, 5), (18, 255), (19, 6), (20, 7), (21, 8), (22, 9),
    (23, 10), (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (29, 255), (30, 255),
    (31, 16), (32, 17), (33, 18),
    (34, 255), (100, 255), (254, 255), (255, 255),  # unknown ids are void
])
def test_label_id_to_train_id(label_id, train_id):
    assert LABEL_ID_TO_TRAIN_ID[label_id] == train_id


def test_label_table_shape_and_consistency():
    assert LABEL_ID_TO_TRAIN_ID.shape == (256,) and LABEL_ID_TO_TRAIN_ID.dtype == np.uint8
    ids = [label.id for label in CITYSCAPES_LABELS]
    assert ids == list(range(34)) + [-1]
    assert CITYSCAPES_LABELS[-1].name == "license plate"
    trained = [label.train_id for label in CITYSCAPES_LABELS if label.train_id != 255]
    assert sorted(trained) == list(range(19))
    # Trained labels are exactly those not ignored in evaluation.
    for label in CITYSCAPES_LABELS:
        assert (label.train_id == 255) == label.ignore_in_eval, label.name


def test_tables_are_read_only():
    with pytest.raises(ValueError):
        LABEL_ID_TO_TRAIN_ID[0] = 3
    with pytest.raises(ValueError):
        CITYSCAPES_COLORS[0, 0] = 3


def test_label_ids_to_train_ids():
    mask = np.array([[7, 26, 0], [33, 200, 24]], np.uint8)
    np.testing.assert_array_equal(label_ids_to_train_ids(mask), [[0, 13, 255], [18, 255, 11]])
    with pytest.raises(ValueError, match="uint8"):
        label_ids_to_train_ids(mask.astype(np.int32))


def test_classset_cityscapes():
    classes = ClassSet.cityscapes()
    assert classes.names == EXPECTED_NAMES
    assert classes.num_classes == len(classes) == 19
    np.testing.assert_array_equal(classes.colors, CITYSCAPES_COLORS)
    assert classes.names[13] == "car"


def test_classset_is_immutable_hashable_and_compares_by_value():
    a = ClassSet(["a", "b"], [[1, 2, 3], [4, 5, 6]])
    b = ClassSet(("a", "b"), np.array([[1, 2, 3], [4, 5, 6]], np.int64))
    c = ClassSet(("a", "b"), [[1, 2, 3], [4, 5, 7]])
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert isinstance(a.names, tuple)
    assert a.colors.dtype == np.uint8 and not a.colors.flags.writeable
    with pytest.raises(AttributeError):
        a.names = ("x", "y")
    with pytest.raises(ValueError):
        a.colors[0, 0] = 9


def test_classset_copies_colors():
    colors = np.array([[1, 2, 3]], np.uint8)
    classes = ClassSet(("a",), colors)
    colors[0, 0] = 99
    assert classes.colors[0, 0] == 1


@pytest.mark.parametrize("names, colors, message", [
    ((), np.zeros((0, 3)), "1..255 classes"),
    (tuple(f"c{i}" for i in range(256)), np.zeros((256, 3)), "1..255 classes"),
    (("a", "b"), [[0, 0, 0]], "2 class names but 1 colors"),
    (("a",), [[0, 0, 0], [1, 1, 1]], "1 class names but 2 colors"),
    (("a", ""), [[0, 0, 0], [1, 1, 1]], "class 1 has an empty"),
    (("a", "  "), [[0, 0, 0], [1, 1, 1]], "class 1 has an empty"),
    (("a", 3), [[0, 0, 0], [1, 1, 1]], "non-string"),
    (("a", "a"), [[0, 0, 0], [1, 1, 1]], "used twice"),
    ("road", [[0, 0, 0]] * 4, "not one string"),
    (("a", "b"), [[0, 0, 0], [1, 256, 1]], r"class 1 out of range 0\.\.255: \[1, 256, 1\]"),
    (("a",), [[-1, 0, 0]], "out of range"),
    (("a",), [[0.5, 0, 0]], "whole numbers"),
    (("a",), [[0, 0]], r"shape \(K, 3\)"),
    (("a",), [["r", "g", "b"]], "numbers"),
    (("a", "b"), [[0, 0, 0], [1, 1]], "ragged|numbers"),  # numpy < 2 makes an object array
])
def test_classset_validation(names, colors, message):
    with pytest.raises(ValueError, match=message):
        ClassSet(names, colors)


def test_classset_255_classes_is_the_maximum():
    names = tuple(f"class {i}" for i in range(255))
    assert len(ClassSet(names, np.zeros((255, 3), np.uint8))) == 255


def test_from_flat():
    classes = ClassSet.from_flat(["sky", "road"], [70, 130, 180, 128, 64, 128])
    assert classes.names == ("sky", "road")
    np.testing.assert_array_equal(classes.colors, [[70, 130, 180], [128, 64, 128]])
    assert classes.flat_palette() == [70, 130, 180, 128, 64, 128]
    assert all(type(value) is int for value in classes.flat_palette())


@pytest.mark.parametrize("names, flat, message", [
    (["a", "b"], [1, 2, 3, 4, 5], "5 values, 2 classes need 6"),
    (["a"], [], "0 values"),
    ([], [], "1..255 classes"),
    (["a"], [1, 2, 300], "out of range"),
])
def test_from_flat_errors(names, flat, message):
    with pytest.raises(ValueError, match=message):
        ClassSet.from_flat(names, flat)


def test_metadata_roundtrip_through_json():
    classes = ClassSet.cityscapes()
    metadata = json.loads(json.dumps(classes.to_metadata()))
    assert metadata["names"][0] == "road" and metadata["colors"][0] == [128, 64, 128]
    assert ClassSet.from_metadata(metadata) == classes


@pytest.mark.parametrize("metadata, message", [
    ({"names": ["a"]}, "lacks colors"),
    ({}, "lacks names, colors"),
    ([1, 2], "must be a mapping"),
    ({"names": "road", "colors": [[0, 0, 0]]}, "list of strings"),
    ({"names": ["a"], "colors": [[0, 0, 0], [1, 1, 1]]}, "1 class names but 2 colors"),
])
def test_from_metadata_errors(metadata, message):
    with pytest.raises(ValueError, match=message):
        ClassSet.from_metadata(metadata)
