"""STF (spatial-temporal fusion) and MAR (memory-augmented refinement) of ST_Memory as a streaming
temporal module on ERFNet (``stf_erfnet``, ``stf_mar_erfnet``). The released network itself
(PSPNet-50, d = 512) is :mod:`lmanet_ros.models.stf_psp`, built from the same parts.

What the release computes (``shared/docs/temporal-modules.md`` sections 2.2, 2.3), here on the
128-channel ERFNet encoder features of a window of three frames, slot 0 the oldest:

- **ISA block** (interlaced sparse attention, :class:`InterlacedSparseAttention`): positions
  split as ``y = by*b + oy``, ``x = bx*b + ox`` (block index, intra-block offset, block size
  b). The LONG stage attends, for each offset ``(oy, ox)``, among the tokens with that offset in
  all blocks of all frames (strided, image-wide); the SHORT stage then attends, within each
  ``b x b`` block, among its ``T*b*b`` tokens of all frames (local). Multi-head scaled
  dot-product attention (``nn.MultiheadAttention``: in/out projections with biases, softmax over
  the keys, attention dropout). Positional embeddings are added to queries and keys only.
- **Positional embeddings**: learned, one per temporal slot: ``pe_enc`` (1, C, 3, Hp, Wp) for the
  window, ``pe_dec`` (1, C, 1, Hp, Wp) for the query; trilinearly resized to the feature size at
  run time (i.e. bilinear per slot; identity at the stored size), cached per feature size when
  inferring (:meth:`SpatioTemporalTransformer.embedding`).
- **Encoder layer** (post-norm), over the three frames jointly:
  ``X <- LN1(X + Drop(ISA(X)))``; ``X <- LN2(X + Drop(W2 Drop(ReLU(W1 X))))`` -> memory M.
- **Decoder layer**: target ``Y = F_q``, the RAW features of the query frame;
  ``Y <- LN1(Y + Drop(ISA(Y)))`` (self, within the query frame, PE ``pe_dec``);
  ``Y <- LN2(Y + Drop(ISA_cross(Y, M)))`` (long stage: queries ``Y + pe_dec``, keys
  ``M + pe_enc``, values M; then a short self stage within the query frame's blocks);
  ``Y <- LN3(Y + Drop(FFN(Y)))`` -> the fused features (B, 128, h, w) for ERFNet's decoder.
- **MAR** (optional, :class:`MemoryAugmentedRefinement`, per pixel, no temporal state):
  ``q = L3(L2(L1 x))`` (bias-free linears, no non-linearity), ``k``, ``v`` the same structure
  on the fixed class memory ``Mk``, ``Mv`` (K = 10 entries x 19 classes, class-major);
  ``A = softmax(q k^T)`` over the K entries WITHOUT scaling; ``r = Wo(A v) + bo``;
  ``x <- LN1(x + Drop(r))``; ``x <- LN2(x + Drop(FFN(x)))``.

Scaled to ERFNet (the release: d 512, 2 heads, FFN 256, block 16 at 1/8 of 1024x2048):
d = 128 channels, 2 heads (head dim 64), FFN 128, block 8 (at 512x1024 the 64 x 128 feature grid
has 8 x 16 blocks, the block grid of the release at its full resolution), dropout 0.1, one
encoder and one decoder layer, PE grid 32 x 64 (the feature grid at 256x512). MAR: q/k/v stacks
128 -> 128 -> 64 -> 64, ``Wo`` 64 -> 128, FFN 128 -> 64 -> 128 (the release's d -> d -> d/2 ->
d/2 and d -> d/2 -> d). Parameters: STF 0.46 M in its layers + 1.05 M positional embeddings
(as in the release, the embeddings dominate), MAR 0.16 M (49 k of them the class memory);
ERFNet itself 2.06 M.

Any size: the features (and the resized embeddings) are zero-padded at the bottom and right to
multiples of the block, padded tokens are masked out as keys (``key_padding_mask``), so that a
real token's result is attention over the real tokens of its group only; the result is cropped
back. (A group holding padded tokens only, possible in the long stage when a side of the feature
map is shorter than the block, is left unmasked: its queries are padding, cropped away, and it is
never a key of a real token.)

Streaming (section 2.8; :class:`SpatioTemporalFusion`): memory = :class:`FeatureMemory`, the raw
encoder features of the last 2 frames (1 MiB per frame at 256x512 in float32, 4 MiB at
512x1024); the encoder layer is a joint attention over the window, so nothing projected is
reusable and STF runs whole at every step.

- Causal form (default): window ``(t-2, t-1, t)``, query the current frame (slot 2). The
  released weights are non-causal (query ``t`` in ``(t-1, t, t+1)``); this form must be trained
  here.
- Delayed form (``delayed=True``, ``output_delay_frames == 1``; ``stf_delayed_erfnet``,
  ``stf_mar_delayed_erfnet``): the released model's slot meaning: the step at frame t computes
  ``(t-2, t-1, t)`` with the query ``t-1`` (slot 1), i.e. returns the logits of frame t-1. See
  :class:`STFSegmenter` for what a caller must do.
- Cold start: with 1 past frame held (or memory length 1) the missing oldest slot holds the
  oldest frame held (duplication: the doc's only option, no trained behaviour exists for fewer
  frames). With an empty memory (a fresh stream, a reset) the features pass unchanged to ERFNet's
  decoder: the single-frame network (in the delayed form too: the first step after a reset
  returns the single-frame logits of the CURRENT frame). If ERFNet's decoder is trained on STF's
  output (the release retrains its classifier), this first frame's logits come from a decoder
  trained on other features: a trainer that unfreezes the decoder should know. A model whose
  decoder knows STF's output only (the release's, :mod:`~lmanet_ros.models.stf_psp`) fills the
  window with the current frame instead (``duplicate_cold_start``).
- MAR is per pixel and applied to STF's output only (not on the single-frame path). Its class
  memory is randomly initialised here (keys and the 19 value prototypes N(0, 1), like the
  LayerNorm-ed features it is compared with); initialising it from training features (the 10
  hardest correctly classified pixels per class as keys, the mean of the 10 most confident as
  the prototype, section 2.3) is a later step. ``k``, ``v`` of the memory are recomputed per
  step (190 x 128 entries: negligible).

Per-frame cost at 256x512 (features 32 x 64, analytic multiply-adds): STF encoder 1.46 G (ISA
projections 0.81 G, attention 0.45 G, FFN 0.20 G), decoder 0.87 G, MAR 0.16 G; ERFNet about
6.7 G (the benchmarks' 53.2 GFLOP at 512x1024, / 4 / 2), i.e. STF adds about 35 %, MAR 2 %.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .erfnet import ERFNetDecoder, ERFNetEncoder
from .memory import FeatureMemory
from .registry import register_model
from .segmenter import TemporalSegmenter
from .temporal import FIFOModule

__all__ = ["LONG", "SHORT", "group_tokens", "ungroup_tokens", "InterlacedSparseAttention",
           "SpatioTemporalTransformer", "ClassMemoryAttention", "MemoryAugmentedRefinement",
           "SpatioTemporalFusion", "STFSegmenter", "stf_erfnet"]

#: Feature sizes whose resized positional embeddings an STF module keeps (inference only).
EMBEDDING_CACHE_SIZES = 4
#: Token groups of the LONG stage: permutation of the grid (N, T, nby, b, nbx, b, C) to
#: (N, oy, ox | T, by, bx | C): one group per image and intra-block offset.
LONG = (0, 3, 5, 1, 2, 4, 6)
#: Token groups of the SHORT stage: (N, by, bx | T, oy, ox | C): one group per image and block.
SHORT = (0, 2, 4, 1, 3, 5, 6)


def group_tokens(tokens: torch.Tensor, block: int, layout: Sequence[int]) -> torch.Tensor:
    """(N, T, H, W, C) tokens, H and W multiples of ``block`` -> (groups, sequence, C).

    ``layout`` (:data:`LONG` or :data:`SHORT`) orders the grid (N, T, H/b, b, W/b, b, C) so that
    its first three axes index the groups and the next three the tokens of a group.
    """
    n, t, h, w, c = tokens.shape
    grid = tokens.reshape(n, t, h // block, block, w // block, block, c).permute(*layout)
    return grid.reshape(-1, grid.shape[3] * grid.shape[4] * grid.shape[5], c)


def ungroup_tokens(groups: torch.Tensor, shape: Sequence[int], block: int,
                   layout: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`group_tokens`: (groups, sequence, C) -> tokens of ``shape``
    (N, T, H, W, C)."""
    n, t, h, w, c = shape
    grid = (n, t, h // block, block, w // block, block, c)
    inverse = sorted(range(len(layout)), key=layout.__getitem__)
    return groups.reshape([grid[axis] for axis in layout]).permute(*inverse).reshape(n, t, h, w, c)


class InterlacedSparseAttention(nn.Module):
    """STF's ISA block: a LONG stage (same intra-block offset, all blocks and frames), then a
    SHORT stage (same block, all frames), each multi-head scaled dot-product attention.

    Tokens are channels-last (N, T, H, W, C) with H, W multiples of ``block``. Self version:
    ``isa(x, pe)``; cross version (decoder): ``isa(y, pe_y, memory, pe_memory)``: the long stage
    takes keys ``memory + pe_memory`` and values ``memory``, the short stage is a self stage on
    the query frames (PE ``pe_y``). Positional embeddings go to queries and keys, never values.

    ``padding``: None, or a bool (1, 1, H, W) map, True at padded positions; these are masked
    out as keys (see the module docstring for groups of padding only).

    Args:
        channels: d (128 on ERFNet).
        heads: attention heads (d divisible by heads).
        block: block side b in feature pixels.
        dropout: attention dropout (training only).
    """

    def __init__(self, channels: int, heads: int, block: int, dropout: float) -> None:
        super().__init__()
        self.block = block
        self.self_attn_long = nn.MultiheadAttention(channels, heads, dropout=dropout,
                                                    batch_first=True)
        self.self_attn_short = nn.MultiheadAttention(channels, heads, dropout=dropout,
                                                     batch_first=True)

    def _stage(self, attention: nn.MultiheadAttention, layout: Sequence[int],
               query: torch.Tensor, query_pe: torch.Tensor, key: torch.Tensor,
               key_pe: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """Attention within the token groups of ``layout``; query (N, Tq, H, W, C), key
        (N, Tk, H, W, C), embeddings broadcastable to them -> (N, Tq, H, W, C)."""
        block = self.block
        mask = None
        if padding is not None:
            flags = padding.expand(*key.shape[:-1]).unsqueeze(-1)
            mask = group_tokens(flags, block, layout).squeeze(-1)           # (groups, Tk...)
            mask = mask & ~mask.all(dim=1, keepdim=True)
        out = attention(group_tokens(query + query_pe, block, layout),
                        group_tokens(key + key_pe, block, layout),
                        group_tokens(key, block, layout), key_padding_mask=mask,
                        need_weights=False)[0]
        return ungroup_tokens(out, query.shape, block, layout)

    def long(self, query: torch.Tensor, query_pe: torch.Tensor, key: torch.Tensor | None = None,
             key_pe: torch.Tensor | None = None,
             padding: torch.Tensor | None = None) -> torch.Tensor:
        """The LONG stage: for each intra-block offset, attention among the tokens with that
        offset across all blocks and frames (keys: ``key``, default the query itself)."""
        if key is None:
            key, key_pe = query, query_pe
        return self._stage(self.self_attn_long, LONG, query, query_pe, key, key_pe, padding)

    def short(self, tokens: torch.Tensor, pe: torch.Tensor,
              padding: torch.Tensor | None = None) -> torch.Tensor:
        """The SHORT stage: within each block, self-attention among its T*b*b tokens."""
        return self._stage(self.self_attn_short, SHORT, tokens, pe, tokens, pe, padding)

    def forward(self, query: torch.Tensor, query_pe: torch.Tensor,
                key: torch.Tensor | None = None, key_pe: torch.Tensor | None = None,
                padding: torch.Tensor | None = None) -> torch.Tensor:
        return self.short(self.long(query, query_pe, key, key_pe, padding), query_pe, padding)


class _FeedForwardLayer(nn.Module):
    """A transformer layer's FFN part: ``x <- norm(x + Drop(W2 Drop(ReLU(W1 x))))``."""

    def __init__(self, channels: int, ffn_channels: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, ffn_channels)
        self.linear2 = nn.Linear(ffn_channels, channels)
        self.dropout = nn.Dropout(dropout)

    def feed_forward(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        return norm(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class EncoderLayer(_FeedForwardLayer):
    """STF's encoder layer (post-norm): self-ISA over all frames, then the FFN.
    (N, T, H, W, C) tokens and PE -> (N, T, H, W, C)."""

    def __init__(self, channels: int, heads: int, ffn_channels: int, block: int,
                 dropout: float) -> None:
        super().__init__(channels, ffn_channels, dropout)
        self.self_attn = InterlacedSparseAttention(channels, heads, block, dropout)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, pe: torch.Tensor,
                padding: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, pe, padding=padding)))
        return self.feed_forward(x, self.norm2)


class DecoderLayer(_FeedForwardLayer):
    """STF's decoder layer: self-ISA within the query frame, cross-ISA to the encoded memory,
    FFN (each post-norm). (N, 1, H, W, C) target -> (N, 1, H, W, C)."""

    def __init__(self, channels: int, heads: int, ffn_channels: int, block: int,
                 dropout: float) -> None:
        super().__init__(channels, ffn_channels, dropout)
        self.self_attn = InterlacedSparseAttention(channels, heads, block, dropout)
        self.multihead_attn = InterlacedSparseAttention(channels, heads, block, dropout)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.norm3 = nn.LayerNorm(channels)

    def forward(self, target: torch.Tensor, target_pe: torch.Tensor, memory: torch.Tensor,
                memory_pe: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        target = self.norm1(target + self.dropout(self.self_attn(target, target_pe,
                                                                 padding=padding)))
        fused = self.multihead_attn(target, target_pe, memory, memory_pe, padding=padding)
        return self.feed_forward(self.norm2(target + self.dropout(fused)), self.norm3)


class SpatioTemporalTransformer(nn.Module):
    """STF: positional embeddings, encoder layers over the window, decoder layers on the query.

    State_dict names as in the release (under the segmenter's ``STF.``): ``pe_enc``, ``pe_dec``,
    ``encoder.layers.{i}.{self_attn.self_attn_{long,short},linear1,linear2,norm1,norm2}.*``,
    ``decoder.layers.{i}.{self_attn,multihead_attn}.self_attn_{long,short}.*``, ``linear1/2``,
    ``norm1..3``. Every weight of two or more dimensions (embeddings included) is
    Xavier-uniform initialised, as in the release.

    Args:
        channels: d.
        frames: window length T (slots of ``pe_enc``).
        heads, ffn_channels, block, dropout: see the module docstring.
        pe_size: (Hp, Wp) grid the embeddings are stored at.
        encoder_layers, decoder_layers: layer counts (1 and 1 in the release).
    """

    def __init__(self, channels: int = 128, *, frames: int = 3, heads: int = 2,
                 ffn_channels: int = 128, block: int = 8, pe_size: tuple[int, int] = (32, 64),
                 dropout: float = 0.1, encoder_layers: int = 1, decoder_layers: int = 1) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("frames", frames), ("heads", heads),
                            ("ffn_channels", ffn_channels), ("block", block),
                            ("encoder_layers", encoder_layers),
                            ("decoder_layers", decoder_layers), *zip(("pe height", "pe width"),
                                                                     pe_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.block = block
        #: (name, height, width) -> ((data_ptr, version) of the parameter, embedding).
        self._embedding_cache: OrderedDict[tuple[str, int, int],
                                           tuple[tuple[int, int], torch.Tensor]] = OrderedDict()
        self.pe_enc = nn.Parameter(torch.empty(1, channels, frames, *pe_size))
        self.pe_dec = nn.Parameter(torch.empty(1, channels, 1, *pe_size))
        layer = (channels, heads, ffn_channels, block, dropout)
        self.encoder = nn.ModuleDict({"layers": nn.ModuleList(
            [EncoderLayer(*layer) for _ in range(encoder_layers)])})
        self.decoder = nn.ModuleDict({"layers": nn.ModuleList(
            [DecoderLayer(*layer) for _ in range(decoder_layers)])})
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    @property
    def frames(self) -> int:
        """Window length T."""
        return self.pe_enc.shape[2]

    def embedding(self, name: str, height: int, width: int) -> torch.Tensor:
        """Embedding ``name`` (``"pe_enc"`` or ``"pe_dec"``, stored (1, C, S, Hp, Wp)) on a
        (height, width) feature grid, channels last and zero-padded at the bottom and right
        to multiples of the block: (1, S, H', W', C).

        Resize: the release's trilinear resize to (S, height, width) (``align_corners=False``),
        which keeps the slot axis as it is, i.e. bilinear on each slot's (Hp, Wp) grid; none at
        the stored size (a view of the parameter: the identity). Without autograd (inference)
        the result is cached per size (:data:`EMBEDDING_CACHE_SIZES` sizes, the least recently
        used dropped); an entry is used only while the parameter keeps its storage and
        version, so loading weights or an optimiser step invalidates it, and moving or casting
        the module (``to``, ``double``) clears the cache.
        """
        pe = getattr(self, name)
        key = (name, height, width)
        stamp = (pe.data_ptr(), pe._version)
        cacheable = not torch.is_grad_enabled()
        entry = self._embedding_cache.get(key) if cacheable else None
        if entry is not None and entry[0] == stamp:
            self._embedding_cache.move_to_end(key)
            return entry[1]
        if tuple(pe.shape[3:]) != (height, width):
            pe = F.interpolate(pe, size=(pe.shape[2], height, width), mode="trilinear",
                               align_corners=False)
        value = pe.permute(0, 2, 3, 4, 1)
        pad_h, pad_w = (-height) % self.block, (-width) % self.block
        if pad_h or pad_w:
            value = F.pad(value, (0, 0, 0, pad_w, 0, pad_h))
        if cacheable:
            self._embedding_cache[key] = (stamp, value)
            while len(self._embedding_cache) > EMBEDDING_CACHE_SIZES:
                self._embedding_cache.popitem(last=False)
        return value

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor],
               recurse: bool = True) -> "SpatioTemporalTransformer":
        """Moving or casting the module (``to``, ``double``, ``cuda``: nn.Module's hook for
        them) drops the cached embeddings."""
        self._embedding_cache.clear()
        return super()._apply(fn, recurse)

    def forward(self, window: Sequence[torch.Tensor], query_index: int) -> torch.Tensor:
        """Fuse T frames (B, C, h, w) each, oldest first; the decoder's target is
        ``window[query_index]``. Returns (B, C, h, w)."""
        if len(window) != self.frames:
            raise ValueError(f"STF takes {self.frames} frames, got {len(window)}")
        height, width = window[0].shape[2:]
        pad_h, pad_w = (-height) % self.block, (-width) % self.block
        pad = (0, 0, 0, pad_w, 0, pad_h)                      # C, W, H of (N, T, H, W, C)
        tokens = F.pad(torch.stack(list(window), dim=1).permute(0, 1, 3, 4, 2), pad)
        pe_enc = self.embedding("pe_enc", height, width)
        pe_dec = self.embedding("pe_dec", height, width)
        padding = None
        if pad_h or pad_w:
            padding = torch.ones(height + pad_h, width + pad_w, dtype=torch.bool,
                                 device=tokens.device)
            padding[:height, :width] = False
            padding = padding.view(1, 1, *padding.shape)
        memory = tokens
        for layer in self.encoder["layers"]:
            memory = layer(memory, pe_enc, padding)
        target = tokens[:, query_index:query_index + 1]
        for layer in self.decoder["layers"]:
            target = layer(target, pe_dec, memory, pe_enc, padding)
        return target[:, 0, :height, :width].permute(0, 3, 1, 2).contiguous()


def _linear_stack(widths: Sequence[int]) -> nn.Sequential:
    """Bias-free linears widths[0] -> widths[1] -> ..., no non-linearity in between."""
    return nn.Sequential(*(nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:])))


class ClassMemoryAttention(nn.Module):
    """MAR's read of the class memory: ``Wo(softmax(q k^T) v) + bo``, softmax over the memory
    entries WITHOUT scaling, single head (release names ``to_q``, ``to_k``, ``to_v``,
    ``to_out.0``).

    Args:
        widths: the q/k/v stacks' widths, e.g. (128, 128, 64, 64).
        dropout: dropout after ``Wo`` (training only).
    """

    def __init__(self, widths: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.to_q = _linear_stack(widths)
        self.to_k = _linear_stack(widths)
        self.to_v = _linear_stack(widths)
        self.to_out = nn.Sequential(nn.Linear(widths[-1], widths[0]), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, memory_key: torch.Tensor,
                memory_value: torch.Tensor) -> torch.Tensor:
        """x (B, N, C) per-pixel tokens; memory (1, K, C) each -> (B, N, C)."""
        scores = self.to_q(x) @ self.to_k(memory_key).transpose(1, 2)        # (B, N, K)
        weights = torch.softmax(scores, dim=-1,
                                dtype=torch.promote_types(x.dtype, torch.float32))
        return self.to_out(weights.to(x.dtype) @ self.to_v(memory_value))


class ClassMemoryLayer(_FeedForwardLayer):
    """MAR's layer (release ``HEdecoder``): ``x <- LN1(x + Drop(attn(x)))``, then the FFN."""

    def __init__(self, channels: int, widths: Sequence[int], ffn_channels: int,
                 dropout: float) -> None:
        super().__init__(channels, ffn_channels, dropout)
        self.attn = ClassMemoryAttention(widths, dropout)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, memory_key: torch.Tensor,
                memory_value: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, memory_key, memory_value)))
        return self.feed_forward(x, self.norm2)


class MemoryAugmentedRefinement(nn.Module):
    """MAR: per-pixel refinement against a class memory. (B, C, h, w) -> (B, C, h, w).

    ``memory_key`` (1, K, C) and ``memory_value`` (1, K, C), K = ``classes`` x
    ``entries_per_class``, class-major (entries ``c * entries_per_class ..`` belong to class
    c); the values are one prototype per class repeated ``entries_per_class`` times (as the
    release's ``value.npy`` rows are), the keys K entries of their own. Both start N(0, 1)
    (random prototypes) until :meth:`set_memory` or a checkpoint sets them; trainable
    parameters as in the release, or persistent buffers with ``fixed_memory`` (the same
    state_dict names: one file carries the model, memory included).

    Args:
        channels: C.
        classes, entries_per_class: 19 and 10 (K = 190).
        widths: the q/k/v stacks (first = channels); None: C -> C -> C/2 -> C/2 (the
            release's 512 -> 512 -> 256 -> 256).
        ffn_channels: FFN width; None: C/2 (the release's 256).
        dropout: residual and FFN dropout (training only).
        fixed_memory: the memory as buffers (never trained) instead of parameters.
    """

    def __init__(self, channels: int = 128, *, classes: int = 19, entries_per_class: int = 10,
                 widths: Sequence[int] | None = None, ffn_channels: int | None = None,
                 dropout: float = 0.1, fixed_memory: bool = False) -> None:
        super().__init__()
        half = channels // 2
        widths = (channels, channels, half, half) if widths is None else tuple(widths)
        ffn_channels = half if ffn_channels is None else ffn_channels
        if widths[0] != channels:
            raise ValueError(f"widths must start at channels ({channels}), got {widths}")
        if classes < 1 or entries_per_class < 1:
            raise ValueError(f"classes and entries_per_class must be >= 1, got {classes}, "
                             f"{entries_per_class}")
        self.entries_per_class = entries_per_class
        entries = classes * entries_per_class
        memory_key = torch.randn(1, entries, channels)
        prototypes = torch.randn(classes, 1, channels)
        memory_value = prototypes.expand(classes, entries_per_class, channels).reshape(
            1, entries, channels)
        for name, tensor in (("memory_key", memory_key), ("memory_value", memory_value)):
            if fixed_memory:
                self.register_buffer(name, tensor)
            else:
                self.register_parameter(name, nn.Parameter(tensor))
        self.HEdecoder = ClassMemoryLayer(channels, widths, ffn_channels, dropout)

    @torch.no_grad()
    def set_memory(self, keys: torch.Tensor, prototypes: torch.Tensor) -> None:
        """Set the memory: ``keys`` (K, C), class-major; ``prototypes`` (classes, C), each
        repeated ``entries_per_class`` times into ``memory_value`` (the layout of the
        release's ``key.npy`` (190, 512) and ``value.npy`` (19, 512))."""
        _, entries, channels = self.memory_key.shape
        classes = entries // self.entries_per_class
        if tuple(keys.shape) != (entries, channels):
            raise ValueError(f"keys must be ({entries}, {channels}), got {tuple(keys.shape)}")
        if tuple(prototypes.shape) != (classes, channels):
            raise ValueError(f"prototypes must be ({classes}, {channels}), got "
                             f"{tuple(prototypes.shape)}")
        self.memory_key.copy_(keys.unsqueeze(0))
        self.memory_value.copy_(prototypes.repeat_interleave(self.entries_per_class, dim=0)
                                .unsqueeze(0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.flatten(2).transpose(1, 2)                         # (B, h*w, C)
        refined = self.HEdecoder(tokens, self.memory_key, self.memory_value)
        return refined.transpose(1, 2).reshape(features.shape)


class SpatioTemporalFusion(FIFOModule):
    """STF (+ MAR) as a temporal module: window = the past frames held + the current one.

    Memory: :class:`~lmanet_ros.models.memory.FeatureMemory`, the raw encoder features of the
    last ``past_frames`` (2) frames. Memory lengths 1..``past_frames`` run (1: the window's two
    oldest slots hold the one past frame); more are refused (``pe_enc`` has one slot per window
    frame). Cold start and the delayed form: see the module docstring.

    Children (the segmenter's top-level ones): ``STF`` (:class:`SpatioTemporalTransformer`) and,
    with ``mar``, ``MAR`` (:class:`MemoryAugmentedRefinement`).

    Args:
        channels: encoder feature channels (128 for ERFNet, 512 for PSPNet-50's bottleneck);
            also the fused width.
        past_frames: past frames in the window (2: window t-2, t-1, t).
        mar: the MAR applied after STF (None: none).
        delayed: the decoder's query is slot ``past_frames - 1`` (frame t-1, the middle one
            of three) instead of the current frame: the step's output belongs to the previous
            frame (:attr:`output_delay_frames` 1).
        duplicate_cold_start: with an empty memory, fuse the current frame's window filled
            with that frame alone (every slot) instead of passing the features unchanged to
            the decoder: for a decoder trained on STF's output only (the release's classifier),
            which has no single-frame path.
        stf_options: further :class:`SpatioTemporalTransformer` arguments (heads,
            ffn_channels, block, pe_size, dropout, layer counts).
    """

    memory_type = FeatureMemory

    def __init__(self, channels: int = 128, *, past_frames: int = 2,
                 mar: MemoryAugmentedRefinement | None = None, delayed: bool = False,
                 duplicate_cold_start: bool = False, **stf_options: object) -> None:
        super().__init__()
        if isinstance(past_frames, bool) or not isinstance(past_frames, int) or past_frames < 1:
            raise ValueError(f"past_frames must be an int >= 1, got {past_frames!r}")
        self.STF = SpatioTemporalTransformer(channels, frames=past_frames + 1, **stf_options)
        self.MAR = mar
        self.out_channels = channels
        #: Frames by which a step's output lags the frame stepped (0 causal, 1 delayed).
        self.output_delay_frames = 1 if delayed else 0
        self.duplicate_cold_start = duplicate_cold_start

    @property
    def past_frames(self) -> int:
        """Past frames in a full window (the largest memory length)."""
        return self.STF.frames - 1

    def check_memory_length(self, length: int) -> None:
        if length > self.past_frames:
            raise ValueError(f"STF's window has {self.past_frames + 1} slots: memory length "
                             f"{length} needs a model built with past_frames={length}")

    def memory_entry(self, features: torch.Tensor) -> tuple[torch.Tensor]:
        """A frame's entry: its raw features (B, C, h, w)."""
        return (features,)

    def window(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The window's frames for 1..T frames (past ones held, then the current one), oldest
        first: missing oldest slots hold the oldest frame given (cold start)."""
        if not 1 <= len(frames) <= self.STF.frames:
            raise ValueError(f"need 1 to {self.STF.frames} frames, got {len(frames)}")
        return [frames[0]] * (self.STF.frames - len(frames)) + list(frames)

    @property
    def query_index(self) -> int:
        """The window slot of the decoder's query: the last (causal) or the one before it."""
        return self.STF.frames - 1 - self.output_delay_frames

    def fuse(self, window: Sequence[torch.Tensor]) -> torch.Tensor:
        """STF (+ MAR) on a full window (T frames (B, C, h, w), oldest first) -> (B, C, h, w)."""
        fused = self.STF(window, self.query_index)
        return fused if self.MAR is None else self.MAR(fused)

    def read(self, features: torch.Tensor, memory: FeatureMemory) -> torch.Tensor:
        return self.fuse(self.window([*memory.features, features]))

    def step(self, features: torch.Tensor, memory: FeatureMemory, *, memory_length: int,
             update_memory: bool = True) -> tuple[torch.Tensor, FeatureMemory]:
        """:meth:`FIFOModule.step`; with ``duplicate_cold_start`` an empty memory fuses the
        current frame's window of that frame alone (its entry stored as usual)."""
        if len(memory) or not self.duplicate_cold_start:
            return super().step(features, memory, memory_length=memory_length,
                                update_memory=update_memory)
        fused = self.read(features, memory)
        if not update_memory:
            return fused, memory
        return fused, memory.append(self.memory_entry(features), memory_length)


class STFSegmenter(TemporalSegmenter):
    """A network with STF (+ MAR) between encoder and decoder (ERFNet here, PSPNet-50 in
    :mod:`~lmanet_ros.models.stf_psp`); the delayed form reports its output delay.

    Contract of :attr:`output_delay_frames` (0 on every other model; honoured by
    :class:`lmanet_ros.pipeline.SegmentationPipeline` and so by the node and the evaluation): with
    delay 1, the logits of ``step(x_t, memory)`` belong to the NEWEST frame the given memory holds
    (frame t-1 when every frame is stored), computed with ``x_t`` as its future frame. The caller
    must:

    - keep, per stream, the header (stamp, frame_id) of the last frame stepped with
      ``update_memory=True``, publish the labels with THAT header and score them against that
      frame's labels, and report the added latency (one frame period + compute) as such;
    - after a reset (memory None or empty) the step returns the logits of the CURRENT frame
      (single-frame, or with ``duplicate_cold_start`` its window filled with it): publish them
      with the current header (labels right away); the next step's output is the same frame's
      fused result: publish it as a replacement or drop it (a consumer that takes one message
      per stamp should get only one of them);
    - with a stride policy (``update_memory=False`` on some frames) every step between two stored
      frames returns the newest stored frame's labels again: publish them once;
    - training on clips: ``model(frames)`` returns the logits of frame N-2 (the last frame is the
      future one), so the labelled frame must be the second-last.
    """

    @property
    def output_delay_frames(self) -> int:
        """Frames by which a step's output lags the frame stepped: 0 causal, 1 delayed."""
        return self.temporal_module.output_delay_frames


def stf_erfnet(*, num_classes: int = 20, memory_length: int = 2, mar: bool = False,
               delayed: bool = False) -> STFSegmenter:
    """STF (+ MAR) on ERFNet. Names: ``stf_erfnet``, ``stf_mar_erfnet``; the delayed forms
    ``stf_delayed_erfnet``, ``stf_mar_delayed_erfnet`` (labels of the previous frame, see
    :class:`STFSegmenter`)."""
    name = "stf_" + ("mar_" if mar else "") + ("delayed_" if delayed else "") + "erfnet"
    channels = ERFNetEncoder.out_channels
    temporal = SpatioTemporalFusion(channels, past_frames=2,
                                    mar=MemoryAugmentedRefinement(channels) if mar else None,
                                    delayed=delayed, heads=2, ffn_channels=128, block=8,
                                    pe_size=(32, 64))
    return STFSegmenter(name, ERFNetEncoder(), temporal, ERFNetDecoder(num_classes),
                        num_classes=num_classes, memory_length=memory_length)


register_model("stf_erfnet", temporal=True, default_memory_length=2,
               description="STF on ERFNet: interlaced sparse attention over frames t-2, t-1, t "
                           "(causal), query t")(partial(stf_erfnet, mar=False))
register_model("stf_mar_erfnet", temporal=True, default_memory_length=2,
               description="STF + MAR on ERFNet: STF's causal fusion, then per-pixel refinement "
                           "against a class memory (190 entries)")(partial(stf_erfnet, mar=True))
register_model("stf_delayed_erfnet", temporal=True, default_memory_length=2,
               output_delay_frames=1,
               description="STF on ERFNet, delayed (the release's slots): window t-2, t-1, t, "
                           "query t-1: the labels are for the PREVIOUS frame"
               )(partial(stf_erfnet, mar=False, delayed=True))
register_model("stf_mar_delayed_erfnet", temporal=True, default_memory_length=2,
               output_delay_frames=1,
               description="STF + MAR on ERFNet, delayed: query t-1 of window t-2, t-1, t, then "
                           "MAR: the labels are for the PREVIOUS frame"
               )(partial(stf_erfnet, mar=True, delayed=True))
