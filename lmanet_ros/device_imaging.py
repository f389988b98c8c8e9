"""Colour and overlay of class-id masks as torch tensors, on any device (the CUDA pipeline's).

Bit-identical to :func:`lmanet_ros.imaging.colorize` and :func:`lmanet_ros.imaging.overlay` (the
CPU, OpenCV versions; tests compare every input pair):

- :func:`colorize_tensor`: the same (256, 3) lookup table (:func:`palette_table`: the palette,
  black for ids >= K), gathered per pixel;
- :func:`overlay_tensor`: OpenCV's ``addWeighted`` on uint8, i.e. with float32 weights
  ``w = (float32) (1 - alpha)`` and ``a = (float32) alpha`` per pixel ``round(fma(rgb, w,
  float32(color * a)))`` rounded half to even and saturated to 0..255. The fused multiply-add
  is computed exactly in float64 (an integer 0..255 times a float32 is exact in float64, and so
  is the sum) then rounded once to float32, which is what the fma's single rounding gives.

Only elementwise IEEE operations are used, so CPU and CUDA tensors give the same bytes.
"""
from __future__ import annotations

import numpy as np
import torch

from lmanet_ros.imaging import check_alpha, palette_lut

__all__ = ["palette_table", "colorize_tensor", "overlay_tensor"]


def palette_table(palette, device: torch.device | str) -> torch.Tensor:
    """The (256, 3) uint8 lookup table of a (K, 3) palette (:func:`~lmanet_ros.imaging.
    palette_lut`) on ``device``: row i is the colour of id i, black for ids >= K. The table of
    the palette last asked for is kept (one per device) and returned again while it holds."""
    colors = np.asarray(palette)
    key = (colors.shape, colors.dtype.str, colors.tobytes(), torch.device(device))
    kept = _TABLES.get(key[3])
    if kept is None or kept[0] != key:
        kept = _TABLES[key[3]] = (key, torch.from_numpy(palette_lut(colors).reshape(256, 3))
                                  .to(device))
    return kept[1]


#: Device -> (palette key, its table): the table of the palette last asked for on each device.
_TABLES: dict[torch.device, tuple[tuple, torch.Tensor]] = {}


def colorize_tensor(labels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(H, W) uint8 ids and a (256, 3) uint8 :func:`palette_table` -> (H, W, 3) uint8 colours,
    on the labels' device."""
    if labels.dtype != torch.uint8 or labels.dim() != 2:
        raise ValueError(f"labels must be a (H, W) uint8 tensor, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if table.dtype != torch.uint8 or tuple(table.shape) != (256, 3):
        raise ValueError(f"table must be a (256, 3) uint8 tensor, got {table.dtype} "
                         f"{tuple(table.shape)}")
    return table[labels.long()]


def overlay_tensor(rgb: torch.Tensor, color: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blend ``color`` over ``rgb`` (both (H, W, 3) uint8, one device): ``rgb * (1 - alpha) +
    color * alpha`` rounded as OpenCV does (see the module docstring); a new tensor.

    ``alpha`` in [0, 1] is the weight of the colour mask.
    """
    alpha = check_alpha(alpha)
    for name, tensor in (("rgb", rgb), ("color", color)):
        if tensor.dtype != torch.uint8 or tensor.dim() != 3 or tensor.shape[2] != 3:
            raise ValueError(f"{name} must be a (H, W, 3) uint8 tensor, got {tensor.dtype} "
                             f"{tuple(tensor.shape)}")
    if rgb.shape != color.shape:
        raise ValueError(f"rgb and color shapes differ: {tuple(rgb.shape)} vs "
                         f"{tuple(color.shape)}")
    image_weight = float(np.float32(1.0 - alpha))
    color_weight = float(np.float32(alpha))
    term = (color.double() * color_weight).float().double()  # cv2: fma(color, a, 0)
    blended = rgb.double() * image_weight + term  # exact in float64: fma's single rounding
    return torch.round(blended.float()).clamp_(0, 255).to(torch.uint8)
