"""Shared helpers of the model tests: where shared/ lies, key lists, golden vectors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: shared/ beside the repository (CI checks the repo out with shared/ next to it).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"
GOLDEN = REFERENCE / "golden"


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Run each model test on one intra-op thread, restoring the setting afterwards.

    On a shared 2-core machine, two OpenMP threads wait on each other at every barrier while
    other processes hold the cores: the many small ops of these tests then take 10-100x longer.
    Correctness does not depend on the thread count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def require(path: Path) -> Path:
    """Skip the calling test when a shared reference file is absent."""
    if not path.exists():
        pytest.skip(f"shared reference file {path} is not available")
    return path


def read_key_list(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key without ``module.``, shape) rows of a reference .tsv, in file order."""
    rows = []
    for line in require(REFERENCE / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, _dtype = line.split("\t")
        if not key.startswith("module."):
            raise AssertionError(f"reference key without the DDP prefix: {key}")
        dims = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
        rows.append((key[len("module."):], dims))
    return rows


def load_golden(name: str) -> dict:
    """A golden vector file (torch.load with weights_only=True)."""
    return torch.load(require(GOLDEN / name), map_location="cpu", weights_only=True)


def random_memory_inputs(batch: int, key_channels: int, value_channels: int, height: int,
                         width: int, frames: int, *, dtype=torch.float64, seed: int = 0,
                         key_scale: float = 1.0):
    """Random (query key, memory keys, memory values) for attention tests."""
    generator = torch.Generator().manual_seed(seed)

    def rand(channels):
        return torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)

    query = rand(key_channels) * key_scale
    keys = [rand(key_channels) * key_scale for _ in range(frames)]
    values = [rand(value_channels) for _ in range(frames)]
    return query, keys, values
