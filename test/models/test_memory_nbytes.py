"""``memory.nbytes``: the bytes of the tensors a memory value holds, for every memory type of the
registry's temporal models (what ``benchmarks/model_latency.py`` reports as memory per stream)."""
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import FeatureMemory, Memory, build_model


def test_a_fifo_counts_every_frame_of_every_column():
    keys = tuple(torch.zeros(1, 16, 4, 8) for _ in range(3))
    values = tuple(torch.zeros(1, 64, 4, 8) for _ in range(3))
    assert Memory(keys, values).nbytes == 3 * (16 + 64) * 4 * 8 * 4
    assert Memory().nbytes == 0
    half = FeatureMemory(tuple(torch.zeros(2, 128, 4, 8, dtype=torch.float16) for _ in range(2)))
    assert half.nbytes == 2 * 2 * 128 * 4 * 8 * 2


@pytest.mark.parametrize("name", ["lmanet_erfnet", "tmanet_erfnet", "tdnet_erfnet",
                                  "stf_erfnet"])
def test_a_streamed_memory_holds_what_its_shapes_say(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    memory = None
    with torch.inference_mode():
        for _ in range(model.memory_length + 1):
            _, memory = model.step(torch.rand(1, 3, 64, 128), memory)
    tensors = _tensors(memory)
    assert len(memory) == model.memory_length and tensors
    assert memory.nbytes == sum(t.numel() * t.element_size() for t in tensors)


def test_tdnet_entries_are_what_its_docstring_counts():
    """(2 d_k + d_v) values per subsampled pixel: 64x128 input, 8x16 features, s = 4: 2x4."""
    model = build_model("tdnet_erfnet", memory_length=3).eval()
    memory = None
    with torch.inference_mode():
        for _ in range(3):
            _, memory = model.step(torch.rand(1, 3, 64, 128), memory)
    assert memory.nbytes == 3 * (2 * 32 + 128) * 2 * 4 * 4


def _tensors(memory):
    """Every tensor of a FIFO memory or of TDNet's PathMemory (its entries)."""
    fifo = getattr(memory, "entries", memory)
    return [tensor for column in fifo._columns() for tensor in column]
