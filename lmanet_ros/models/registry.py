"""Model registry: the names users type, mapped to keyword-only builders.

>>> model = build_model("lmanet_erfnet", num_classes=20, memory_length=4)
>>> list_models()
['erfnet', 'lmanet_erfnet', 'lmanet_pspnet101', 'lmanet_pspnet50', 'pspnet101', 'pspnet50',
 'tmanet_erfnet']

A builder takes ``num_classes`` and ``memory_length`` keyword arguments and returns a
:class:`~lmanet_ros.models.segmenter.Segmenter`. New networks (other temporal modules) register
themselves with :func:`register_model`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from .erfnet import ERFNetDecoder, ERFNetEncoder
from .segmenter import Segmenter, SingleFrameSegmenter, TemporalSegmenter, _check_positive_int
from .pspnet import IMAGENET_MEAN, IMAGENET_STD, PSPNetDecoder, PyramidPooling
from .resnet import RESNET_BLOCKS, DilatedResNet
from .temporal import LocalMemoryModule, SigmoidDownFusion
from .tmanet import TemporalMemoryAttention

__all__ = ["ModelEntry", "register_model", "build_model", "list_models", "model_entry"]

Builder = Callable[..., Segmenter]
#: Maps a single-frame network's state_dict onto a built model's names (see ModelEntry).
SingleFrameInit = Callable[[Segmenter, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and what is known before building it.

    ``default_memory_length`` is the memory length T a temporal model is built with when none is
    given (the published evaluation setting: 4 for LMANet on ERFNet, 3 on PSPNet, 2 for TMANet
    as on Cityscapes).

    ``single_frame_init`` is None when a single-frame checkpoint (``erfnet``) loads into the
    model under its own names (LMANet, TMANet, STF: encoder and decoder are shared); otherwise
    it maps such a state_dict onto the model's names (TDNet: the encoder into every path's
    sub-network), for ``lmanet train --init``. ``output_delay_frames`` is the built model's
    (1 for the delayed STF forms: labels of the previous frame), known without building it.
    """

    name: str
    builder: Builder
    temporal: bool
    description: str
    default_memory_length: int = 4
    single_frame_init: SingleFrameInit | None = None
    output_delay_frames: int = 0


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, temporal: bool, description: str = "",
                   default_memory_length: int = 4,
                   single_frame_init: SingleFrameInit | None = None,
                   output_delay_frames: int = 0) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(*, num_classes, memory_length)`` under ``name``.

    Raises:
        ValueError: the name is already registered (or not a non-empty identifier), or a
            default memory length below 1.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model name must be an identifier, got {name!r}")
    _check_positive_int("default_memory_length", default_memory_length)

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = ModelEntry(name, builder, temporal, description,
                                     default_memory_length, single_frame_init,
                                     output_delay_frames)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; ValueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known models: "
                         f"{', '.join(list_models())}") from None


def build_model(name: str, *, num_classes: int = 20,
                memory_length: int | None = None) -> Segmenter:
    """Build the named model with freshly initialised weights (see :func:`list_models`).

    Args:
        name: registry name, e.g. ``"erfnet"`` (single frame) or ``"lmanet_erfnet"``.
        num_classes: output channels (20 for Cityscapes: 19 trainIds + void).
        memory_length: frames T the memory holds (>= 1); None: the model's default
            (:attr:`ModelEntry.default_memory_length`). Accepted and unused by single-frame
            models.

    Raises:
        ValueError: unknown name (the message lists the known ones) or a bad argument.
    """
    entry = model_entry(name)
    if memory_length is None:
        memory_length = entry.default_memory_length
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("memory_length", memory_length, minimum=0 if not entry.temporal else 1)
    return entry.builder(num_classes=num_classes, memory_length=memory_length)


@register_model("erfnet", temporal=False,
                description="ERFNet, single frame (Romera et al. 2018), input [0, 1] RGB")
def _erfnet(*, num_classes: int, memory_length: int) -> Segmenter:
    del memory_length  # single frame
    return SingleFrameSegmenter("erfnet", ERFNetEncoder(num_classes=num_classes),
                                ERFNetDecoder(num_classes), num_classes=num_classes)


@register_model("lmanet_erfnet", temporal=True,
                description="LMANet on ERFNet: local memory attention (P=21) over T past frames")
def _lmanet_erfnet(*, num_classes: int, memory_length: int) -> Segmenter:
    temporal = LocalMemoryModule(in_channels=ERFNetEncoder.out_channels, key_channels=16,
                                 value_channels=64)
    return TemporalSegmenter("lmanet_erfnet", ERFNetEncoder(), temporal,
                             ERFNetDecoder(num_classes), num_classes=num_classes,
                             memory_length=memory_length)


@register_model("tmanet_erfnet", temporal=True, default_memory_length=2,
                description="TMANet's temporal memory attention on ERFNet: per-slot keys/values "
                            "of T past frames, global attention over all of them")
def _tmanet_erfnet(*, num_classes: int, memory_length: int) -> Segmenter:
    # memory_length fixes the number of slots (per-slot weights); Ck 32, Cv 64 at ERFNet scale.
    temporal = TemporalMemoryAttention(in_channels=ERFNetEncoder.out_channels,
                                       slots=memory_length, key_channels=32, value_channels=64,
                                       out_channels=ERFNetDecoder.in_channels)
    return TemporalSegmenter("tmanet_erfnet", ERFNetEncoder(), temporal,
                             ERFNetDecoder(num_classes), num_classes=num_classes,
                             memory_length=memory_length)


def _pspnet_options(num_classes: int) -> dict[str, Any]:
    """What both PSPNet segmenters share: normalisation, the 8k + 1 size rule, the PPM neck."""
    return {"num_classes": num_classes, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "output_stride": DilatedResNet.output_stride, "size_offset": 1,
            "neck": {"ppm": PyramidPooling(DilatedResNet.out_channels, (1, 2, 3, 6), 512)}}


def _pspnet(depth: int, *, num_classes: int, memory_length: int) -> Segmenter:
    del memory_length  # single frame
    return SingleFrameSegmenter(f"pspnet{depth}", DilatedResNet(depth),
                                PSPNetDecoder(num_classes), **_pspnet_options(num_classes))


def _lmanet_pspnet(depth: int, *, num_classes: int, memory_length: int) -> Segmenter:
    channels = DilatedResNet.out_channels
    temporal = LocalMemoryModule(in_channels=channels, key_channels=128, value_channels=None,
                                 fusion=SigmoidDownFusion(channels, 256))
    return TemporalSegmenter(f"lmanet_pspnet{depth}", DilatedResNet(depth), temporal,
                             PSPNetDecoder(num_classes), memory_length=memory_length,
                             **_pspnet_options(num_classes))


for _depth in sorted(RESNET_BLOCKS):
    register_model(f"pspnet{_depth}", temporal=False,
                   description=f"PSPNet on a dilated ResNet-{_depth} (Zhao et al. 2017), single "
                               f"frame, ImageNet-normalised input")(partial(_pspnet, _depth))
    register_model(f"lmanet_pspnet{_depth}", temporal=True, default_memory_length=3,
                   description=f"LMANet on PSPNet-{_depth}: local memory attention over the "
                               f"2048-channel features of T past frames"
                   )(partial(_lmanet_pspnet, _depth))
del _depth
