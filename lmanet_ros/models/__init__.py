"""The networks: ERFNet, PSPNet and LMANet (local memory attention) on either, as plain modules.

State_dict names equal those of the published checkpoints (without the ``module.`` prefix).
Models return ``num_classes`` (20) logit channels: 19 Cityscapes trainIds and a void channel
(PSPNet's is all zeros); the argmax over the first 19 is the caller's business. Every model takes
RGB in [0, 1] of any size and normalises and pads it itself (``model.info`` says how).

Public entry points: :func:`build_model`, :func:`list_models`, :func:`load_checkpoint`,
:func:`save_checkpoint`, :class:`Memory`, :class:`ModelInfo`.
"""
from .attention import local_memory_attention, local_memory_attention_reference
from .checkpoint import CheckpointError, LoadReport, load_checkpoint, save_checkpoint
from .lmanet import ModelInfo, Segmenter, SingleFrameSegmenter, TemporalSegmenter
from .memory import Memory
from .registry import build_model, list_models, register_model
from .temporal import LocalMemoryModule, TemporalModule

__all__ = [
    "build_model", "list_models", "register_model", "load_checkpoint", "save_checkpoint",
    "LoadReport", "CheckpointError", "Memory", "ModelInfo", "Segmenter", "SingleFrameSegmenter",
    "TemporalSegmenter", "TemporalModule", "LocalMemoryModule", "local_memory_attention",
    "local_memory_attention_reference",
]
