"""Torch devices named by users (``auto``, ``cpu``, ``cuda``, ``cuda:N``), resolved in one place."""
from __future__ import annotations

import torch

__all__ = ["DeviceError", "resolve_device"]


class DeviceError(RuntimeError):
    """A device that is not valid or not present on this machine; the message says which."""


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device, failing fast if absent.

    ``auto`` is CUDA when available, else the CPU.

    Raises:
        DeviceError: an unknown spelling, a CUDA device without CUDA, an index beyond the GPUs.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(
            f"device '{spec}' is not valid (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{spec}' requested but CUDA is not available "
                              f"(torch {torch.__version__}, {torch.cuda.device_count()} GPUs)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{spec}' requested but only "
                              f"{torch.cuda.device_count()} CUDA devices exist")
    elif device.type != "cpu":
        raise DeviceError(f"device '{spec}' is not supported (use auto, cpu, cuda or cuda:N)")
    return device
