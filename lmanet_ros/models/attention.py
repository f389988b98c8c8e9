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

:func:`local_memory_attention` computes this exactly, with one of three implementations (its
``backend`` argument, by default the environment variable ``LMANET_ATTENTION``, default ``auto``):

- ``torch``: large batched matrix products over tiles (see :func:`_tiled_attention`); any device
  and dtype, keeps autograd. The reference path and the fallback.
- ``compiled``: a fused C++ CPU kernel (``lmanet_ros/csrc/local_memory_attention.cpp``, built by
  ``scripts/setup_venv.sh``; see :mod:`._attention_ext`) for float32 CPU inputs without
  autograd: logits, softmax and read-out per tile of 8 pixels, without materialising the
  window or the probabilities.
- ``triton``: a fused Triton kernel (:mod:`.attention_triton`) for CUDA tensors (float32,
  float16, bfloat16) without autograd, likewise without materialising the window or the
  probabilities (online softmax); CPU tensors only under triton's interpreter
  (``TRITON_INTERPRET=1``, for tests).
- ``auto``: ``triton`` for CUDA inputs and ``compiled`` for CPU inputs where they apply and are
  available, else ``torch``. When a kernel is unavailable (not built, failing to load, triton
  not installed) one warning says why, then ``torch`` is used; CUDA inputs that the Triton
  kernel does not take are logged once per reason (level INFO).

:func:`attention_backend` says which one inference on a device and dtype uses, and why.
:func:`local_memory_attention_reference` is the direct loop over offsets that the tests compare
with (in float64).
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from . import attention_triton

__all__ = ["DEFAULT_RADIUS", "BACKENDS", "BACKEND_ENV", "local_memory_attention",
           "local_memory_attention_reference", "attention_backend"]

#: Window radius of the published LMANet (P = 21).
DEFAULT_RADIUS = 10
#: Values of ``backend`` and of the environment variable :data:`BACKEND_ENV`.
BACKENDS = ("auto", "compiled", "torch", "triton")
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


def _tracing() -> bool:
    """Whether a tracer records this call (torch.compile, torch.export, the TorchScript
    tracer): constants must then be built inside the trace, not taken from a cache."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or torch.jit.is_tracing())


def _window_index(batch: int, frames: int, tiles: tuple[int, int], tile: tuple[int, int],
                  radius: int, device: torch.device) -> torch.Tensor:
    """:func:`_build_window_index`, cached per shape and device (a stream's shape repeats every
    frame) except while traced."""
    if _tracing():
        return _build_window_index(batch, frames, tiles, tile, radius, device)
    return _cached_window_index(batch, frames, tiles, tile, radius, device)


def _build_window_index(batch: int, frames: int, tiles: tuple[int, int], tile: tuple[int, int],
                        radius: int, device: torch.device) -> torch.Tensor:
    """Rows of the window regions of every tile, in the flattened stack of padded maps.

    For the stack (B, T, Hp, Wp, C) of :func:`_stack_padded` viewed as (B * T * Hp * Wp, C)
    rows, with Hp = tiles_y * th + 2r and Wp = tiles_x * tw + 2r: entry (ty, b, tx, t, wy, wx)
    of the result, (tiles_y, B * tiles_x * T * (th + 2r) * (tw + 2r)) int64, is the row of
    position (wy, wx) of tile (ty, tx)'s (th + 2r) x (tw + 2r) region in frame t of batch item
    b. ``index_select`` of a slice of tile rows thus yields the regions already in the order the
    matrix products take, with no transpose (which ONNX runtimes run slowly in 7-D).
    """
    (tiles_y, tiles_x), (tile_h, tile_w) = tiles, tile
    span = 2 * radius
    padded_h, padded_w = tiles_y * tile_h + span, tiles_x * tile_w + span

    def axis(size: int, position: int, step: int = 1) -> torch.Tensor:
        shape = [1] * 6
        shape[position] = size
        return (torch.arange(size, device=device) * step).view(shape)

    plane = (axis(batch, 1) * frames + axis(frames, 3)) * padded_h
    rows = (plane + axis(tiles_y, 0, tile_h) + axis(tile_h + span, 4)) * padded_w
    index = rows + axis(tiles_x, 2, tile_w) + axis(tile_w + span, 5)
    return index.reshape(tiles_y, -1)


@functools.lru_cache(maxsize=16)  # a few shapes (fill levels, cameras) at a time; read-only
def _cached_window_index(batch: int, frames: int, tiles: tuple[int, int], tile: tuple[int, int],
                         radius: int, device: torch.device) -> torch.Tensor:
    """:func:`_build_window_index` made outside inference mode, so that autograd may use it
    too (an inference tensor cannot be saved for backward)."""
    with torch.inference_mode(False):
        return _build_window_index(batch, frames, tiles, tile, radius, device)


def _tiled_attention(query_key: torch.Tensor, memory_keys: Sequence[torch.Tensor],
                     memory_values: Sequence[torch.Tensor], radius: int, tile: tuple[int, int],
                     chunk_elements: int | None) -> torch.Tensor:
    """The ``torch`` backend: exact local memory attention as batched matrix products over tiles.

    The map is split into tiles of ``tile`` = (th, tw) pixels. For each tile the
    (th + 2r) x (tw + 2r) region of the zero-padded memory keys and values that covers the
    windows of all its pixels is gathered (about 12x the map for 8x8 tiles, never P*P copies;
    one ``index_select`` of channels-last rows, see :func:`_window_index`);
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
    region = (tile_h + span) * (tile_w + span)
    queries_per_tile = tile_h * tile_w

    # Padded maps as rows (B * T * Hp * Wp, C) and the rows of every tile's window regions.
    keys = _stack_padded(memory_keys, radius, extra_h, extra_w).view(-1, key_channels)
    values = _stack_padded(memory_values, radius, extra_h, extra_w).view(-1, value_channels)
    window_rows = _window_index(batch, frames, (tiles_y, tiles_x), (tile_h, tile_w), radius,
                                device)
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
        # Window regions of the chunk's tiles, gathered as (tiles, T * region, C).
        rows_index = window_rows[row0:row0 + rows].reshape(-1)
        key_windows = keys.index_select(0, rows_index).view(tiles, frames * region,
                                                            key_channels)
        value_windows = values.index_select(0, rows_index).view(tiles, frames * region,
                                                                value_channels)
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


def _loaded(name: str, load: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    """``load()`` of the kernel called ``name``: (available, detail or reason); warns when
    unavailable (the callers are cached: once per process)."""
    available, detail = load()
    if not available:
        _LOG.warning("local memory attention: %s unavailable, using the PyTorch path: %s",
                     name, detail)
    return available, detail


@functools.cache
def _compiled_kernel() -> tuple[bool, str]:
    """(available, instruction set or reason) of the compiled CPU kernel."""
    # Imported on first use, so that ``python -m lmanet_ros.models._attention_ext build`` runs
    # a module that importing the models has not loaded yet.
    from . import _attention_ext

    return _loaded("compiled CPU kernel", _attention_ext.load)


@functools.cache
def _triton_kernel() -> tuple[bool, str]:
    """(available, triton version or reason) of the Triton kernel."""
    return _loaded("Triton kernel", attention_triton.load)


def _kernel_status(kind: str) -> tuple[bool, str]:
    """(available, detail) of the ``"compiled"`` or the ``"triton"`` kernel."""
    return _triton_kernel() if kind == "triton" else _compiled_kernel()


@functools.cache
def _note_triton_unsuitable(reason: str) -> None:
    """Log, once per reason, why ``auto`` sends CUDA inputs to the PyTorch path."""
    _LOG.info("local memory attention: the Triton kernel does not take these CUDA inputs, "
              "using the PyTorch path: %s", reason)


def _compiled_setting_unsuitable(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the compiled kernel cannot take inputs of this device and dtype, or None."""
    if torch.compiler.is_compiling():
        return "traced by torch.compile"
    if device.type != "cpu":
        return "inputs are not on the CPU"
    if dtype != torch.float32:
        return f"dtype {dtype} (the kernel takes float32)"
    return None


def _compiled_unsuitable(tensors: Sequence[torch.Tensor]) -> str | None:
    """Why the compiled kernel cannot take these inputs, or None when it can."""
    for device, dtype in dict.fromkeys((t.device, t.dtype) for t in tensors):
        reason = _compiled_setting_unsuitable(device, dtype)
        if reason is not None:
            return reason
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "autograd needs the PyTorch path"
    return None


def _takes(kind: str, unsuitable: str | None, requested: str, source: str) -> bool:
    """Whether the ``kind`` kernel runs inputs it finds ``unsuitable`` (None: it takes them).

    Raises:
        ValueError: ``kind`` was requested and does not take the inputs.
        RuntimeError: ``kind`` was requested, takes them and is unavailable.
    """
    if unsuitable is not None:
        if requested == kind:
            raise ValueError(f"{source}={kind!r} cannot take these inputs: {unsuitable}")
        return False
    available, detail = _kernel_status(kind)
    if not available and requested == kind:
        raise RuntimeError(f"{source}={kind!r}: {detail}")
    return available


def attention_backend(device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> str:
    """The backend that inference (no autograd) on ``device`` in ``dtype`` takes under the
    current $LMANET_ATTENTION; by default float32 on the CPU.

    Returns:
        ``"compiled (<instruction set>)"``, e.g. ``"compiled (avx2+fma)"``, or
        ``"triton (triton <version>)"``; ``"torch (LMANET_ATTENTION=torch)"``;
        ``"torch (<kernel> kernel unavailable: <why>)"``; ``"torch (<kernel> kernel does not
        apply: <why>)"`` (e.g. float16 on the CPU); or, with $LMANET_ATTENTION naming a kernel
        that cannot run, ``"unavailable (<why>)"`` (calls then raise).
    """
    requested, _ = _requested_backend(None)
    if requested == "torch":
        return f"torch ({BACKEND_ENV}=torch)"
    device = torch.device(device)
    kind = requested if requested != "auto" else "compiled" if device.type == "cpu" else "triton"
    if kind == "triton":
        unsuitable = attention_triton.setting_unsuitable(device, dtype,
                                                         allow_cpu=requested == "triton")
    else:
        unsuitable = _compiled_setting_unsuitable(device, dtype)
    if unsuitable is not None:
        return (f"unavailable ({unsuitable})" if requested == kind
                else f"torch ({kind} kernel does not apply: {unsuitable})")
    available, detail = _kernel_status(kind)
    if available:
        return f"{kind} ({detail})"
    return f"unavailable ({detail})" if requested == kind else (
        f"torch ({kind} kernel unavailable: {detail})")


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
        backend: ``"auto"``, ``"compiled"``, ``"torch"`` or ``"triton"`` (see the module
            docstring); None reads $LMANET_ATTENTION (default ``"auto"``). When no gradient is
            needed (and not under ``torch.compile``), ``auto`` takes the Triton kernel for
            CUDA inputs (float32, float16, bfloat16; at most 256 key channels) and the compiled
            kernel for float32 CPU inputs, where the kernel is available.

    Returns:
        (B, Cv, H, W) read-out, in the dtype of ``query_key``.

    Raises:
        ValueError: bad shapes, radius or backend name, or ``"compiled"`` / ``"triton"`` for
            inputs it cannot take (``compiled``: not float32, not on the CPU; ``triton``: not on
            a CUDA device (CPU only under triton's interpreter), another dtype, more than 256
            key channels; either: needing autograd).
        RuntimeError: ``"compiled"`` or ``"triton"`` requested and the kernel (or triton) is
            not available.
    """
    _check_inputs(query_key, memory_keys, memory_values, radius)
    requested, source = _requested_backend(backend)
    tensors = (query_key, *memory_keys, *memory_values)
    if requested in ("auto", "triton"):
        unsuitable = attention_triton.unsuitable(tensors, allow_cpu=requested == "triton")
        if _takes("triton", unsuitable, requested, source):
            return attention_triton.local_memory_attention_triton(query_key, memory_keys,
                                                                  memory_values, radius)
        if unsuitable is not None and query_key.is_cuda:
            _note_triton_unsuitable(unsuitable)
    if requested in ("auto", "compiled") and _takes("compiled", _compiled_unsuitable(tensors),
                                                    requested, source):
        return torch.ops.lmanet_ros.local_memory_attention(
            query_key, list(memory_keys), list(memory_values), radius)
    return _tiled_attention(query_key, memory_keys, memory_values, radius, tile, chunk_elements)
