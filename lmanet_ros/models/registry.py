"""Model registry: the names users type, mapped to keyword-only builders.

>>> model = build_model("lmanet_erfnet", num_classes=20, memory_length=4)
>>> list_models()
['erfnet', 'lmanet_erfnet']

A builder takes ``num_classes`` and ``memory_length`` keyword arguments and returns a
:class:`~lmanet_ros.models.lmanet.Segmenter`. New networks (``pspnet101``,
``lmanet_pspnet101``, other temporal modules) register themselves with :func:`register_model`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .erfnet import ERFNetDecoder, ERFNetEncoder
from .lmanet import Segmenter, SingleFrameSegmenter, TemporalSegmenter, _check_positive_int
from .temporal import LocalMemoryModule

__all__ = ["ModelEntry", "register_model", "build_model", "list_models", "model_entry"]

Builder = Callable[..., Segmenter]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and what is known before building it."""

    name: str
    builder: Builder
    temporal: bool
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, temporal: bool, description: str = ""
                   ) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(*, num_classes, memory_length)`` under ``name``.

    Raises:
        ValueError: the name is already registered (or not a non-empty identifier).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model name must be an identifier, got {name!r}")

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = ModelEntry(name, builder, temporal, description)
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


def build_model(name: str, *, num_classes: int = 20, memory_length: int = 4) -> Segmenter:
    """Build the named model with freshly initialised weights (see :func:`list_models`).

    Args:
        name: registry name, e.g. ``"erfnet"`` (single frame) or ``"lmanet_erfnet"``.
        num_classes: output channels (20 for Cityscapes: 19 trainIds + void).
        memory_length: frames T the memory holds (>= 1); accepted and unused by single-frame
            models.

    Raises:
        ValueError: unknown name (the message lists the known ones) or a bad argument.
    """
    entry = model_entry(name)
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
