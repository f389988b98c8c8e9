"""``SegmentationPipeline.from_pretrained(backend=...)``: the graph backends behind the pipeline.

The onnxruntime and OpenVINO pipelines of the demo LMANet-ERFNet weights give the torch
pipeline's labels over a short stream (frames at the input size and a larger one that is resized),
the runtime's sessions ran every step while the PyTorch network ran none, and every way a backend
cannot run (unknown, package missing, CUDA, half precision, no input size) is a PipelineError
raised before any checkpoint is read.
"""
from __future__ import annotations

import sys

import numpy as np
import onnxruntime
import openvino
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from runtime_helpers import MEMORY_LENGTH, SIZE

from lmanet_ros.pipeline import Frame, PipelineError, SegmentationPipeline
from lmanet_ros.runtime import BackendUnavailable, RuntimeModel
from lmanet_ros.synthetic import SynthSequence

VERSIONS = {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}
#: Frames at the input size, then one at twice that size (resized to it: a size-change reset).
FRAMES = 4


def _pipeline(backend: str, cache_dir, **options) -> SegmentationPipeline:
    options = {"input_size": SIZE, "memory_length": MEMORY_LENGTH, "num_threads": 1, **options}
    return SegmentationPipeline.from_pretrained("lmanet_erfnet", "demo", backend=backend,
                                                cache_dir=cache_dir, **options)


def _run(pipeline: SegmentationPipeline, images: list[np.ndarray]):
    return [pipeline.process([Frame("cam", image, stamp_ns=index * 100_000_000)])[0]
            for index, image in enumerate(images)]


@pytest.fixture(scope="module")
def street() -> list[np.ndarray]:
    small = [f.image for f in SynthSequence(3, height=SIZE[0], width=SIZE[1], n_frames=FRAMES)]
    large = next(iter(SynthSequence(4, height=2 * SIZE[0], width=2 * SIZE[1], n_frames=1))).image
    return small + [large]


@pytest.fixture(scope="module")
def torch_run(street, graph_cache):
    pipeline = _pipeline("torch", graph_cache, device="cpu")
    return pipeline, _run(pipeline, street)


def _torch_forwards(model: torch.nn.Module) -> list[int]:
    """A counter of forward calls of ``model``'s submodules (real hooks on the real network)."""
    calls = [0]

    def count(*_) -> None:
        calls[0] += 1
    for module in model.modules():
        module.register_forward_pre_hook(count)
    return calls


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_graph_backend_pipeline_gives_the_torch_pipelines_labels(backend, street, torch_run,
                                                                   graph_cache):
    reference, expected = torch_run
    pipeline = _pipeline(backend, graph_cache)  # device auto: the CPU for a graph backend
    assert isinstance(pipeline.model, RuntimeModel) and pipeline.device.type == "cpu"
    assert (pipeline.backend, pipeline.backend_version) == (backend, VERSIONS[backend])
    assert (reference.backend, reference.backend_version) == ("torch", torch.__version__)
    assert pipeline.input_size == SIZE and pipeline.memory_length == MEMORY_LENGTH
    for what in ("checkpoint_id", "checkpoint_path", "weights", "classes", "metadata",
                 "default_memory_length", "output_delay_frames"):
        assert getattr(pipeline, what) == getattr(reference, what), what

    runs, forwards = pipeline.model.session_runs, _torch_forwards(pipeline.model.torch_model)
    results = _run(pipeline, street)
    # the runtime ran every step (LMANet's split layout: encode, then decode or decode_fused)
    assert pipeline.model.layout == "split"
    assert pipeline.model.session_runs - runs == 2 * len(street)
    assert forwards[0] == 0  # and PyTorch's network none
    assert [r.memory_fill for r in results] == [r.memory_fill for r in expected] == [1, 2, 2, 2, 1]
    assert results[-1].reset_reason == expected[-1].reset_reason == "size_change"
    for got, want in zip(results, expected):
        assert got.labels.shape == want.labels.shape
        np.testing.assert_array_equal(got.labels, want.labels)


def test_memory_length_not_given_returns_to_the_models_own(graph_cache):
    """Graphs built for T = 1 (random weights: no metadata T) still know the network's own T."""
    pipeline = SegmentationPipeline.from_pretrained(
        "lmanet_erfnet", None, backend="onnxruntime", input_size=SIZE, memory_length=1,
        num_threads=1, cache_dir=graph_cache)
    assert (pipeline.memory_length, pipeline.memory_length_origin) == (1, "explicit")
    assert pipeline.default_memory_length == 4  # lmanet_erfnet's own, what 0 / None returns to
    assert pipeline.checkpoint_id == "random-init" and pipeline.load_report is None


@pytest.mark.parametrize("options, words", [
    ({"backend": "tensorrt"}, "backend must be one of auto, torch, onnxruntime, openvino"),
    ({"backend": "onnxruntime", "device": "cuda"}, "onnxruntime backend runs on the CPU, not cuda"),
    ({"backend": "openvino", "device": "cuda:1"}, "openvino backend runs on the CPU, not cuda:1"),
    ({"backend": "onnxruntime", "precision": "fp16"}, "computes in fp32, not fp16"),
])
def test_a_backend_that_cannot_run_is_refused_before_loading(options, words, tmp_path):
    missing = tmp_path / "absent.pth"  # never opened: the refusal comes first
    with pytest.raises(PipelineError, match=words):
        SegmentationPipeline.from_pretrained("lmanet_erfnet", str(missing), **options)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_missing_backend_package_is_an_error_never_a_fall_back(backend, monkeypatch,
                                                                 tmp_path):
    monkeypatch.setitem(sys.modules, backend, None)  # import <backend> raises ImportError
    with pytest.raises(PipelineError, match=f"pip install {backend}") as caught:
        SegmentationPipeline.from_pretrained("lmanet_erfnet", "demo", backend=backend,
                                             input_size=SIZE, cache_dir=tmp_path)
    assert isinstance(caught.value.__cause__, BackendUnavailable)
    assert not any(tmp_path.iterdir())  # nothing was exported


def test_a_graph_backend_needs_an_input_size(tmp_path):
    with pytest.raises(PipelineError, match="fixed input size"):
        SegmentationPipeline.from_pretrained("erfnet", None, backend="onnxruntime",
                                             cache_dir=tmp_path)
