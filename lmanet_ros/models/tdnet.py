"""TDNet's temporally distributed sub-networks (Hu et al., CVPR 2020) as a streaming module.

What it computes (``shared/docs/temporal-modules.md`` section 3.1), for ``m`` paths:

- ``m`` shallow sub-networks with separate weights run in rotation, ONE per processed frame:
  frame ``t`` runs path ``p``; frames ``t-m+1 .. t-1`` ran paths ``p+1 .. p+m-1`` (mod m);
- each path encodes its features ``z`` into ``q = C2(LReLU(BN(C1(z))))``, ``k`` alike (separate
  weights) and ``v = 1x1 conv(z)``; a memory entry is ``(Q~, K~, V~)`` of ``z`` subsampled to
  every ``s``-th pixel (``z[..., ::s, ::s]``, before the 1x1 projections, as in the release);
- the attention propagation chain (TD4: m = 4), with ``Att(K, V, Q) = fc(softmax(Q K^T /
  sqrt(d_k)) V)`` and one ``fc`` (1x1 convolution) per (target path, hop)::

      P_{t-2} = Att_{p,1}(K~_{t-3}, V~_{t-3}, Q~_{t-2})
      P_{t-1} = Att_{p,2}(K~_{t-2}, P_{t-2} + V~_{t-2}, Q~_{t-1})
      P_t     = Att_{p,3}(K~_{t-1}, P_{t-1} + V~_{t-1}, q_t)      (q_t at full resolution)

  (TD2, m = 2: ``P_t = Att_p(K~_{t-1}, V~_{t-1}, q_t)``);
- fusion ``y = Norm_p(P_t + v_t)``, then the decoder (here ERFNet's, shared by every path;
  the released TD4-PSP18 / TD2-PSP50 have a head per path, :mod:`~lmanet_ros.models.tdnet_psp`).

On ERFNet (``tdnet_erfnet``) a sub-network is ERFNet's encoder with fewer non-bottleneck blocks
(:class:`SubNetwork`: no 64-channel block, two 128-channel blocks with dilations 2 and 8), and
128-channel values so that ERFNet's decoder (and its checkpoint names, ``decoder.*``) take ``y``
as they are. Multiply-adds at 256x512: a sub-network 0.95 G (ERFNet's encoder 5.4 G), a whole
step 2.36 G (convolutions 2.31 G, attention 0.05 G) against ERFNet's 6.65 G; on one CPU thread
a step takes about 0.5x ERFNet's time (its decoder is half of it).

Deviations of ``tdnet_erfnet`` from the release, each for a reason:

- Normalisation (:class:`SpatialNorm`): the release's ``LayerNorm([97, 193])`` normalises each
  channel over the spatial map with a per-PIXEL affine, which ties its weights to 769x1537
  inputs. Here the statistics are the same (per sample and channel, over ``h x w``, eps 1e-5)
  and the affine is per CHANNEL, so any input size works (the released models keep the
  per-pixel affine, resized to other sizes: the other kind of :class:`SpatialNorm`).
  GroupNorm(1) (the TDNet author's suggestion in feinanshan/TDNet#11) would also pool the
  statistics across channels, i.e. compute something the released normalisation does not.
- No dropout on the attention weights (the shared read-out,
  :func:`~lmanet_ros.models.tmanet.global_memory_attention`, has none); the release's dropout
  after ``fc`` (0.1) is kept, training only.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .erfnet import DownsamplerBlock, ERFNetDecoder, NonBottleneck1D
from .memory import FrameFIFO, TemporalMemory
from .registry import register_model
from .segmenter import Segmenter, TemporalSegmenter, _check_positive_int
from .temporal import TemporalModule
from .tmanet import MAX_AFFINITY_ELEMENTS, global_memory_attention

__all__ = ["ProjectedEntries", "PathMemory", "SubNetwork", "Encoding", "SpatialNorm",
           "FrameInput", "TemporallyDistributed", "erfnet_init_state"]


@dataclass(frozen=True)
class ProjectedEntries(FrameFIFO):
    """The projected, subsampled entries of the frames held, oldest first: ``queries[i]`` Q~
    and ``keys[i]`` K~ (B, d_k, hs, ws), ``values[i]`` V~ (B, d_v, hs, ws) of one frame."""

    queries: tuple[torch.Tensor, ...] = ()
    keys: tuple[torch.Tensor, ...] = ()
    values: tuple[torch.Tensor, ...] = ()

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True)
class PathMemory(TemporalMemory):
    """TDNet's memory of a stream (or a batch of streams on the same path): an immutable value.

    Attributes:
        counter: the path (0 .. m-1) that processes the next frame; it advances by one (mod m)
            per frame stored, so the rotation follows processed frames, not stamps: a frame the
            caller drops never reaches the model and the cycle just continues.
        entries: at most m-1 projected subsampled ``(Q~, K~, V~)`` entries, oldest first.
        paths: the path that produced each entry (oldest first; for a memory the module wrote,
            ``counter - len + i`` mod m).
        input_size: (H, W) of the padded, normalised frames the entries come from (what
            :meth:`check_fits` compares); None for the empty memory.

    ``PathMemory()`` is the memory after a reset (counter 0, nothing held).
    """

    counter: int = 0
    entries: ProjectedEntries = field(default_factory=ProjectedEntries)
    paths: tuple[int, ...] = ()
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_positive_int("counter", self.counter, minimum=0)
        object.__setattr__(self, "paths", tuple(int(p) for p in self.paths))
        if len(self.paths) != len(self.entries):
            raise ValueError(f"memory holds {len(self.entries)} entries but {len(self.paths)} "
                             f"paths")
        if (self.input_size is None) != (len(self.entries) == 0):
            raise ValueError("input_size must be given exactly when entries are held")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def batch_size(self) -> int:
        return self.entries.batch_size

    @property
    def nbytes(self) -> int:
        """Bytes of the projected entries held (:attr:`FrameFIFO.nbytes`; the counter and the
        paths are not tensors)."""
        return self.entries.nbytes

    def batch_key(self) -> Hashable:
        """(type, counter, paths held, input size): streams on different paths never share a
        batch (each batch runs one sub-network)."""
        return type(self), self.counter, self.paths, self.input_size

    @classmethod
    def cat_batch(cls, memories: Sequence["PathMemory"]) -> "PathMemory":
        memories = list(memories)
        if not memories or any(not isinstance(m, cls) for m in memories):
            raise ValueError(f"cat_batch needs one or more {cls.__name__}s")
        keys = {memory.batch_key() for memory in memories}
        if len(keys) > 1:
            raise ValueError(f"cat_batch needs memories of one batch key (counter, paths, input "
                             f"size), got {sorted(k[1:] for k in keys)}")
        entries = ProjectedEntries.cat_batch([memory.entries for memory in memories])
        return replace(memories[0], entries=entries)

    def split_batch(self) -> list["PathMemory"]:
        return [replace(self, entries=entries) for entries in self.entries.split_batch()]

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "PathMemory":
        return replace(self, entries=self.entries.to(device=device, dtype=dtype))

    def check_fits(self, features: torch.Tensor) -> None:
        """``features`` is the (B, 3, H, W) padded frame (see :class:`TemporallyDistributed`)."""
        first = self.entries.queries[0]
        mine = (first.shape[0], first.device, first.dtype, self.input_size)
        given = (features.shape[0], features.device, features.dtype, tuple(features.shape[2:]))
        if mine != given:
            raise ValueError(f"memory (streams, device, dtype, frame size) {mine} does not fit "
                             f"the frame's {given} (use memory.to(...), or a fresh memory for a "
                             f"new input size)")


class SubNetwork(nn.Module):
    """One path's encoder: ERFNet's encoder with fewer non-bottleneck blocks.

    (B, 3, H, W) -> z (B, 128, H/8, W/8); H and W divisible by 8. Layout and names as ERFNet's
    (``initial_block``, ``layers.N``): initial block 3 -> 16, downsampler 16 -> 64,
    ``blocks64`` 64-channel blocks (dilation 1), downsampler 64 -> 128, one 128-channel block
    per entry of ``dilations``. Dropout as ERFNet's (0.03 and 0.3), training only.

    Args:
        blocks64: 64-channel non-bottleneck blocks (ERFNet has 5).
        dilations: dilation of each 128-channel block (ERFNet has 2, 4, 8, 16, 2, 4, 8, 16).
    """

    out_channels = 128

    def __init__(self, blocks64: int = 0, dilations: Sequence[int] = (2, 8)) -> None:
        super().__init__()
        _check_positive_int("blocks64", blocks64, minimum=0)
        self.initial_block = DownsamplerBlock(3, 16)
        self.dilations = tuple(dilations)
        self.layers = nn.Sequential(
            DownsamplerBlock(16, 64), *(NonBottleneck1D(64, 0.03, 1) for _ in range(blocks64)),
            DownsamplerBlock(64, 128), *(NonBottleneck1D(128, 0.3, d) for d in self.dilations))

    def erfnet_layers(self) -> list[int]:
        """For each of ``layers``, the index of ERFNet's encoder layer of the same shape and
        role (a block of dilation d: ERFNet's first block of that dilation, else its first)."""
        blocks64 = len(self.layers) - 2 - len(self.dilations)
        erfnet128 = (2, 4, 8, 16)
        return ([0] + [1 + i for i in range(blocks64)] + [6]
                + [7 + (erfnet128.index(d) if d in erfnet128 else 0) for d in self.dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.initial_block(x))


def _query_key_stack(in_channels: int, key_channels: int) -> nn.Sequential:
    """``C2(LReLU(BN(C1(z))))``: 1x1 convolutions with bias, BN (eps 1e-5), LeakyReLU(0.01)."""
    return nn.Sequential(nn.Conv2d(in_channels, key_channels, 1), nn.BatchNorm2d(key_channels),
                         nn.LeakyReLU(0.01), nn.Conv2d(key_channels, key_channels, 1))


class Encoding(nn.Module):
    """A path's query, key and value projections of its features z (B, in, h, w).

    ``query``/``key``: (B, d_k, h, w) (:func:`_query_key_stack`, names ``{query,key}.{0,1,3}``);
    ``value``: 1x1 convolution with bias, (B, d_v, h, w).
    """

    def __init__(self, in_channels: int, key_channels: int, value_channels: int) -> None:
        super().__init__()
        self.query = _query_key_stack(in_channels, key_channels)
        self.key = _query_key_stack(in_channels, key_channels)
        self.value = nn.Conv2d(in_channels, value_channels, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q, K, V) of ``z``."""
        return self.query(z), self.key(z), self.value(z)


class SpatialNorm(nn.Module):
    """Each channel of each sample normalised over its spatial map (mean and biased variance
    over h x w, eps 1e-5: the statistics of the release's ``LayerNorm([h, w])``), then an
    affine, one of two kinds:

    - per channel, ``SpatialNorm(channels)``: ``weight`` and ``bias`` (C,) (1 and 0 at init);
      any spatial size as it is (``tdnet_erfnet``);
    - per pixel, ``SpatialNorm(size=(h0, w0))``: ``weight`` and ``bias`` (h0, w0), i.e. the
      release's ``LayerNorm([h0, w0])`` itself on (h0, w0) maps. On maps of another size
      (h, w) the affine is resized to (h, w) bilinearly with ``align_corners=True`` (corner
      pixels keep their values: feature pixel i lies on input pixel 8i of an 8k + 1 input at
      every size), the TDNet author's advice for other input sizes (feinanshan/TDNet#11,
      #55). The resized affine is cached per size while the parameters stay as they are and
      no gradient is needed (:meth:`affine`).

    (B, C, h, w) in and out.
    """

    def __init__(self, channels: int | None = None, *, size: tuple[int, int] | None = None,
                 eps: float = 1e-5) -> None:
        super().__init__()
        if (channels is None) == (size is None):
            raise ValueError("give exactly one of channels (per-channel affine) and size "
                             "(per-pixel affine)")
        if size is None:
            shape = (_check_positive_int("channels", channels),)
        elif len(size) == 2:
            shape = tuple(_check_positive_int("size", side) for side in size)
        else:
            raise ValueError(f"size must be (height, width), got {size!r}")
        self.native_size = None if size is None else shape
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.eps = eps
        self._affine_cache: dict[tuple[int, int], tuple[tuple, torch.Tensor, torch.Tensor]] = {}

    def affine(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-pixel (weight, bias), each (h, w), for maps of ``size`` = (h, w): the
        parameters themselves at the native size, else their bilinear resize
        (``align_corners=True``). A resize is cached per size and reused while the parameters
        keep their storage, version (no in-place update since: loading, an optimiser step),
        device and dtype and the grad mode stays; with a gradient to compute it is not cached."""
        if self.native_size is None:
            raise ValueError("a per-channel SpatialNorm has no per-pixel affine")
        size = (int(size[0]), int(size[1]))
        if size == self.native_size:
            return self.weight, self.bias
        params = (self.weight, self.bias)
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return self._resize(size)
        stamp = (torch.is_inference_mode_enabled(),
                 *((p.device, p.dtype, p.data_ptr(), p._version) for p in params))
        cached = self._affine_cache.get(size)
        if cached is None or cached[0] != stamp:
            cached = self._affine_cache[size] = (stamp, *self._resize(size))
        return cached[1], cached[2]

    def _resize(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = torch.stack([self.weight, self.bias]).unsqueeze(0)        # (1, 2, h0, w0)
        weight, bias = F.interpolate(stacked, size=size, mode="bilinear",
                                     align_corners=True)[0]
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.native_size is None:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, use_input_stats=True,
                                   eps=self.eps)
        weight, bias = self.affine(tuple(x.shape[-2:]))
        return F.layer_norm(x, tuple(weight.shape), weight, bias, self.eps)

    def extra_repr(self) -> str:
        kind = (f"channels={self.weight.shape[0]}" if self.native_size is None
                else f"size={self.native_size}")
        return f"{kind}, eps={self.eps}"


class FrameInput(nn.Identity):
    """The segmenter's "encoder" for TDNet: the padded frame itself (B, 3, H, W). TDNet's
    encoders are per path and the path is a property of the memory, so they live in the
    temporal module (:class:`TemporallyDistributed`), which gets the frame as its features."""

    out_channels = 3


class TemporallyDistributed(TemporalModule):
    """TDNet's module: m sub-networks in rotation, attention propagation, spatial norm.

    ``step`` gets the padded, normalised frame (B, 3, H, W) as its ``features`` (the segmenter's
    encoder is :class:`FrameInput`) and runs the sub-network of path ``c = memory.counter``.

    Memory (:class:`PathMemory`): the counter and the projected, subsampled entries of the last
    m-1 frames stored, each with its path; the memory length is m-1, fixed by the weights.
    Per entry ``(2 d_k + d_v) * hs * ws`` values: at 512x1024 (64x128 features, s = 4: 16x32)
    with d_k 32, d_v 128, 0.375 MiB in float32, 1.1 MiB per stream for TD4.

    Cold start (as in the release): while fewer than m-1 entries are held (after a reset, the
    first m-1 frames) the output is the "sub" path ``Norm_p(v_t)`` (-> ``head_p``) -> decoder,
    without a propagated term; from the m-th frame on, the full chain. A stride policy's frame
    (``update_memory=False``) runs path c on the memory as it is and leaves it, counter
    included, unchanged. Reset: the caller drops the memory (the counter restarts at 0).

    State_dict names (top-level children of the segmenter): ``subnets.{p}.*`` (ERFNet layout),
    ``encodings.{p}.{query,key}.{0,1,3}.*``, ``encodings.{p}.value.*``, ``hops.{p}.{j}.*`` (the
    fc of target path p, hop j = 0 .. m-2, whose keys come from a frame of path p+j+1),
    ``norms.{p}.{weight,bias}``, and with per-path heads ``heads.{p}.*``.

    Per-path heads (the released TD4-PSP18 / TD2-PSP50, :mod:`lmanet_ros.models.tdnet_psp`):
    ``head_p`` maps ``y`` (and the "sub" output) to what the decoder takes, e.g. logits that
    the decoder only up-samples; without heads ``y`` goes to a decoder shared by the paths.

    Args:
        paths: m (>= 2; 4: TD4, 2: TD2).
        subnet: ``subnet(p)`` builds path p's sub-network (its ``out_channels`` the features'
            width); None: :class:`SubNetwork` (ERFNet's) for every path.
        key_channels: d_k of queries and keys (the release: 64 on 512 channels).
        value_channels: d_v (the width of y).
        subsample: s, keep every s-th pixel of an entry (4 as the release's testing code).
        dropout: dropout after each hop's fc (0.1), training only.
        norm: builds one path's normalisation of y; None: ``SpatialNorm(value_channels)``
            (per-channel affine).
        head: builds one path's head (its ``out_channels`` the module's output width); None:
            no heads, y is the output.
        max_affinity_elements: budget of one query chunk's affinity (elements).
    """

    memory_type = PathMemory

    def __init__(self, paths: int = 4, subnet: Callable[[int], nn.Module] | None = None, *,
                 key_channels: int = 32, value_channels: int = 128, subsample: int = 4,
                 dropout: float = 0.1, norm: Callable[[], nn.Module] | None = None,
                 head: Callable[[], nn.Module] | None = None,
                 max_affinity_elements: int = MAX_AFFINITY_ELEMENTS) -> None:
        super().__init__()
        _check_positive_int("paths", paths, minimum=2)
        for name, value in (("key_channels", key_channels), ("value_channels", value_channels),
                            ("subsample", subsample),
                            ("max_affinity_elements", max_affinity_elements)):
            _check_positive_int(name, value)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.subnets = nn.ModuleList([SubNetwork() if subnet is None else subnet(path)
                                      for path in range(paths)])
        width = self.subnets[0].out_channels
        self.encodings = nn.ModuleList([Encoding(width, key_channels, value_channels)
                                        for _ in range(paths)])
        self.hops = nn.ModuleList([
            nn.ModuleList([nn.Conv2d(value_channels, value_channels, 1)
                           for _ in range(paths - 1)]) for _ in range(paths)])
        self.norms = nn.ModuleList([SpatialNorm(value_channels) if norm is None else norm()
                                    for _ in range(paths)])
        self.heads = None if head is None else nn.ModuleList([head() for _ in range(paths)])
        self.dropout = nn.Dropout(dropout)
        self.out_channels = value_channels if head is None else self.heads[0].out_channels
        self.key_channels = key_channels
        self.subsample = subsample
        self.max_affinity_elements = max_affinity_elements

    @property
    def paths(self) -> int:
        """m, the number of sub-networks."""
        return len(self.subnets)

    def empty_memory(self, path: int = 0) -> PathMemory:
        """A memory holding nothing whose next frame runs ``path`` (0: after a reset; another
        path lets a trainer choose which path a clip's last frame trains)."""
        if not 0 <= path < self.paths:
            raise ValueError(f"path must be in [0, {self.paths}), got {path}")
        return PathMemory(counter=path)

    def check_memory_length(self, length: int) -> None:
        if length != self.paths - 1:
            raise ValueError(f"TDNet with {self.paths} paths holds exactly {self.paths - 1} "
                             f"frames; memory length {length} needs a model built with "
                             f"{length + 1} paths")

    def expected_paths(self, counter: int, held: int) -> tuple[int, ...]:
        """The paths of ``held`` entries before a frame of path ``counter``, oldest first."""
        return tuple((counter - held + i) % self.paths for i in range(held))

    def attend(self, path: int, hop: int, query: torch.Tensor, key: torch.Tensor,
               value: torch.Tensor) -> torch.Tensor:
        """``Att_{path,hop}(K, V, Q) = fc(softmax(Q K^T / sqrt(d_k)) V)``: query (B, d_k, hq, wq),
        key (B, d_k, hk, wk), value (B, d_v, hk, wk) -> (B, d_v, hq, wq)."""
        rows = max(1, self.max_affinity_elements // max(1, key.shape[0] * key[0, 0].numel()))
        readout = global_memory_attention(query / math.sqrt(query.shape[1]), [key], [value],
                                          chunk_rows=rows)
        return self.dropout(self.hops[path][hop](readout))

    def propagate(self, path: int, query: torch.Tensor, entries: ProjectedEntries
                  ) -> torch.Tensor:
        """The chain over m-1 entries (oldest first) to the full-resolution query of the
        current frame: P_t (B, d_v, h, w)."""
        propagated = None
        last = len(entries) - 1
        for hop in range(len(entries)):
            value = entries.values[hop]
            if propagated is not None:
                value = value + propagated
            target = entries.queries[hop + 1] if hop < last else query
            propagated = self.attend(path, hop, target, entries.keys[hop], value)
        return propagated

    def step(self, features: torch.Tensor, memory: PathMemory, *, memory_length: int,
             update_memory: bool = True) -> tuple[torch.Tensor, PathMemory]:
        """One frame of B streams on path ``memory.counter``.

        Args:
            features: the padded, normalised frames (B, 3, H, W) (of a size the segmenter
                takes without padding: ERFNet's multiples of 8, PSPNet's 8k + 1).
            memory: their :class:`PathMemory` (entries produced by the paths before
                ``counter``, as this module writes them).
            memory_length: m-1 (checked by the segmenter).
            update_memory: False: the memory stays as it is (counter included).

        Returns:
            (y (B, d_v, h, w) at the sub-networks' resolution, or ``head_p(y)`` (B,
            out_channels, h, w) with per-path heads; the memory with this frame's entry,
            counter + 1 mod m).
        """
        fused, _, successor = self._run(features, memory, update_memory=update_memory)
        return fused, successor

    def _run(self, features: torch.Tensor, memory: PathMemory, *, update_memory: bool,
             sub_output: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, PathMemory]:
        """(full output, the "sub" output ``head_p(Norm_p(v_t))`` where ``sub_output`` (else
        None), successor memory); see :meth:`step`."""
        path, held = memory.counter, len(memory)
        if path >= self.paths or held > self.paths - 1:
            raise ValueError(f"memory (counter {path}, {held} entries) is not one of a model "
                             f"with {self.paths} paths")
        if memory.paths != self.expected_paths(path, held):
            raise ValueError(f"memory entries come from paths {memory.paths}; path {path} "
                             f"needs {self.expected_paths(path, held)}")
        z = self.subnets[path](features)
        encoding = self.encodings[path]
        value = encoding.value(z)
        cold = held < self.paths - 1  # cold start: the "sub" output
        fused = self._head(path, self.norms[path](
            value if cold else self.propagate(path, encoding.query(z), memory.entries) + value))
        sub = fused if cold else (self._head(path, self.norms[path](value)) if sub_output
                                  else None)
        if not update_memory:
            return fused, sub, memory
        entry = encoding(z[:, :, ::self.subsample, ::self.subsample])
        entries = memory.entries.append(entry, self.paths - 1)
        return fused, sub, PathMemory(counter=(path + 1) % self.paths, entries=entries,
                                      paths=(memory.paths + (path,))[-(self.paths - 1):],
                                      input_size=tuple(features.shape[2:]))

    def _head(self, path: int, y: torch.Tensor) -> torch.Tensor:
        """``head_p(y)``, or y itself in a module without heads."""
        return y if self.heads is None else self.heads[path](y)

    # ------------------------------------------------------------------ training (the release's)
    #: ``L = CE(out) + 0.5 CE(sub)`` (and the same weights on the distillation terms).
    auxiliary_loss_weights = {"sub": 0.5}
    #: The release trains everything; here the decoder (shared by the paths) too.
    trains_single_frame_parts = True

    @property
    def training_rotation(self) -> int:
        return self.paths

    def training_memory(self, iteration: int, frames_before: int) -> PathMemory:
        """Iteration i trains path ``i mod m`` on the labelled frame (the release's rule): the
        clip starts ``frames_before`` paths earlier."""
        return self.empty_memory((iteration - frames_before) % self.paths)

    def training_outputs(self, features: torch.Tensor, memory: PathMemory, *,
                         memory_length: int) -> dict[str, torch.Tensor]:
        """``{"out": head_p(Norm_p(P_t + v_t)), "sub": head_p(Norm_p(v_t))}`` of the labelled
        frame (``head_p`` the identity without per-path heads)."""
        del memory_length
        fused, sub, _ = self._run(features, memory, update_memory=False, sub_output=True)
        return {"out": fused, "sub": sub}


def erfnet_init_state(model: TemporalSegmenter, erfnet_state: Mapping[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
    """The release's initialisation on ERFNet: ``erfnet_state`` (a single-frame ERFNet
    state_dict) mapped onto ``model`` (a ``tdnet_erfnet``): its decoder as it is, and ERFNet's
    encoder copied into EVERY path's sub-network (each sub-network layer from ERFNet's layer
    of the same shape, :meth:`SubNetwork.erfnet_layers`). Load the result with
    ``model.load_state_dict(state, strict=False)``: encodings, hops and norms stay as built."""
    state = {k: v for k, v in erfnet_state.items() if k.startswith("decoder.")}
    for path, subnet in enumerate(model.temporal_module.subnets):
        sources = {"initial_block.": "encoder.initial_block."}
        sources.update({f"layers.{i}.": f"encoder.layers.{j}."
                        for i, j in enumerate(subnet.erfnet_layers())})
        for name in subnet.state_dict():
            prefix = next(p for p in sources if name.startswith(p))
            state[f"subnets.{path}.{name}"] = erfnet_state[sources[prefix] + name[len(prefix):]]
    return state


@register_model("tdnet_erfnet", temporal=True, default_memory_length=3,
                single_frame_init=erfnet_init_state,
                description="TDNet's temporally distributed sub-networks on ERFNet: m = T+1 "
                            "shallow encoders in rotation, attention propagation over T frames")
def _tdnet_erfnet(*, num_classes: int, memory_length: int) -> Segmenter:
    # memory_length m-1 fixes the number of paths (3: TD4).
    temporal = TemporallyDistributed(paths=memory_length + 1,
                                     value_channels=ERFNetDecoder.in_channels)
    return TemporalSegmenter("tdnet_erfnet", FrameInput(), temporal, ERFNetDecoder(num_classes),
                             num_classes=num_classes, memory_length=memory_length)
