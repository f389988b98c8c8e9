"""Segmenters: single-frame (encoder -> decoder) and temporal (LMANet) behind one interface.

Every model of :mod:`lmanet_ros.models` is a :class:`Segmenter`:

- ``model.info``: a frozen :class:`ModelInfo` (name, classes, memory length, normalisation,
  the input sizes the network runs on without padding).
- ``logits, memory = model.step(x, memory=None, *, update_memory=True)``: one frame of B
  independent streams; the model keeps no per-stream state, the caller keeps the memory (an
  immutable :class:`~lmanet_ros.models.memory.TemporalMemory` of the model's own type; None
  after a reset).
- ``model(frames)``: (B, N, 3, H, W) clips streamed through ``step`` from an empty memory, the
  logits of the last frame (training; gradients flow); ``model(frames, outputs=True,
  iteration=i)`` the dict of the last frame's outputs (auxiliary ones included) from the
  temporal module's training memory for iteration ``i``.

Logits have ``num_classes`` channels (20 for Cityscapes: 19 trainIds and index 19 for void);
taking the argmax over the first 19 is the caller's business.

Callers always pass RGB float in [0, 1] of any size: a model normalises its input itself (its
``mean``/``std``, if any) and pads it to a size its network takes (its ``size_offset`` modulo its
``output_stride``), then crops the logits back to the input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .memory import TemporalMemory
from .temporal import TemporalModule

__all__ = ["ModelInfo", "Segmenter", "SingleFrameSegmenter", "TemporalSegmenter"]


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to know about a model.

    Attributes:
        name: registry name (``erfnet``, ``lmanet_erfnet``).
        num_classes: output channels.
        memory_length: frames the memory holds (T); 0 for single-frame models.
        temporal: whether ``step`` uses and returns a memory.
        output_stride: resolution of the encoder features relative to the input.
        mean, std: per-channel RGB normalisation ``(x - mean) / std`` applied inside ``step``
            to inputs in [0, 1]; None when the model takes [0, 1] input as is (ERFNet).
        size_offset: the network runs without padding on sides ``s`` with
            ``s % output_stride == size_offset``: 0 for ERFNet (multiples of 8), 1 for PSPNet
            (8k + 1). ``step`` pads other sizes up to :meth:`padded_size` itself.
    """

    name: str
    num_classes: int
    memory_length: int
    temporal: bool
    output_stride: int = 8
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    size_offset: int = 0

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) in pixels the network computes on for an input of this size."""
        stride, offset = self.output_stride, self.size_offset
        return height + (offset - height) % stride, width + (offset - width) % stride


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype ``torch.autocast`` computes in on ``device_type`` now, None when it is off."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class Segmenter(nn.Module):
    """Common part of the segmenters: input checks, padding, normalisation, clip forward.

    The network is ``decoder(neck(features))`` where ``features`` are the encoder's (or, in a
    temporal model, the fused) features.

    Padding: an input whose sides are not ``size_offset`` modulo ``output_stride`` is padded at
    the bottom and right up to the next such size (:meth:`ModelInfo.padded_size`), after
    normalisation, by replicating the last row and column ("replicate" mode), and the logits are
    cropped back to the input size. On a valid size nothing is padded, so the result is the
    published network's computation exactly. Replicate padding adds no artificial edge or
    colour (zero padding would add a black border, i.e. a strong edge after normalisation) and
    keeps the statistics that global pooling (PSPNet's pyramid pooling) sees close to the
    image's; the padded rows and columns (at most ``output_stride - 1``) are cropped away.

    Args:
        name: registry name reported in ``info``.
        encoder: (B, 3, H, W) -> features at 1/``output_stride``.
        decoder: (neck) features -> (B, num_classes, H', W') logits, H' >= H, W' >= W for the
            padded input of size (H', W') (the padded part is cropped away).
        num_classes: number of output channels of the decoder.
        mean, std: normalisation of [0, 1] RGB inputs (None: none).
        output_stride: the encoder's stride.
        size_offset: valid input sides are ``size_offset`` modulo ``output_stride``
            (0 <= size_offset < output_stride).
        between: further children registered between encoder and decoder (in this order, so
            that ``state_dict`` lists keys in the order of the published checkpoints).
        neck: children applied in this order to the features right before the decoder and
            registered after ``between`` (PSPNet's pyramid pooling module ``ppm``).
    """

    def __init__(self, name: str, encoder: nn.Module, decoder: nn.Module, *, num_classes: int,
                 mean: tuple[float, float, float] | None = None,
                 std: tuple[float, float, float] | None = None, output_stride: int = 8,
                 size_offset: int = 0, between: dict[str, nn.Module] | None = None,
                 neck: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self._name = name
        self._num_classes = _check_positive_int("num_classes", num_classes)
        self._output_stride = _check_positive_int("output_stride", output_stride)
        if (isinstance(size_offset, bool) or not isinstance(size_offset, int)
                or not 0 <= size_offset < output_stride):
            raise ValueError(f"size_offset must be an int in [0, output_stride), got "
                             f"{size_offset!r}")
        self._size_offset = size_offset
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together")
        if mean is not None and (len(mean) != 3 or len(std) != 3 or min(std) <= 0):
            raise ValueError(f"mean and std must be 3 values each, std > 0; got {mean}, {std}")
        self._mean = tuple(float(v) for v in mean) if mean is not None else None
        self._std = tuple(float(v) for v in std) if std is not None else None
        self._normalisation_cache: dict[tuple[torch.device, torch.dtype],
                                        tuple[torch.Tensor, torch.Tensor]] = {}
        between, neck = dict(between or {}), dict(neck or {})
        if between.keys() & neck.keys():
            raise ValueError(f"sub-module names in both between and neck: "
                             f"{sorted(between.keys() & neck.keys())}")
        self.encoder = encoder
        for child_name, child in {**between, **neck}.items():
            if child_name in ("encoder", "decoder") or hasattr(self, child_name):
                raise ValueError(f"sub-module name '{child_name}' clashes with the segmenter's "
                                 f"own attributes")
            self.add_module(child_name, child)
        self._neck_names = tuple(neck)
        self.decoder = decoder

    # ------------------------------------------------------------------ description
    @property
    def single_frame_modules(self) -> tuple[nn.Module, ...]:
        """The single-frame network's parts: encoder, neck (e.g. PSPNet's ``ppm``), decoder.

        LMANet training freezes these and trains only what lies between them.
        """
        return (self.encoder, *(getattr(self, name) for name in self._neck_names), self.decoder)

    @property
    def memory_length(self) -> int:
        return 0

    @property
    def output_delay_frames(self) -> int:
        """Frames by which a step's output lags the frame stepped: 0 (causal) for every model
        but the delayed STF forms (:class:`~lmanet_ros.models.stf.STFSegmenter`)."""
        return 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self._name, num_classes=self._num_classes,
                         memory_length=self.memory_length, temporal=self.memory_length > 0,
                         output_stride=self._output_stride, mean=self._mean, std=self._std,
                         size_offset=self._size_offset)

    # ------------------------------------------------------------------ helpers
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be a (B, 3, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point in [0, 1], got {x.dtype}")
        if x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (if the model has mean/std) and replicate-pad to a valid size.

        (B, 3, H, W) in [0, 1] -> (B, 3, H', W') with (H', W') = ``info.padded_size(H, W)``.
        """
        if self._mean is not None:
            mean, std = self._normalisation(x.device, x.dtype)
            x = (x - mean) / std
        height, width = x.shape[2:]
        padded_height, padded_width = self.info.padded_size(height, width)
        pad_h, pad_w = padded_height - height, padded_width - width
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x

    def _normalisation(self, device: torch.device, dtype: torch.dtype
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (1, 3, 1, 1) on ``device`` in ``dtype``: built once per device and
        dtype and kept (not buffers: the checkpoints' state_dicts have none). Made outside
        inference mode, so that training may save them for backward."""
        key = (device, dtype)
        cached = self._normalisation_cache.get(key)
        if cached is None:
            with torch.inference_mode(False):
                cached = self._normalisation_cache[key] = tuple(
                    torch.tensor(values, dtype=dtype, device=device).view(1, 3, 1, 1)
                    for values in (self._mean, self._std))
        return cached

    def _decode(self, features: torch.Tensor) -> torch.Tensor:
        """(Fused) features -> logits of the padded input: the neck, then the decoder."""
        for name in self._neck_names:
            features = self._modules[name](features)
        return self.decoder(features)

    def step(self, x: torch.Tensor, memory: TemporalMemory | None = None, *,
             update_memory: bool = True) -> tuple[torch.Tensor, TemporalMemory | None]:
        """Segment one frame per stream: (B, 3, H, W) in [0, 1] -> (B, num_classes, H, W)."""
        raise NotImplementedError

    def forward(self, frames: torch.Tensor, *, outputs: bool = False,
                iteration: int | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        """Stream clips (B, N, 3, H, W) from a starting memory; logits of the last frame.

        A 4-D (B, 3, H, W) input is taken as clips of one frame.

        Args:
            frames: the clips, RGB in [0, 1].
            outputs: False: the last frame's logits (B, num_classes, H, W); True: a dict of
                them, ``"out"`` and the temporal module's auxiliary outputs (TDNet's ``"sub"``),
                each decoded to logits, as torchvision's segmentation models do in training.
            iteration: None: start from the empty memory; a training iteration: start from the
                temporal module's :meth:`~TemporalModule.training_memory` for it.
        """
        if frames.dim() == 4:
            frames = frames.unsqueeze(1)
        if frames.dim() != 5 or frames.shape[1] < 1:
            raise ValueError(f"frames must be (B, N, 3, H, W) with N >= 1, got "
                             f"{tuple(frames.shape)}")
        count = frames.shape[1]
        memory = self.start_memory(iteration, count - 1)
        start = 0 if self.memory_length > 0 else count - 1  # single frame: only the last counts
        for index in range(start, count - 1):
            _, memory = self.step(frames[:, index], memory)
        last = self.last_frame_outputs(frames[:, -1], memory)
        return last if outputs else last["out"]

    def start_memory(self, iteration: int | None, frames_before: int) -> TemporalMemory | None:
        """The memory a clip starts from (see :meth:`forward`); None: the empty one."""
        del iteration, frames_before
        return None

    def last_frame_outputs(self, x: torch.Tensor, memory: TemporalMemory | None
                           ) -> dict[str, torch.Tensor]:
        """The labelled frame's logits, ``{"out": (B, num_classes, H, W)}`` plus the temporal
        module's auxiliary outputs; the memory is read, not updated."""
        return {"out": self.step(x, memory, update_memory=False)[0]}


class SingleFrameSegmenter(Segmenter):
    """encoder -> neck -> decoder; ``step`` accepts and returns a memory without touching it."""

    @property
    def memory_length(self) -> int:
        return 0

    @memory_length.setter
    def memory_length(self, value: int) -> None:
        raise ValueError(f"model '{self._name}' is single-frame: it has no memory length")

    def step(self, x: torch.Tensor, memory: TemporalMemory | None = None, *,
             update_memory: bool = True) -> tuple[torch.Tensor, TemporalMemory | None]:
        self._check_input(x)
        height, width = x.shape[2:]
        logits = self._decode(self.encoder(self._prepare(x)))
        return logits[:, :, :height, :width], memory


class TemporalSegmenter(Segmenter):
    """encoder -> temporal module (reads a memory of past frames) -> neck -> decoder.

    The temporal module's sub-modules are registered as this model's own top-level children
    (state_dict names ``kv_M_r4.*`` etc., as in the published checkpoints); the module itself is
    reachable as :attr:`temporal_module` and must hold no parameters or buffers of its own.

    Streaming order (per frame, per stream): ``features = encoder(x)``; ``fused, new memory =
    temporal.step(features, memory)`` (``None`` is the module's empty memory); logits
    ``decoder(neck(fused))``. What the memory stores, how it is read and what an empty or
    partly filled memory does are the module's business
    (:class:`~lmanet_ros.models.temporal.TemporalModule`): LMANet and TMANet run the
    single-frame path on an empty memory and store an entry computed from the RAW features.
    (ERFNet has no neck; PSPNet's is the pyramid pooling module.)
    """

    def __init__(self, name: str, encoder: nn.Module, temporal: TemporalModule,
                 decoder: nn.Module, *, num_classes: int, memory_length: int,
                 mean: tuple[float, float, float] | None = None,
                 std: tuple[float, float, float] | None = None, output_stride: int = 8,
                 size_offset: int = 0, neck: dict[str, nn.Module] | None = None) -> None:
        if not isinstance(temporal, TemporalModule):
            raise ValueError(f"temporal must be a TemporalModule, got {type(temporal).__name__}")
        own = [n for n, _ in temporal.named_parameters(recurse=False)]
        own += [n for n, _ in temporal.named_buffers(recurse=False)]
        if own:
            raise ValueError(f"a temporal module may hold sub-modules only; it owns {own}")
        super().__init__(name, encoder, decoder, num_classes=num_classes, mean=mean, std=std,
                         output_stride=output_stride, size_offset=size_offset,
                         between=dict(temporal.named_children()), neck=neck)
        # Kept outside ``_modules`` so that its children are registered once, at top level.
        object.__setattr__(self, "_temporal", temporal)
        self.memory_length = memory_length

    @property
    def temporal_module(self) -> TemporalModule:
        """The temporal module (its sub-modules are this model's top-level children)."""
        return self._temporal

    @property
    def memory_length(self) -> int:
        return self._memory_length

    @memory_length.setter
    def memory_length(self, value: int) -> None:
        value = _check_positive_int("memory_length", value)
        self._temporal.check_memory_length(value)
        self._memory_length = value

    def train(self, mode: bool = True) -> "TemporalSegmenter":
        super().train(mode)
        self._temporal.training = mode  # its children were set through this model
        return self

    def step(self, x: torch.Tensor, memory: TemporalMemory | None = None, *,
             update_memory: bool = True) -> tuple[torch.Tensor, TemporalMemory | None]:
        """One frame per stream; see the class docstring for the order.

        Args:
            x: (B, 3, H, W) in [0, 1], any H, W (padded inside, logits cropped back).
            memory: the streams' memory, of the temporal module's ``memory_type`` (None or
                empty: first frame).
            update_memory: False returns ``memory`` unchanged (a stride policy).

        Returns:
            (logits (B, num_classes, H, W), new memory).

        Raises:
            ValueError: a bad input, a memory of another type, or one that does not fit the
                input (batch, device, dtype, feature size).
        """
        features, current = self._encode(x, memory)
        fused, successor = self._temporal.step(features, current,
                                               memory_length=self._memory_length,
                                               update_memory=update_memory)
        logits = self._decode(fused)[:, :, :x.shape[2], :x.shape[3]]
        return logits, (successor if update_memory else memory)

    def _encode(self, x: torch.Tensor, memory: TemporalMemory | None
                ) -> tuple[torch.Tensor, TemporalMemory]:
        """(encoder features of x, the memory to read: ``memory`` checked, or the empty one)."""
        self._check_input(x)
        temporal = self._temporal
        if memory is not None and not isinstance(memory, temporal.memory_type):
            raise ValueError(f"memory must be a {temporal.memory_type.__name__} or None, got "
                             f"{type(memory).__name__}")
        features = self.encoder(self._prepare(x))
        autocast_dtype = _autocast_dtype(features.device.type)
        if autocast_dtype is not None and features.is_floating_point():
            # under autocast the encoder's last op may give float32 (a normalisation) while
            # the entries stored from the features come from autocast's products: one dtype
            features = features.to(autocast_dtype)
        current = memory if memory is not None else temporal.empty_memory()
        if len(current):
            current.check_fits(features)
        return features, current

    def start_memory(self, iteration: int | None, frames_before: int) -> TemporalMemory | None:
        if iteration is None:
            return None
        return self._temporal.training_memory(iteration, frames_before)

    def last_frame_outputs(self, x: torch.Tensor, memory: TemporalMemory | None
                           ) -> dict[str, torch.Tensor]:
        features, current = self._encode(x, memory)
        fused = self._temporal.training_outputs(features, current,
                                                memory_length=self._memory_length)
        return {name: self._decode(value)[:, :, :x.shape[2], :x.shape[3]]
                for name, value in fused.items()}
