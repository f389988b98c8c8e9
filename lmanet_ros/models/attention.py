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

:func:`local_memory_attention` computes this exactly with large batched matrix products over
tiles (see its docstring); :func:`local_memory_attention_reference` is the direct loop over
offsets that the tests compare it with (in float64).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_RADIUS", "local_memory_attention", "local_memory_attention_reference"]

#: Window radius of the published LMANet (P = 21).
DEFAULT_RADIUS = 10

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


def _padded_channels_last(x: torch.Tensor, top_left: int, bottom: int, right: int
                          ) -> torch.Tensor:
    """(B, C, H, W) -> zero-padded (B, H + top_left + bottom, W + top_left + right, C)."""
    batch, channels, height, width = x.shape
    out = x.new_zeros(batch, height + top_left + bottom, width + top_left + right, channels)
    out[:, top_left:top_left + height, top_left:top_left + width].copy_(x.permute(0, 2, 3, 1))
    return out


def local_memory_attention(query_key: torch.Tensor, memory_keys: Sequence[torch.Tensor],
                           memory_values: Sequence[torch.Tensor], *,
                           radius: int = DEFAULT_RADIUS, tile: tuple[int, int] = (8, 8),
                           chunk_elements: int | None = None) -> torch.Tensor:
    """Exact local memory attention as batched matrix products over tiles.

    The map is split into tiles of ``tile`` = (th, tw) pixels. For each tile the
    (th + 2r) x (tw + 2r) region of the zero-padded memory keys and values that covers the
    windows of all its pixels is gathered (about 12x the map for 8x8 tiles, never P*P copies);
    the logits of the tile's queries against all T regions are one matrix product; a fixed
    additive mask (0 inside each pixel's own P x P window, -inf outside, the same for every
    tile) makes the softmax over the T regions exactly the joint softmax over the pixel's
    T * P * P window entries (zero-padded positions keep logit 0 and value 0); the read-out is a
    second matrix product. Tiles are processed in chunks so that the extra memory stays bounded
    (``chunk_elements`` logits at a time). Half-precision inputs take the softmax in float32.
    Works on any device and keeps autograd.

    Args:
        query_key: (B, Ck, H, W) keys of the current frame.
        memory_keys: T tensors (B, Ck, H, W), oldest first (the order does not matter).
        memory_values: T tensors (B, Cv, H, W).
        radius: window radius r (P = 2r + 1); 10 in LMANet.
        tile: tile size (th, tw) in feature pixels.
        chunk_elements: logits computed per chunk; default 2**22 on CPU, 2**26 on CUDA.

    Returns:
        (B, Cv, H, W) read-out, in the dtype of ``query_key``.
    """
    _check_inputs(query_key, memory_keys, memory_values, radius)
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

    # Zero-padded, channels-last memory: rows/cols beyond the map are positions outside it.
    keys = [_padded_channels_last(k, radius, radius + extra_h, radius + extra_w)
            for k in memory_keys]
    values = [_padded_channels_last(v, radius, radius + extra_h, radius + extra_w)
              for v in memory_values]
    # Queries grouped by tile: (B, tiles_y, tiles_x, th*tw, Ck).
    query = F.pad(query_key, (0, extra_w, 0, extra_h))
    query = query.reshape(batch, key_channels, tiles_y, tile_h, tiles_x, tile_w)
    query = query.permute(0, 2, 4, 3, 5, 1).reshape(batch, tiles_y, tiles_x, queries_per_tile,
                                                    key_channels)
    mask = _window_mask((tile_h, tile_w), radius, device)

    if chunk_elements is None:
        chunk_elements = 2 ** 26 if device.type == "cuda" else 2 ** 22
    logits_per_tile_row = batch * tiles_x * queries_per_tile * frames * region
    rows_per_chunk = max(1, min(tiles_y, chunk_elements // max(1, logits_per_tile_row)))

    out_rows = []
    for row0 in range(0, tiles_y, rows_per_chunk):
        rows = min(rows_per_chunk, tiles_y - row0)
        tiles = batch * rows * tiles_x
        key_windows = query_key.new_empty(batch, rows, tiles_x, frames, region_h, region_w,
                                          key_channels)
        value_windows = query_key.new_empty(batch, rows, tiles_x, frames, region_h, region_w,
                                            value_channels)
        top = row0 * tile_h
        for t in range(frames):
            for source, target in ((keys[t], key_windows), (values[t], value_windows)):
                part = source[:, top:top + rows * tile_h + span]
                # (B, rows, tiles_x, C, region_h, region_w) view -> channels last.
                part = part.unfold(1, region_h, tile_h).unfold(2, region_w, tile_w)
                target[:, :, :, t].copy_(part.permute(0, 1, 2, 4, 5, 3))
        key_windows = key_windows.reshape(tiles, frames * region, key_channels)
        value_windows = value_windows.reshape(tiles, frames * region, value_channels)
        queries = query[:, row0:row0 + rows].reshape(tiles, queries_per_tile, key_channels)

        logits = torch.bmm(queries, key_windows.transpose(1, 2))
        if dtype in _HALF_TYPES:
            logits = logits.float()
        logits.view(tiles, queries_per_tile, frames, region).add_(mask)
        probs = torch.softmax(logits.view(tiles, queries_per_tile, frames * region), dim=-1)
        readout = torch.bmm(probs.to(dtype), value_windows)  # (tiles, th*tw, Cv)
        readout = readout.view(batch, rows, tiles_x, tile_h, tile_w, value_channels)
        out_rows.append(readout.permute(0, 5, 1, 3, 2, 4).reshape(
            batch, value_channels, rows * tile_h, tiles_x * tile_w))
    out = torch.cat(out_rows, dim=2) if len(out_rows) > 1 else out_rows[0]
    return out[:, :, :height, :width]
