"""Class sets (names and colours) and the Cityscapes label tables, as data.

The Cityscapes facts follow cityscapesScripts' ``helpers/labels.py``: 34 label ids (0..33) plus
``license plate`` (id -1), of which 19 are trained (trainIds 0..18); the rest map to trainId 255
(void, ignored in training and evaluation). No ROS imports: the node, the tools and the checkpoint
code share this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "IGNORE_INDEX",
    "MAX_CLASSES",
    "CityscapesLabel",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_CLASS_NAMES",
    "CITYSCAPES_COLORS",
    "LABEL_ID_TO_TRAIN_ID",
    "label_ids_to_train_ids",
    "ClassSet",
]

#: Train id of void pixels: ignored by the loss and the metrics; never a class of a ClassSet.
IGNORE_INDEX = 255
#: Most classes a ClassSet may hold: ids 0..254 fit a mono8 mask beside IGNORE_INDEX.
MAX_CLASSES = 255


class CityscapesLabel(NamedTuple):
    """One row of the Cityscapes label table."""

    name: str
    id: int  # labelId in the ground-truth ``*_labelIds.png`` images; -1: not in them
    train_id: int  # 0..18, or 255 (void); license plate carries -1 upstream, stored here as 255
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


def _label(name, label_id, train_id, category, category_id, has_instances, ignore, color):
    return CityscapesLabel(name, label_id, train_id, category, category_id, has_instances, ignore,
                           color)


#: The full Cityscapes table, in labelId order (license plate last), after cityscapesScripts.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    _label("unlabeled", 0, 255, "void", 0, False, True, (0, 0, 0)),
    _label("ego vehicle", 1, 255, "void", 0, False, True, (0, 0, 0)),
    _label("rectification border", 2, 255, "void", 0, False, True, (0, 0, 0)),
    _label("out of roi", 3, 255, "void", 0, False, True, (0, 0, 0)),
    _label("static", 4, 255, "void", 0, False, True, (0, 0, 0)),
    _label("dynamic", 5, 255, "void", 0, False, True, (111, 74, 0)),
    _label("ground", 6, 255, "void", 0, False, True, (81, 0, 81)),
    _label("road", 7, 0, "flat", 1, False, False, (128, 64, 128)),
    _label("sidewalk", 8, 1, "flat", 1, False, False, (244, 35, 232)),
    _label("parking", 9, 255, "flat", 1, False, True, (250, 170, 160)),
    _label("rail track", 10, 255, "flat", 1, False, True, (230, 150, 140)),
    _label("building", 11, 2, "construction", 2, False, False, (70, 70, 70)),
    _label("wall", 12, 3, "construction", 2, False, False, (102, 102, 156)),
    _label("fence", 13, 4, "construction", 2, False, False, (190, 153, 153)),
    _label("guard rail", 14, 255, "construction", 2, False, True, (180, 165, 180)),
    _label("bridge", 15, 255, "construction", 2, False, True, (150, 100, 100)),
    _label("tunnel", 16, 255, "construction", 2, False, True, (150, 120, 90)),
    _label("pole", 17, 5, "object", 3, False, False, (153, 153, 153)),
    _label("polegroup", 18, 255, "object", 3, False, True, (153, 153, 153)),
    _label("traffic light", 19, 6, "object", 3, False, False, (250, 170, 30)),
    _label("traffic sign", 20, 7, "object", 3, False, False, (220, 220, 0)),
    _label("vegetation", 21, 8, "nature", 4, False, False, (107, 142, 35)),
    _label("terrain", 22, 9, "nature", 4, False, False, (152, 251, 152)),
    _label("sky", 23, 10, "sky", 5, False, False, (70, 130, 180)),
    _label("person", 24, 11, "human", 6, True, False, (220, 20, 60)),
    _label("rider", 25, 12, "human", 6, True, False, (255, 0, 0)),
    _label("car", 26, 13, "vehicle", 7, True, False, (0, 0, 142)),
    _label("truck", 27, 14, "vehicle", 7, True, False, (0, 0, 70)),
    _label("bus", 28, 15, "vehicle", 7, True, False, (0, 60, 100)),
    _label("caravan", 29, 255, "vehicle", 7, True, True, (0, 0, 90)),
    _label("trailer", 30, 255, "vehicle", 7, True, True, (0, 0, 110)),
    _label("train", 31, 16, "vehicle", 7, True, False, (0, 80, 100)),
    _label("motorcycle", 32, 17, "vehicle", 7, True, False, (0, 0, 230)),
    _label("bicycle", 33, 18, "vehicle", 7, True, False, (119, 11, 32)),
    _label("license plate", -1, 255, "vehicle", 7, False, True, (0, 0, 142)),
)

_TRAINED = sorted((label for label in CITYSCAPES_LABELS if label.train_id != IGNORE_INDEX),
                  key=lambda label: label.train_id)

#: The 19 Cityscapes class names in trainId order.
CITYSCAPES_CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAINED)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


#: The 19 standard Cityscapes colours (RGB) in trainId order, (19, 3) uint8, read-only.
CITYSCAPES_COLORS: np.ndarray = _read_only(
    np.array([label.color for label in _TRAINED], dtype=np.uint8))


def _label_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if label.id >= 0:
            lut[label.id] = label.train_id
    return _read_only(lut)


#: labelId -> trainId lookup table, 256 uint8 entries; void and unknown ids give 255. Read-only.
LABEL_ID_TO_TRAIN_ID: np.ndarray = _label_lut()


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes ``*_labelIds.png`` mask (uint8) to trainIds (uint8, void = 255)."""
    label_ids = np.asarray(label_ids)
    if label_ids.dtype != np.uint8:
        raise ValueError(f"label ids must be uint8, got {label_ids.dtype}")
    return LABEL_ID_TO_TRAIN_ID[label_ids]


def _normalise_colors(colors: Any, count: int) -> np.ndarray:
    try:
        array = np.asarray(colors)
    except (ValueError, TypeError):
        raise ValueError("colors must be a (K, 3) array of numbers (ragged input)") from None
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"colors must be numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"colors must have shape (K, 3), got {array.shape}")
    if array.shape[0] != count:
        raise ValueError(f"{count} class names but {array.shape[0]} colors")
    if array.size and not np.issubdtype(array.dtype, np.unsignedinteger):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError("colors must be whole numbers")
    if array.size and (array.min() < 0 or array.max() > 255):
        bad = int(np.argmax(np.any((array < 0) | (array > 255), axis=1)))
        raise ValueError(f"color of class {bad} out of range 0..255: {array[bad].tolist()}")
    return _read_only(array.astype(np.uint8))


@dataclass(frozen=True, eq=False)
class ClassSet:
    """The classes a model predicts: names and RGB colours, index = class id (trainId).

    Validated on construction: 1..255 classes (255 is :data:`IGNORE_INDEX`), non-empty and unique
    names, one colour per class with components in 0..255. ``colors`` is stored as a read-only
    ``(K, 3)`` uint8 array; the object is immutable, hashable and compares by value.
    """

    names: tuple[str, ...]
    colors: np.ndarray

    def __post_init__(self) -> None:
        if isinstance(self.names, str):
            raise ValueError("names must be a sequence of class names, not one string")
        names = tuple(self.names)
        if not 1 <= len(names) <= MAX_CLASSES:
            raise ValueError(f"a class set needs 1..{MAX_CLASSES} classes, got {len(names)}")
        for index, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"class {index} has an empty or non-string name: {name!r}")
        seen: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in seen:
                raise ValueError(f"class name {name!r} is used twice (ids {seen[name]}, {index})")
            seen[name] = index
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "colors", _normalise_colors(self.colors, len(names)))

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassSet):
            return NotImplemented
        return self.names == other.names and np.array_equal(self.colors, other.colors)

    def __hash__(self) -> int:
        return hash((self.names, self.colors.tobytes()))

    def __repr__(self) -> str:
        return f"ClassSet({len(self.names)} classes: {', '.join(self.names[:4])}" + (
            ", ...)" if len(self.names) > 4 else ")")

    @classmethod
    def cityscapes(cls) -> "ClassSet":
        """The 19 Cityscapes training classes with their standard colours."""
        return cls(CITYSCAPES_CLASS_NAMES, CITYSCAPES_COLORS)

    @classmethod
    def from_flat(cls, names: Sequence[str], flat_palette: Iterable[int]) -> "ClassSet":
        """Build from names and a flat ``[r, g, b, r, g, b, ...]`` palette (ROS parameters)."""
        flat = list(flat_palette)
        if len(flat) != 3 * len(names):
            raise ValueError(f"flat palette has {len(flat)} values, {len(names)} classes need "
                             f"{3 * len(names)} (r, g, b per class)")
        colors = np.asarray(flat).reshape(-1, 3) if flat else np.zeros((0, 3), dtype=np.uint8)
        return cls(tuple(names), colors)

    def flat_palette(self) -> list[int]:
        """The colours as a flat ``[r, g, b, ...]`` list of ints (for ROS parameters)."""
        return [int(value) for value in self.colors.reshape(-1)]

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-able description: ``{"names": [...], "colors": [[r, g, b], ...]}``."""
        return {"names": list(self.names), "colors": self.colors.tolist()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "ClassSet":
        """Inverse of :meth:`to_metadata`; a missing or malformed entry raises ValueError."""
        if not isinstance(metadata, Mapping):
            raise ValueError(f"class metadata must be a mapping, got {type(metadata).__name__}")
        missing = [key for key in ("names", "colors") if key not in metadata]
        if missing:
            raise ValueError(f"class metadata lacks {', '.join(missing)}")
        names = metadata["names"]
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ValueError("class metadata 'names' must be a list of strings")
        return cls(tuple(names), metadata["colors"])
