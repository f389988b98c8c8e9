"""The ``triton`` backend of local memory attention: one fused Triton kernel for CUDA tensors.

The kernel (:mod:`._attention_triton_kernel`, design in its docstring) computes the logits, the
joint zero-padded softmax over the T x P x P window entries of every pixel (an online softmax
over chunks of the window regions, as in flash attention) and the read-out in one pass, without
materialising the window or the probabilities. It takes float32 (fp32 products throughout:
no TF32), float16 and bfloat16 inputs (half-precision products with fp32 accumulation, fp32
softmax); the output has the input's dtype. It has no backward: inputs that need a gradient
take the PyTorch path.

triton is imported on first use only (the package imports without it). With triton's
interpreter on (``TRITON_INTERPRET=1`` in the environment when triton is first imported: the
mode is then fixed for the process) the same kernel runs on CPU tensors, in Python: slow, for
tests; ``auto`` then sends no inputs to it. :func:`local_memory_attention`
of :mod:`.attention` selects this backend; :func:`unsuitable` and :func:`load` say why it is
not used when it is not.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["DTYPES", "MAX_KEY_CHANNELS", "Blocks", "load", "interpreting", "setting_unsuitable",
           "unsuitable", "default_blocks", "kernel_constants", "local_memory_attention_triton"]

#: Input dtypes the kernel takes.
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Most key channels (Ck) the kernel takes: a program holds its queries' keys in registers.
MAX_KEY_CHANNELS = 256
#: Offsets inside one (batch item, frame) map are 32-bit: channels * H * W must stay below this.
_MAX_PLANE_ELEMENTS = 2 ** 31


@dataclass(frozen=True)
class Blocks:
    """Block sizes of one launch (each a power of two).

    Attributes:
        tile_h, tile_w: query pixels per program (tile_h x tile_w).
        block_n: window-region positions per step of the online softmax.
        block_cv: value channels per program (the grid's third axis covers Cv).
        num_warps: warps per program on the GPU.
    """

    tile_h: int
    tile_w: int
    block_n: int
    block_cv: int
    num_warps: int = 4


def _next_power_of_2(value: int) -> int:
    return 1 << max(0, int(value) - 1).bit_length()


@functools.cache
def load() -> tuple[bool, str]:
    """Import triton and the kernel module once per process.

    Returns:
        (True, ``"triton <version>"``) when they import, else (False, the reason).
    """
    try:
        import triton

        from . import _attention_triton_kernel  # noqa: F401 (imported for the check)
    except Exception as error:  # ImportError, or a broken install failing in its own way
        return False, f"triton does not import ({type(error).__name__}: {error})"
    return True, f"triton {triton.__version__}"


def interpreting() -> bool:
    """Whether the kernel runs in triton's interpreter (False when triton does not import).

    Fixed for the process by $TRITON_INTERPRET when triton was first imported (see
    :mod:`._attention_triton_kernel`).
    """
    if not load()[0]:
        return False
    from . import _attention_triton_kernel
    return _attention_triton_kernel.INTERPRETED


def setting_unsuitable(device: torch.device, dtype: torch.dtype, *, allow_cpu: bool
                       ) -> str | None:
    """Why the kernel cannot take inputs of this device and dtype, or None when it can.

    ``allow_cpu``: an explicit ``backend="triton"``. CPU tensors are then taken when triton's
    interpreter is on; without it (``auto``) neither CPU nor CUDA tensors go to the interpreter.
    Does not import triton where ``allow_cpu`` is False and the device is not CUDA.
    """
    if torch.compiler.is_compiling():
        return "traced by torch.compile"
    if device.type == "cpu":
        if not allow_cpu:
            return "inputs are not on a CUDA device"
        if load()[0] and not interpreting():
            return "CPU inputs need triton's interpreter (TRITON_INTERPRET=1)"
    elif device.type != "cuda":
        return f"inputs are on {device.type}, not on a CUDA device"
    if dtype not in DTYPES:
        return f"dtype {dtype} (the kernel takes float32, float16 or bfloat16)"
    if device.type == "cuda" and not allow_cpu and interpreting():
        return "triton's interpreter is on (TRITON_INTERPRET=1)"
    return None


def unsuitable(tensors: Sequence[torch.Tensor], *, allow_cpu: bool) -> str | None:
    """Why the kernel cannot take these (checked) inputs, or None when it can.

    Args:
        tensors: the query key (B, Ck, H, W), then the memory keys and values.
        allow_cpu: as for :func:`setting_unsuitable`.
    """
    first = tensors[0]
    if any(t.device != first.device or t.dtype != first.dtype for t in tensors):
        return "inputs differ in device or dtype"
    reason = setting_unsuitable(first.device, first.dtype, allow_cpu=allow_cpu)
    if reason is not None:
        return reason
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "autograd needs the PyTorch path"
    key_channels, height, width = first.shape[1:]
    if key_channels > MAX_KEY_CHANNELS:
        return f"{key_channels} key channels (the kernel takes at most {MAX_KEY_CHANNELS})"
    if max(t.shape[1] for t in tensors) * height * width >= _MAX_PLANE_ELEMENTS:
        return "maps too large for the kernel's 32-bit offsets"
    return None


def default_blocks(height: int, width: int, value_channels: int, radius: int, *,
                   interpreted: bool) -> Blocks:
    """Block sizes for a launch: fixed choices, no autotuning.

    Every pixel of a tile computes logits against the whole (th + 2r) x (tw + 2r) region of its
    tile, so small tiles waste less: on the GPU, 8 x 8 query pixels (the region of r = 10 is
    784 positions, 441 of them in a given pixel's window) and 64 region positions per step, up
    to 64 value channels per program. In the interpreter every step costs Python overhead:
    8 x 16 pixels and up to 512 positions per step (two steps per frame for r = 10), tiles no
    larger than the map.
    """
    block_cv = min(64, max(16, _next_power_of_2(value_channels)))
    if not interpreted:
        return Blocks(tile_h=8, tile_w=8, block_n=64, block_cv=block_cv)
    tile_h = min(8, _next_power_of_2(height))
    tile_w = min(16, _next_power_of_2(width))
    region = (tile_h + 2 * radius) * (tile_w + 2 * radius)
    return Blocks(tile_h, tile_w, min(512, max(16, _next_power_of_2(region))), block_cv)


def kernel_constants(radius: int, key_channels: int, dtype: torch.dtype, blocks: Blocks
                     ) -> dict[str, object]:
    """The kernel's compile-time arguments (``tl.constexpr``) for a launch: the radius, the
    block sizes, key channels padded to a power of two (at least 16) and the products' operand
    dtype. Needs triton (:func:`load`)."""
    from . import _attention_triton_kernel

    return {"RADIUS": radius, "TILE_H": blocks.tile_h, "TILE_W": blocks.tile_w,
            "BLOCK_N": blocks.block_n, "BLOCK_CK": max(16, _next_power_of_2(key_channels)),
            "BLOCK_CV": blocks.block_cv, "DOT_DTYPE": _attention_triton_kernel.dot_dtype(dtype)}


def local_memory_attention_triton(query_key: torch.Tensor, memory_keys: Sequence[torch.Tensor],
                                  memory_values: Sequence[torch.Tensor], radius: int, *,
                                  blocks: Blocks | None = None) -> torch.Tensor:
    """Local memory attention by the fused kernel (semantics: :mod:`.attention`).

    The inputs must be checked (``attention._check_inputs``) and suitable (:func:`unsuitable`
    is None), and triton must load (:func:`load`).

    Args:
        query_key: (B, Ck, H, W).
        memory_keys: T tensors (B, Ck, H, W).
        memory_values: T tensors (B, Cv, H, W).
        radius: window radius r (P = 2r + 1).
        blocks: block sizes; None takes :func:`default_blocks`.

    Returns:
        (B, Cv, H, W) read-out in the inputs' dtype.
    """
    from . import _attention_triton_kernel

    batch, key_channels, height, width = query_key.shape
    value_channels = memory_values[0].shape[1]
    out = query_key.new_empty(batch, value_channels, height, width)
    if out.numel() == 0:
        return out
    if blocks is None:
        blocks = default_blocks(height, width, value_channels, radius,
                                interpreted=_attention_triton_kernel.INTERPRETED)
    query = query_key.contiguous()
    # (B, T, Ck, H, W) and (B, T, Cv, H, W); stack keeps channels-last strides: contiguous().
    keys = torch.stack(tuple(memory_keys), dim=1).contiguous()
    values = torch.stack(tuple(memory_values), dim=1).contiguous()
    tiles = -(-height // blocks.tile_h) * -(-width // blocks.tile_w)
    grid = (tiles, batch, -(-value_channels // blocks.block_cv))
    on_device = (torch.cuda.device(query.device) if query.device.type == "cuda"
                 else contextlib.nullcontext())
    with on_device:
        _attention_triton_kernel.fused_local_memory_attention[grid](
            query, keys, values, out, len(memory_keys), height, width, key_channels,
            value_channels, **kernel_constants(radius, key_channels, query.dtype, blocks),
            num_warps=blocks.num_warps)
    return out
