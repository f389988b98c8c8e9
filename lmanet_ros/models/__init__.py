"""The networks: ERFNet, PSPNet and LMANet (local memory attention) on either, as plain modules.

State_dict names equal those of the published checkpoints (without the ``module.`` prefix).
Models return ``num_classes`` (20) logit channels: 19 Cityscapes trainIds and a void channel
(PSPNet's is all zeros); the argmax over the first 19 is the caller's business. Every model takes
RGB in [0, 1] of any size and normalises and pads it itself (``model.info`` says how).

Public entry points: :func:`build_model`, :func:`list_models`, :func:`load_checkpoint`,
:func:`save_checkpoint`, :class:`Memory`, :class:`ModelInfo`, and weights as data
(:mod:`lmanet_ros.models.weights`: :func:`get_weights`, :func:`resolve_checkpoint`,
:func:`resolve_memory_length`).
"""
from .attention import local_memory_attention, local_memory_attention_reference
from .checkpoint import CheckpointError, LoadReport, load_checkpoint, save_checkpoint
from .segmenter import ModelInfo, Segmenter, SingleFrameSegmenter, TemporalSegmenter
from .memory import FeatureMemory, FrameFIFO, Memory, TemporalMemory
from .registry import build_model, list_models, model_entry, register_model
from .temporal import FIFOModule, LocalMemoryModule, TemporalModule
from .tmanet import TemporalMemoryAttention
from .tdnet import PathMemory, TemporallyDistributed
from .stf import STFSegmenter, SpatioTemporalFusion, stf_erfnet
from .tmanet_r50 import ProjectAheadMemoryAttention, SlotMemory, TMANetSegmenter, build_tmanet_r50
from .stf_psp import STFPSPNetSegmenter, stf_mar_delayed_pspnet50
from .tdnet_psp import TDNetSegmenter  # registers td4_psp18, td2_psp50
from .weights import (DEMO, Weights, get_weights, list_weights, memory_length_origin,
                      models_with_weights, resolve_checkpoint, resolve_memory_length,
                      trained_input_size, training_summary)

__all__ = [
    "build_model", "list_models", "model_entry", "register_model", "load_checkpoint",
    "save_checkpoint",
    "LoadReport", "CheckpointError", "Memory", "TemporalMemory", "FrameFIFO", "FeatureMemory",
    "FIFOModule", "TemporalMemoryAttention", "ModelInfo", "Segmenter", "SingleFrameSegmenter",
    "TemporalSegmenter", "TemporalModule", "LocalMemoryModule", "local_memory_attention",
    "local_memory_attention_reference", "DEMO", "Weights", "get_weights", "list_weights",
    "models_with_weights", "resolve_checkpoint", "resolve_memory_length", "memory_length_origin",
    "trained_input_size", "training_summary", "PathMemory", "TemporallyDistributed",
    "STFSegmenter", "SpatioTemporalFusion", "stf_erfnet", "ProjectAheadMemoryAttention",
    "SlotMemory", "TMANetSegmenter", "build_tmanet_r50", "STFPSPNetSegmenter",
    "stf_mar_delayed_pspnet50", "TDNetSegmenter",
]
