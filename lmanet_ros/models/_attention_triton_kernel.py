"""The Triton kernel of local memory attention (imported only by :mod:`.attention_triton`).

This module imports triton at the top: importing it is what :mod:`.attention_triton` does lazily,
on first use, so that the package imports without triton. Whether the kernel is native (GPU) or
interpreted (``TRITON_INTERPRET=1``: CPU tensors, in Python, for tests) is fixed for the whole
process when triton is first imported: ``triton.language`` builds its library functions
(``tl.max``, ``tl.sum``, ``tl.cdiv``) for one mode then, and a kernel of the other mode cannot
call them. :data:`INTERPRETED` is that mode; importing this module raises ImportError when
$TRITON_INTERPRET changed between importing triton and importing this module.

One program computes the read-out of one tile of TILE_H x TILE_W query pixels of one batch item
for BLOCK_CV value channels. The P x P windows (P = 2r + 1) of all pixels of the tile lie in a
region of (TILE_H + 2r) x (TILE_W + 2r) positions of each memory frame; the program walks the
T regions in chunks of BLOCK_N positions (flattened row-major) and keeps, per pixel, a running
maximum, a running sum of exponentials and a running weighted sum of values (online softmax),
so neither the window nor the probabilities are ever stored:

- logits: ``s = q @ k_chunk`` (TILE_H*TILE_W, BLOCK_N), fp32 accumulation; keys outside the map
  are loaded as 0, so a zero-padded position's logit is exactly 0 (and its value is 0), and it
  counts in the softmax as the definition says;
- positions that are not in a pixel's own window (the region serves the whole tile) and the
  padding of the last chunk beyond the region get -inf; a pixel can thus see a chunk that holds
  none of its positions: its running maximum stays -inf, and the update then subtracts 0
  instead of -inf (no ``exp(-inf - -inf)``);
- read-out: ``acc = acc * exp(m_old - m_new) + p @ v_chunk``, with ``p`` cast to the inputs'
  dtype for the product (fp32 accumulation); the output is ``acc / l`` in the output's dtype.

float32 products are exact fp32 (``input_precision="ieee"``, no TF32). The interpreter cannot
multiply bfloat16 blocks (its ``tl.dot`` multiplies their bit patterns: triton-lang/triton
issue 11584), so there the operands of bfloat16 inputs are cast to float32 (their products
are exact in fp32, as on the GPU's bfloat16 units).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRETED", "dot_dtype", "fused_local_memory_attention"]


@triton.jit
def fused_local_memory_attention(
        query_ptr, keys_ptr, values_ptr, out_ptr, frames, height, width, key_channels,
        value_channels, RADIUS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_CK: tl.constexpr, BLOCK_CV: tl.constexpr,
        DOT_DTYPE: tl.constexpr):
    """Grid (tiles, B, value-channel blocks); contiguous query (B, Ck, H, W), keys
    (B, T, Ck, H, W), values (B, T, Cv, H, W) and output (B, Cv, H, W). DOT_DTYPE: the dtype of
    the matrix products' operands (the inputs' dtype, or float32 where the interpreter cannot
    multiply bfloat16)."""
    span: tl.constexpr = 2 * RADIUS
    region_w: tl.constexpr = TILE_W + span
    region: tl.constexpr = (TILE_H + span) * region_w
    tile = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    tiles_x = tl.cdiv(width, TILE_W)
    top = (tile // tiles_x) * TILE_H
    left = (tile % tiles_x) * TILE_W
    plane = height * width

    pixel = tl.arange(0, TILE_H * TILE_W)
    pixel_y, pixel_x = pixel // TILE_W, pixel % TILE_W
    y, x = top + pixel_y, left + pixel_x
    pixel_in_map = (y < height) & (x < width)
    ck = tl.arange(0, BLOCK_CK)
    cv = tl.program_id(2) * BLOCK_CV + tl.arange(0, BLOCK_CV)
    query = tl.load(query_ptr + batch * key_channels * plane + ck[None, :] * plane
                    + (y * width + x)[:, None],
                    mask=pixel_in_map[:, None] & (ck[None, :] < key_channels),
                    other=0.0).to(DOT_DTYPE)

    running_max = tl.full([TILE_H * TILE_W], float("-inf"), tl.float32)
    running_sum = tl.zeros([TILE_H * TILE_W], tl.float32)
    acc = tl.zeros([TILE_H * TILE_W, BLOCK_CV], tl.float32)
    for t in range(frames):
        frame = batch * frames + t
        keys_base = keys_ptr + frame * key_channels * plane
        values_base = values_ptr + frame * value_channels * plane
        for start in range(0, region, BLOCK_N):
            position = start + tl.arange(0, BLOCK_N)
            in_region = position < region
            window_y, window_x = position // region_w, position % region_w
            map_y, map_x = top - RADIUS + window_y, left - RADIUS + window_x
            in_map = in_region & (map_y >= 0) & (map_y < height) & (map_x >= 0) & (map_x < width)
            offset = map_y * width + map_x
            key = tl.load(keys_base + ck[:, None] * plane + offset[None, :],
                          mask=(ck[:, None] < key_channels) & in_map[None, :], other=0.0)
            logits = tl.dot(query, key.to(DOT_DTYPE), input_precision="ieee")
            dy = window_y[None, :] - pixel_y[:, None]
            dx = window_x[None, :] - pixel_x[:, None]
            in_window = (in_region[None, :] & (dy >= 0) & (dy <= span)
                         & (dx >= 0) & (dx <= span))
            logits = tl.where(in_window, logits, float("-inf"))

            new_max = tl.maximum(running_max, tl.max(logits, axis=1))
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            rescale = tl.exp(running_max - shift)
            probs = tl.exp(logits - shift[:, None])
            running_sum = running_sum * rescale + tl.sum(probs, axis=1)
            value = tl.load(values_base + cv[None, :] * plane + offset[:, None],
                            mask=in_map[:, None] & (cv[None, :] < value_channels), other=0.0)
            acc = acc * rescale[:, None] + tl.dot(probs.to(DOT_DTYPE), value.to(DOT_DTYPE),
                                                  input_precision="ieee")
            running_max = new_max

    out = acc / running_sum[:, None]
    tl.store(out_ptr + batch * value_channels * plane + cv[None, :] * plane
             + (y * width + x)[:, None], out.to(out_ptr.dtype.element_ty),
             mask=pixel_in_map[:, None] & (cv[None, :] < value_channels))


#: Whether the kernel runs in triton's interpreter (fixed when triton was first imported).
INTERPRETED = not isinstance(fused_local_memory_attention, triton.runtime.JITFunction)
if INTERPRETED == isinstance(tl.max, triton.runtime.JITFunction):
    raise ImportError("TRITON_INTERPRET changed after triton was imported (triton's library is "
                      f"{'native' if INTERPRETED else 'interpreted'}, the kernel would not be): "
                      "set it before triton is first imported")


def dot_dtype(dtype: torch.dtype) -> tl.dtype:
    """The kernel's DOT_DTYPE for inputs of ``dtype`` (float32 for bfloat16 in the interpreter,
    else the inputs' own)."""
    if dtype == torch.bfloat16 and INTERPRETED:
        return tl.float32
    return {torch.float32: tl.float32, torch.float16: tl.float16,
            torch.bfloat16: tl.bfloat16}[dtype]
