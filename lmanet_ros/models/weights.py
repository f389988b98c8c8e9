"""Weights as data: one record per (model, tag), and the rules that turn a checkpoint into settings.

In the spirit of torchvision's weights enums and timm's pretrained configs, a :class:`Weights`
record says everything known about a set of packaged weights before it is loaded: the file, the
classes and palette, the input normalisation, the input size it was trained at, the memory
length it was trained with and where it came from. ``checkpoint: demo`` (node parameter,
``--checkpoint demo``, ``MODEL:demo`` in ``lmanet eval --compare``) names the record of tag
``demo`` of the chosen model.

Three questions have one answer each, here:

- which file does a checkpoint value name: :func:`resolve_checkpoint` (a tag, a path, a mapping);
- which memory length T is in force: :func:`resolve_memory_length` (the explicit value, else the
  checkpoint's metadata, else the model's own T);
- which input size the weights were trained at: :func:`trained_input_size` (from metadata).

The demo weights are small fp16 safetensors in ``lmanet_ros/data/demo/`` trained by
``lmanet train`` on ``lmanet synth`` streets (``data/demo/TRAINING.md``): they know synthetic
streets at 128x256, not real cameras.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES, CITYSCAPES_COLORS

from .registry import model_entry
from .segmenter import ModelInfo

__all__ = ["DEMO", "DATA_DIR", "Weights", "register_weights", "get_weights", "list_weights",
           "weights_tags", "models_with_weights", "resolve_checkpoint", "resolve_memory_length",
           "memory_length_origin", "trained_input_size", "training_summary"]

#: The tag of the demo weights.
DEMO = "demo"
#: Package data: ``<DATA_DIR>/<tag>/<file>``.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

_CITYSCAPES_PALETTE = tuple(tuple(int(v) for v in rgb) for rgb in CITYSCAPES_COLORS)


@dataclass(frozen=True)
class Weights:
    """A packaged set of weights of one registered model.

    Attributes:
        model: the registry name of the model the weights belong to.
        tag: the name users give as checkpoint (e.g. ``demo``).
        file: file name under ``DATA_DIR / tag``.
        class_names: the K class names of the first K logits.
        palette: K (r, g, b) colours, one per class.
        normalisation: ``{"mean": [...], "std": [...]}`` of RGB in [0, 1], or None (the network
            takes RGB in [0, 1] as it is).
        input_size: (height, width) in pixels the weights were trained at, or None (unknown).
        memory_length: frames T of memory the weights were trained with (0: single frame).
        source: how the weights were made (the document with the exact commands).
        description: one line for listings.
    """

    model: str
    tag: str
    file: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    normalisation: Mapping[str, Any] | None
    input_size: tuple[int, int] | None
    memory_length: int
    source: str
    description: str = ""

    @property
    def path(self) -> Path:
        """Where the file lives in the installed package."""
        return DATA_DIR / self.tag / self.file


_WEIGHTS: dict[tuple[str, str], Weights] = {}


def register_weights(weights: Weights) -> Weights:
    """Add a record; ValueError for an unknown model or a (model, tag) registered twice."""
    model_entry(weights.model)  # raises for an unknown model
    key = (weights.model, weights.tag)
    if key in _WEIGHTS:
        raise ValueError(f"weights '{weights.tag}' of model '{weights.model}' already registered")
    if len(weights.palette) != len(weights.class_names):
        raise ValueError(f"weights {key}: {len(weights.class_names)} classes but "
                         f"{len(weights.palette)} colours")
    _WEIGHTS[key] = weights
    return weights


def list_weights(model: str | None = None) -> list[Weights]:
    """Every record (of ``model`` when given), sorted by model then tag."""
    return [_WEIGHTS[key] for key in sorted(_WEIGHTS) if model is None or key[0] == model]


def weights_tags() -> set[str]:
    """The tags that name weights of at least one model."""
    return {tag for _, tag in _WEIGHTS}


def models_with_weights(tag: str) -> list[str]:
    """Sorted names of the models that have weights tagged ``tag``."""
    return sorted(model for model, other in _WEIGHTS if other == tag)


def get_weights(model: str, tag: str) -> Weights:
    """The record of ``model``'s weights ``tag`` whose file is present.

    Raises:
        FileNotFoundError: no such record (the message names the models that have the tag), or
            its file is missing (a package installed without its data).
    """
    record = _WEIGHTS.get((model, tag))
    if record is None:
        owners = models_with_weights(tag)
        raise FileNotFoundError(f"no {tag} weights for model '{model}' ({tag} weights exist for: "
                                f"{', '.join(owners) if owners else 'no model'})")
    if not record.path.is_file():
        raise FileNotFoundError(f"{tag} weights {record.path} are missing: the package was "
                                f"installed without lmanet_ros/data/{tag}")
    return record


def resolve_checkpoint(model: str, checkpoint: str | os.PathLike | Mapping[str, Any] | None
                       ) -> tuple[str | os.PathLike | Mapping[str, Any] | None, Weights | None]:
    """What a checkpoint value names: (path, mapping or None; the record when it is a tag).

    A string equal to a registered tag (``demo``) names that tag's weights of ``model``; any other
    value (a path, a state_dict mapping, None for random weights) is returned as it is.

    Raises:
        FileNotFoundError: a tag without weights for ``model`` (see :func:`get_weights`).
    """
    if isinstance(checkpoint, str) and checkpoint.strip() in weights_tags():
        record = get_weights(model, checkpoint.strip())
        return record.path, record
    return checkpoint, None


def _memory_length(model: str | ModelInfo, explicit: int | None,
                   metadata: Mapping[str, Any] | None) -> tuple[int, str]:
    """(T in force, where it came from); see :func:`resolve_memory_length`."""
    if isinstance(model, str):
        entry = model_entry(model)
        temporal, own = entry.temporal, entry.default_memory_length
    else:
        temporal, own = model.temporal, model.memory_length
    if not temporal:
        return 0, "single frame"
    for origin, value in (("explicit", explicit),
                          ("checkpoint metadata", (metadata or {}).get("memory_length"))):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            name = "memory_length" if origin == "explicit" else f"{origin} memory_length"
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if value > 0:
            return value, origin
    return own, "the model's own"


def resolve_memory_length(model: str | ModelInfo, explicit: int | None,
                          metadata: Mapping[str, Any] | None = None) -> int:
    """The memory length T in force, the one rule of the package: ``explicit`` when > 0, else
    the checkpoint metadata's ``memory_length`` when > 0, else the model's own T; always 0 for a
    single-frame model.

    Args:
        model: a registry name (its own T is the registry's default) or the
            :class:`~lmanet_ros.models.segmenter.ModelInfo` of a built model (its own T is the
            one it was built with).
        explicit: the user's value (a parameter, a flag); None or 0: not given.
        metadata: the checkpoint's metadata, or None.

    Raises:
        ValueError: unknown model, or a negative or non-integer explicit value or metadata value.
    """
    return _memory_length(model, explicit, metadata)[0]


def memory_length_origin(model: str | ModelInfo, explicit: int | None,
                         metadata: Mapping[str, Any] | None = None) -> str:
    """Where :func:`resolve_memory_length`'s answer comes from, for logs: ``explicit``,
    ``checkpoint metadata``, ``the model's own`` or ``single frame``."""
    return _memory_length(model, explicit, metadata)[1]


def trained_input_size(metadata: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The (height, width) a checkpoint's metadata says it was trained at, or None.

    Raises:
        ValueError: ``input_size`` present but not two positive integers.
    """
    value = (metadata or {}).get("input_size")
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"checkpoint metadata input_size must be [height, width], got {value!r}")
    return int(value[0]), int(value[1])


def training_summary(metadata: Mapping[str, Any] | None, record: Weights | None = None) -> str:
    """What the weights were trained on, in words, for start-up logs and reports, e.g.
    ``"dataset 'synth' at 128x256, val mIoU 46.6 %"``; ``"no training metadata"`` when the
    checkpoint carries none (e.g. the published ``lmanet_erf_best.pth``).

    Args:
        metadata: the checkpoint's metadata (``dataset``, ``input_size``, ``val_miou`` as
            ``lmanet train`` writes them), or None.
        record: the packaged weights' record, whose trained size counts when the metadata has
            none.
    """
    metadata = metadata or {}
    size = trained_input_size(metadata) or (record.input_size if record is not None else None)
    what = " ".join(part for part in (
        f"dataset '{metadata['dataset']}'" if metadata.get("dataset") else "",
        f"at {size[0]}x{size[1]}" if size is not None else "") if part)
    miou = metadata.get("val_miou")
    if isinstance(miou, (int, float)) and not isinstance(miou, bool):
        what = ", ".join(part for part in (what, f"val mIoU {100 * float(miou):.1f} %") if part)
    return what or "no training metadata"


_DEMO_SOURCE = ("lmanet train on lmanet synth streets at 128x256: recipe standard-v1 (training "
                "seeds 0..59), then fine-tuned on robot-v2 (the same seeds, corrupted targets "
                "listed 4x), one CPU thread; lmanet_ros/data/demo/TRAINING.md has the exact "
                "commands and logs")


def _demo(model: str, memory_length: int, description: str) -> Weights:
    """The record of ``model``'s demo weights (``<model>_synth.safetensors``, 128x256)."""
    return register_weights(Weights(
        model=model, tag=DEMO, file=f"{model}_synth.safetensors",
        class_names=CITYSCAPES_CLASS_NAMES, palette=_CITYSCAPES_PALETTE, normalisation=None,
        input_size=(128, 256), memory_length=memory_length, source=_DEMO_SOURCE,
        description=description))


_demo("erfnet", 0, "demo ERFNet: 6,000 synthetic 128x256 images, then 4,500 robot-v2 images "
                   "(robot-v2 val mIoU 45.2)")
_demo("lmanet_erfnet", 3, "demo LMANet on ERFNet: the demo ERFNet frozen, its memory module "
                          "trained on 8,955 robot-v2 clips in 50 min (robot-v2 val mIoU 46.6)")
_demo("tmanet_erfnet", 2, "demo TMANet module on ERFNet: the demo ERFNet frozen, the module "
                          "trained on 5,430 robot-v2 clips in 20 min (robot-v2 val mIoU 47.2)")
_demo("stf_erfnet", 2, "demo STF on ERFNet (causal): the demo ERFNet frozen, STF trained on "
                       "3,415 robot-v2 clips in 20 min (robot-v2 val mIoU 46.6)")
_demo("stf_mar_erfnet", 2, "demo STF + MAR on ERFNet (causal): the demo ERFNet frozen, STF and "
                           "MAR trained on 3,775 robot-v2 clips in 20 min (robot-v2 val mIoU 46.7)")
_demo("stf_delayed_erfnet", 2, "demo delayed STF on ERFNet (labels of t-1): the demo STF "
                               "fine-tuned 12 min (1,975 robot-v2 clips) in its delayed form "
                               "(robot-v2 val mIoU 47.0)")
_demo("tdnet_erfnet", 3, "demo TDNet (TD4) on ERFNet: 4 sub-networks started from the demo "
                         "ERFNet's encoder, trained 55 min on 11,110 robot-v2 clips with "
                         "distillation from it (robot-v2 val mIoU 43.0, below ERFNet's 45.2)")
_demo("stf_mar_delayed_erfnet", 2, "demo delayed STF + MAR on ERFNet (labels of t-1): the demo "
                                   "STF + MAR fine-tuned 10 min (1,765 robot-v2 clips) in its "
                                   "delayed form (robot-v2 val mIoU 46.9)")
