"""MMSegmentation (0.x) checkpoints: their ResNetV1c-D8 backbone and their keys in our names.

An mmseg ``EncoderDecoder`` checkpoint is an mmcv dict ``{"meta": {...}, "state_dict": {...},
"optimizer": {...}}`` (:func:`lmanet_ros.models.checkpoint.read_state_dict` unwraps it and keeps
``meta`` as the report's metadata). Its state_dict (``shared/docs/temporal-modules.md`` sections
1.2 and 1.8) holds:

- ``backbone.stem.{0,3,6}.weight`` (the three 3x3 convolutions of the deep stem) and
  ``backbone.stem.{1,4,7}.*`` (their batch norms); the max-pool (``backbone.maxpool``) has no
  parameters;
- ``backbone.layer{1..4}.{block}.{conv1,bn1,conv2,bn2,conv3,bn3}.*`` and
  ``backbone.layer{1..4}.0.downsample.{0,1}.*`` (style ``pytorch``: the stride on the 3x3);
- ``decode_head.*``: the model's head (TMANet: ``memory_key_conv`` ... ``conv_seg``; PSPNet:
  ``psp_modules``, ``bottleneck``, ``conv_seg``);
- ``auxiliary_head.*``: the FCN head on stage 3, used in training only.

Our backbone is :class:`~lmanet_ros.models.resnet.DilatedResNet` built by :func:`resnet_v1c`: the
stem is ``layer0`` (the same indices 0 .. 8, the max-pool at 9) and ``layer1`` .. ``layer4`` have
mmseg's inner names, so the backbone renaming is ``backbone.stem.N`` -> ``encoder.layer0.N`` and
``backbone.layerN`` -> ``encoder.layerN``. What ``decode_head.*`` becomes is the model's business
(:func:`rename_mmseg_state_dict`'s ``head_renames``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .resnet import DilatedResNet

__all__ = ["MMSEG_IGNORED_PREFIXES", "resnet_v1c", "mmcv_state_dict", "is_mmseg_state_dict",
           "rename_mmseg_state_dict"]

#: The backbone's keys: mmseg's name -> ours without the encoder prefix.
_BACKBONE_RENAMES = ((re.compile(r"^backbone\.stem\."), "layer0."),
                     (re.compile(r"^backbone\.(layer[1-4])\."), r"\1."))
#: Keys of an mmseg checkpoint that no model here has: the auxiliary (training-only) head.
MMSEG_IGNORED_PREFIXES = ("auxiliary_head.",)
_HEAD = "decode_head."


def resnet_v1c(depth: int = 50) -> DilatedResNet:
    """mmseg's ``ResNetV1c`` dilated to output stride 8 (``r50-d8``): deep stem 3 -> 32 (stride
    2) -> 32 -> 64 and max-pool, stage strides (1, 2, 1, 1), dilations (1, 1, 2, 4) with
    ``contract_dilation``. (B, 3, H, W) -> (B, 2048, ceil(H / 8), ceil(W / 8))."""
    return DilatedResNet(depth, stem_channels=64, contract_dilation=True)


def mmcv_state_dict(checkpoint: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """(state_dict, meta) of an mmcv checkpoint dict; a plain state_dict is returned with an
    empty meta."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        return checkpoint, {}
    meta = checkpoint.get("meta")
    return state, dict(meta) if isinstance(meta, Mapping) else {}


def is_mmseg_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` has mmseg's layout: keys under both ``backbone.`` and ``decode_head.``."""
    return (any(key.startswith("backbone.") for key in state)
            and any(key.startswith(_HEAD) for key in state))


def rename_mmseg_state_dict(state: Mapping[str, Any], head_renames: Sequence[tuple[str, str]],
                            *, encoder: str = "encoder.",
                            ignored_prefixes: Sequence[str] = MMSEG_IGNORED_PREFIXES,
                            layout: str = "mmseg"
                            ) -> tuple[dict[str, torch.Tensor], tuple[str, ...], str] | None:
    """An mmseg ``EncoderDecoder`` state_dict in our names, for a model's
    ``from_published_state_dict`` (see :func:`lmanet_ros.models.checkpoint.load_checkpoint`).

    Args:
        state: the state_dict (``module.`` already stripped), or the whole mmcv checkpoint
            dict (``{"state_dict": ..., "meta": ...}``; ``meta`` is dropped here).
        head_renames: ``(mmseg prefix, our prefix)`` pairs for the keys under ``decode_head.``,
            tried in order on the part after ``decode_head.``; the first that matches replaces
            that prefix (``""`` matches every key). A head key that matches none keeps its
            ``decode_head.`` name, so that a strict load names it as unexpected. TMANet:
            ``(("conv_seg.", "decoder.conv_seg."), ("", ""))``; a PSPNet would map e.g.
            ``("psp_modules.", "ppm.features.")``.
        encoder: our prefix of the backbone (``encoder.``).
        ignored_prefixes: mmseg keys skipped on purpose (the auxiliary head), reported back.
        layout: the layout's name for :attr:`~lmanet_ros.models.checkpoint.LoadReport.layout`.

    Returns:
        (state_dict in our names, the keys ignored, ``layout``); None when ``state`` is not in
        mmseg's layout (:func:`is_mmseg_state_dict`), e.g. a checkpoint in our own names.
        Backbone keys other than the stem's and the stages' (a classifier ``backbone.fc.*``)
        keep their names, so that a strict load names them as unexpected.
    """
    state, _ = mmcv_state_dict(state)
    if not is_mmseg_state_dict(state):
        return None
    ignored = tuple(key for key in state if key.startswith(tuple(ignored_prefixes)))
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in ignored:
            continue
        renamed[_renamed_key(key, head_renames, encoder)] = tensor
    return renamed, ignored, layout


def _renamed_key(key: str, head_renames: Sequence[tuple[str, str]], encoder: str) -> str:
    """One mmseg key in our names (unchanged where no rule applies)."""
    for pattern, replacement in _BACKBONE_RENAMES:
        if pattern.match(key):
            return encoder + pattern.sub(replacement, key)
    if key.startswith(_HEAD):
        rest = key[len(_HEAD):]
        for old, new in head_renames:
            if rest.startswith(old):
                return new + rest[len(old):]
    return key
