"""Local memory attention of LMANet (exact semantics), fast and reference implementations.

For a query key map ``q`` (B, Ck, H, W) and T memory frames with keys ``k_t`` (B, Ck, H, W) and
values ``v_t`` (B, Cv, H, W), every pixel (y, x) attends to the P x P window (P = 2r + 1) around
itself in every memory frame:

- logit ``s[t, dy, dx] = sum_c q[c, y, x] * k_t[c, y + dy, x + dx]`` for dy, dx in [-r, r], with
  no scaling;
- positions outside the map are zero padded: their logit is exactly 0, their value is 0, and they
  still take part in the softmax (clamping the window at borders is not equivalent);
- ONE softmax per pixel jointly over all T * P * P logits;
- read-out ``out[c, y, x] = sum_{t, dy, dx} p[t, dy, dx] * v_t[c, y + dy, x + dx]``.

:func:`local_memory_attention` computes this exactly, with one of two implementations (its
``backend`` argument, by default the environment variable ``LMANET_ATTENTION``, default ``auto``):

- ``torch``: large batched matrix products over tiles (see :func:`_tiled_attention`); any device
  and dtype, keeps autograd. The reference path and the fallback.
- ``compiled``: a fused C++ CPU kernel (``lmanet_ros/csrc/local_memory_attention.cpp``, built by
  ``scripts/setup_venv.sh``; see :mod:`._attention_ext`) for float32 CPU inputs without
  autograd: logits, softmax and read-out per tile of 8 pixels, without materialising the
  window or the probabilities.
- ``auto``: ``compiled`` where it applies and is available, else ``torch``. When the kernel is
  unavailable (not built, or failing to load) one warning says why, then ``torch`` is used.

:func:`attention_backend` says which one float32 CPU inference uses, and why.
:func:`local_memory_attention_reference` is the direct loop over offsets that the tests compare
with (in float64).
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_RADIUS", "BACKENDS", "BACKEND_ENV", "local_memory_attention",
           "local_memory_attention_reference", "attention_backend"]

#: Window radius of the published LMANet (P = 21).
DEFAULT_RADIUS = 10
#: Values of ``backend`` and of the environment variable :data:`BACKEND_ENV`.
BACKENDS = ("auto", "compiled", "torch")
#: Environment variable choosing the backend when the call does not.
BACKEND_ENV = "LMANET_ATTENTION"

_LOG = logging.getLogger(__name__)

_HALF_TYPES = (torch.float16, torch.bfloat16)


def _check_inputs(query_key: torch.Tensor, memory_keys: Sequence[torch.Tensor],
                  memory_values: Sequence[torch.Tensor], radius: int) -> None:
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if query_key.dim() != 4:
        raise ValueError(f"query_key must be (B, Ck, H, W), got shape {tuple(query_key.shape)}")
    if len(memory_keys) == 0:
        raise ValueError("local memory attention needs at least one memory frame")
    if len(memory_keys) != len(memory_values):
        raise ValueError(f"{len(memory_keys)} memory keys but {len(memory_values)} values")
    batch, channels, height, width = query_key.shape
    for index, (key, value) in enumerate(zip(memory_keys, memory_values)):
        if tuple(key.shape) != (batch, channels, height, width):
            raise ValueError(f"memory key {index} has shape {tuple(key.shape)}, expected "
                             f"{(batch, channels, height, width)} like the query key")
        if (value.dim() != 4 or value.shape[0] != batch
                or tuple(value.shape[2:]) != (height, width)):
            raise ValueError(f"memory value {index} has shape {tuple(value.shape)}, expected "
                             f"({batch}, Cv, {height}, {width})")
        if value.shape[1] != memory_values[0].shape[1]:
            raise ValueError("memory values differ in their number of channels")


def local_memory_attention_reference(query_key: torch.Tensor,
                                     memory_keys: Sequence[torch.Tensor],
                                     memory_values: Sequence[torch.Tensor], *,
                                     radius: int = DEFAULT_RADIUS) -> torch.Tensor:
    """Direct implementation: a loop over the T * P * P offsets (slow; for tests).

    Materialises all T * P * P logits per pixel; use it on small maps (in float64 for
    reference values). Arguments as for :func:`local_memory_attention`.
    """
    _check_inputs(query_key, memory_keys, memory_values, radius)
    batch, _, height, width = query_key.shape
    size = 2 * radius + 1
    pad = (radius, radius, radius, radius)
    padded_keys = [F.pad(key, pad) for key in memory_keys]
    padded_values = [F.pad(value, pad) for value in memory_values]
    frames = len(memory_keys)
    logits = query_key.new_empty(batch, frames, size * size, height, width)
    for t, key in enumerate(padded_keys):
        for dy in range(size):
            for dx in range(size):
                window = key[:, :, dy:dy + height, dx:dx + width]
                logits[:, t, dy * size + dx] = (query_key * window).sum(dim=1)
    probs = torch.softmax(logits.reshape(batch, frames * size * size, height, width), dim=1)
    probs = probs.reshape(batch, frames, size * size, height, width)
    out = query_key.new_zeros(batch, memory_values[0].shape[1], height, width)
    for t, value in enumerate(padded_values):
        for dy in range(size):
            for dx in range(size):
                window = value[:, :, dy:dy + height, dx:dx + width]
                out += probs[:, t, dy * size + dx].unsqueeze(1) * window
    return out


def _window_mask(tile: tuple[int, int], radius: int, device: torch.device) -> torch.Tensor:
    """Additive mask (th*tw, 1, wh*ww): 0 where a window position is within a pixel's window.

    The window region of a tile of th x tw pixels is (th + 2r) x (tw + 2r) positions of the
    zero-padded map; pixel (qy, qx) of the tile sees region positions (wy, wx) with
    0 <= wy - qy <= 2r and 0 <= wx - qx <= 2r, i.e. exactly its own P x P window.
    """
    tile_h, tile_w = tile
    span = 2 * radius
    qy = torch.arange(tile_h, device=device).view(tile_h, 1, 1, 1)
    qx = torch.arange(tile_w, device=device).view(1, tile_w, 1, 1)
    wy = torch.arange(tile_h + span, device=device).view(1, 1, tile_h + span, 1)
    wx = torch.arange(tile_w + span, device=device).view(1, 1, 1, tile_w + span)
    inside = ((wy - qy >= 0) & (wy - qy <= span) & (wx - qx >= 0) & (wx - qx <= span))
    mask = torch.zeros(inside.shape, dtype=torch.float32, device=device)
    mask.masked_fill_(~inside, float("-inf"))
    return mask.reshape(tile_h * tile_w, 1, (tile_h + span) * (tile_w + span))


def _stack_padded(maps: Sequence[torch.Tensor], radius: int, extra_h: int, extra_w: int
                  ) -> torch.Tensor:
    """T maps (B, C, H, W) -> zero-padded channels-last (B, T, H + 2r + eh, W + 2r + ew, C).

    The border of r on every side and the extra eh rows / ew columns that round the map up to
    whole tiles are zeros: positions outside the map.
    """
    stacked = torch.stack(tuple(maps), dim=1)  # (B, T, C, H, W)
    batch, frames, channels, height, width = stacked.shape
    out = stacked.new_zeros(batch, frames, height + 2 * radius + extra_h,
                            width + 2 * radius + extra_w, channels)
    out[:, :, radius:radius + height, radius:radius + width].copy_(stacked.permute(0, 1, 3, 4, 2))
    return out


def _tiled_attention(query_key: torch.Tensor, memory_keys: Sequence[torch.Tensor],
                     memory_values: Sequence[torch.Tensor], radius: int, tile: tuple[int, int],
                     chunk_elements: int | None) -> torch.Tensor:
    """The ``torch`` backend: exact local memory attention as batched matrix products over tiles.

    The map is split into tiles of ``tile`` = (th, tw) pixels. For each tile the
    (th + 2r) x (tw + 2r) region of the zero-padded memory keys and values that covers the
    windows of all its pixels is gathered (about 12x the map for 8x8 tiles, never P*P copies);
    the logits of the tile's queries against all T regions are one matrix product; a fixed
    additive mask (0 inside each pixel's own P x P window, -inf outside, the same for every
    tile) makes the softmax over the T regions exactly the joint softmax over the pixel's
    T * P * P window entries (zero-padded positions keep logit 0 and value 0); the read-out is a
    second matrix product. Tiles are processed in chunks so that the extra memory stays bounded
    (``chunk_elements`` logits at a time). Half-precision inputs take the softmax in float32.
    Works on any device and keeps autograd. Arguments as for :func:`local_memory_attention`
    (inputs already checked).
    """
    tile_h, tile_w = (int(v) for v in tile)
    if tile_h < 1 or tile_w < 1:
        raise ValueError(f"tile must be two positive ints, got {tile}")
    batch, key_channels, height, width = query_key.shape
    value_channels = memory_values[0].shape[1]
    frames = len(memory_keys)
    dtype, device = query_key.dtype, query_key.device
    span = 2 * radius
    tiles_y, tiles_x = -(-height // tile_h), -(-width // tile_w)
    extra_h, extra_w = tiles_y * tile_h - height, tiles_x * tile_w - width
    region_h, region_w = tile_h + span, tile_w + span
    region = region_h * region_w
    queries_per_tile = tile_h * tile_w

    keys = _stack_padded(memory_keys, radius, extra_h, extra_w)
    values = _stack_padded(memory_values, radius, extra_h, extra_w)
    # Queries grouped by tile, tile rows outermost: (tiles_y, B, tiles_x, th*tw, Ck), so that
    # a chunk of tile rows is a contiguous slice (and so is its part of the output buffer).
    query = F.pad(query_key, (0, extra_w, 0, extra_h))
    query = query.reshape(batch, key_channels, tiles_y, tile_h, tiles_x, tile_w)
    query = query.permute(2, 0, 4, 3, 5, 1).reshape(tiles_y, batch, tiles_x, queries_per_tile,
                                                    key_channels)
    # The same additive window mask for every tile and every memory frame.
    mask = _window_mask((tile_h, tile_w), radius, device).expand(queries_per_tile, frames, region)
    mask = mask.reshape(1, queries_per_tile, frames * region).to(dtype)

    if chunk_elements is None:
        chunk_elements = 2 ** 26 if device.type == "cuda" else 2 ** 23
    logits_per_tile_row = batch * tiles_x * queries_per_tile * frames * region
    rows_per_chunk = max(1, min(tiles_y, chunk_elements // max(1, logits_per_tile_row)))

    # Without autograd the read-out of every chunk goes straight into one buffer (bmm out=).
    tracking = torch.is_grad_enabled() and any(
        t.requires_grad for t in (query_key, *memory_keys, *memory_values))
    out = None if tracking else query_key.new_empty(tiles_y, batch, tiles_x, queries_per_tile,
                                                    value_channels)
    pieces = []
    for row0 in range(0, tiles_y, rows_per_chunk):
        rows = min(rows_per_chunk, tiles_y - row0)
        tiles = rows * batch * tiles_x
        top, bottom = row0 * tile_h, (row0 + rows) * tile_h + span
        # Window regions (B, T, rows, tiles_x, C, region_h, region_w), a strided view, copied
        # once into (tiles, T * region, C) rows for the matrix products.
        key_windows = keys[:, :, top:bottom].unfold(2, region_h, tile_h).unfold(
            3, region_w, tile_w).permute(2, 0, 3, 1, 5, 6, 4).reshape(
            tiles, frames * region, key_channels)
        value_windows = values[:, :, top:bottom].unfold(2, region_h, tile_h).unfold(
            3, region_w, tile_w).permute(2, 0, 3, 1, 5, 6, 4).reshape(
            tiles, frames * region, value_channels)
        queries = query[row0:row0 + rows].reshape(tiles, queries_per_tile, key_channels)

        logits = torch.baddbmm(mask, queries, key_windows.transpose(1, 2))
        probs = torch.softmax(logits.float() if dtype in _HALF_TYPES else logits, dim=-1)
        probs = probs.to(dtype)
        if out is not None:
            torch.bmm(probs, value_windows,
                      out=out[row0:row0 + rows].view(tiles, queries_per_tile, value_channels))
        else:
            pieces.append(torch.bmm(probs, value_windows).view(rows, batch, tiles_x,
                                                               queries_per_tile, value_channels))
    result = out if out is not None else torch.cat(pieces)
    result = result.view(tiles_y, batch, tiles_x, tile_h, tile_w, value_channels)
    result = result.permute(1, 5, 0, 3, 2, 4).reshape(batch, value_channels, tiles_y * tile_h,
                                                      tiles_x * tile_w)
    return result[:, :, :height, :width]


def _requested_backend(backend: str | None) -> tuple[str, str]:
    """(backend, where it came from): the argument, else $LMANET_ATTENTION, else "auto"."""
    source = "backend"
    if backend is None:
        backend, source = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto", BACKEND_ENV
    if backend not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend, source


@functools.cache
def _compiled_kernel() -> tuple[bool, str]:
    """(available, instruction set or reason); warns once per process when unavailable."""
    # Imported on first use, so that ``python -m lmanet_ros.models._attention_ext build`` runs
    # a module that importing the models has not loaded yet.
    from . import _attention_ext

    available, detail = _attention_ext.load()
    if not available:
        _LOG.warning("local memory attention: compiled CPU kernel unavailable, using the "
                     "PyTorch path: %s", detail)
    return available, detail


def _compiled_unsuitable(tensors: Sequence[torch.Tensor]) -> str | None:
    """Why the compiled kernel cannot take these inputs, or None when it can."""
    if torch.compiler.is_compiling():
        return "traced by torch.compile"
    if any(t.device.type != "cpu" for t in tensors):
        return "inputs are not on the CPU"
    if any(t.dtype != torch.float32 for t in tensors):
        return f"dtype {tensors[0].dtype} (the kernel takes float32)"
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "autograd needs the PyTorch path"
    return None


def attention_backend() -> str:
    """The backend that float32 CPU inference takes under the current $LMANET_ATTENTION.

    Returns:
        ``"compiled (<instruction set>)"``, e.g. ``"compiled (avx2+fma)"``;
        ``"torch (LMANET_ATTENTION=torch)"``; ``"torch (compiled kernel unavailable: <why>)"``;
        or, with ``LMANET_ATTENTION=compiled`` and no kernel, ``"unavailable (<why>)"``
        (calls then raise).
    """
    backend, _ = _requested_backend(None)
    if backend == "torch":
        return f"torch ({BACKEND_ENV}=torch)"
    available, detail = _compiled_kernel()
    if available:
        return f"compiled ({detail})"
    return f"unavailable ({detail})" if backend == "compiled" else (
        f"torch (compiled kernel unavailable: {detail})")


def local_memory_attention(query_key: torch.Tensor, memory_keys: Sequence[torch.Tensor],
                           memory_values: Sequence[torch.Tensor], *,
                           radius: int = DEFAULT_RADIUS, tile: tuple[int, int] = (8, 8),
                           chunk_elements: int | None = None,
                           backend: str | None = None) -> torch.Tensor:
    """Exact local memory attention (see the module docstring for the semantics).

    Args:
        query_key: (B, Ck, H, W) keys of the current frame.
        memory_keys: T tensors (B, Ck, H, W), oldest first (the order does not matter).
        memory_values: T tensors (B, Cv, H, W).
        radius: window radius r (P = 2r + 1); 10 in LMANet.
        tile: tile size (th, tw) in feature pixels of the ``torch`` backend (a speed knob).
        chunk_elements: logits per chunk of the ``torch`` backend; default 2**23 on CPU, 2**26
            on CUDA.
        backend: ``"auto"``, ``"compiled"`` or ``"torch"`` (see the module docstring); None
            reads $LMANET_ATTENTION (default ``"auto"``). ``auto`` takes the compiled kernel for
            float32 CPU inputs when no gradient is needed (not under ``torch.compile``) and the
            kernel is available.

    Returns:
        (B, Cv, H, W) read-out, in the dtype of ``query_key``.

    Raises:
        ValueError: bad shapes, radius or backend name, or ``"compiled"`` for inputs it cannot
            take (not float32, not on the CPU, or needing autograd).
        RuntimeError: ``"compiled"`` requested and the kernel is not available.
    """
    _check_inputs(query_key, memory_keys, memory_values, radius)
    requested, source = _requested_backend(backend)
    if requested != "torch":
        unsuitable = _compiled_unsuitable((query_key, *memory_keys, *memory_values))
        if unsuitable is None:
            available, detail = _compiled_kernel()
            if available:
                return torch.ops.lmanet_ros.local_memory_attention(
                    query_key, list(memory_keys), list(memory_values), radius)
            if requested == "compiled":
                raise RuntimeError(f"{source}='compiled': {detail}")
        elif requested == "compiled":
            raise ValueError(f"{source}='compiled' cannot take these inputs: {unsuitable}")
    return _tiled_attention(query_key, memory_keys, memory_values, radius, tile, chunk_elements)
