"""Graph backends behind the pipeline (lmanet_ros.runtime): onnxruntime and OpenVINO as drop-ins
for the PyTorch model, the graph cache, and the errors that replace any silent fall-back."""
from __future__ import annotations

import sys

import numpy as np
import onnxruntime
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from runtime_helpers import MEMORY_LENGTH, SIZE

from lmanet_ros.models import Memory
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.runtime import (BACKENDS, BackendError, BackendUnavailable, build_backend_model,
                                load_model)
from lmanet_ros.runtime.ort_backend import Session as OrtSession
from lmanet_ros.synthetic import SynthSequence

FRAMES = 4


def _pipeline(loaded):
    """The pipeline around a LoadedModel, as from_pretrained builds it."""
    return SegmentationPipeline(loaded.model, device="cpu", input_size=SIZE,
                                memory_length=MEMORY_LENGTH, classes=loaded.classes,
                                metadata=loaded.metadata)


def _labels(pipeline, images):
    return [pipeline.process([Frame("cam", image, stamp_ns=index * 100_000_000)])[0]
            for index, image in enumerate(images)]


@pytest.fixture(scope="module")
def street():
    """A few synthetic street frames at the pipeline's input size (no resizing)."""
    return [frame.image for frame in SynthSequence(7, height=SIZE[0], width=SIZE[1],
                                                   n_frames=FRAMES)]


@pytest.fixture(scope="module")
def torch_results(street):
    return _labels(_pipeline(load_model("lmanet_erfnet", "demo")), street)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_labels_equal_torch_in_the_pipeline(backend, backend_model, street,
                                                    torch_results):
    loaded = backend_model("lmanet_erfnet", backend)
    pipeline = _pipeline(loaded)
    runs = loaded.model.session_runs
    results = _labels(pipeline, street)
    assert [r.memory_fill for r in results] == [1, 2, 2, 2]
    for got, expected in zip(results, torch_results):
        np.testing.assert_array_equal(got.labels, expected.labels)
    # the runtime itself ran every step (split layout: two graphs per step)
    assert loaded.model.session_runs - runs == FRAMES * loaded.model.runs_per_step == 2 * FRAMES
    assert isinstance(pipeline.model.step(torch.zeros(1, 3, *SIZE))[1], Memory)


def test_the_onnxruntime_sessions_are_onnxruntime_sessions(backend_model):
    model = backend_model("erfnet").model
    session = model._sessions[0]
    assert isinstance(session, OrtSession)
    assert isinstance(session.session, onnxruntime.InferenceSession)
    before = session.runs
    logits, memory = model.step(torch.rand(2, 3, *SIZE))  # two streams: two runs
    assert logits.shape == (2, 20, *SIZE) and memory is None
    assert session.runs - before == 2


def test_the_second_build_hits_the_cache(backend_model):
    first = backend_model("lmanet_erfnet").model.graphs
    times = {fill: path.stat().st_mtime_ns for fill, path in first.paths.items()}
    second = backend_model("lmanet_erfnet", "openvino").model.graphs
    assert second.exported == () and second.folder == first.folder
    assert {fill: path.stat().st_mtime_ns for fill, path in second.paths.items()} == times


def test_an_unavailable_backend_is_an_error_not_a_fall_back(monkeypatch, graph_cache):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(BackendUnavailable, match="pip install openvino"):
        load_model("lmanet_erfnet", "demo", backend="openvino", input_size=SIZE,
                   cache_dir=graph_cache)
    with pytest.raises(BackendError, match="backend must be one of"):
        load_model("erfnet", "demo", backend="tensorrt")
    assert BACKENDS == ("torch", "onnxruntime", "openvino")


def test_a_graph_backend_needs_a_fixed_input_size(graph_cache):
    with pytest.raises(BackendError, match="fixed input size.*--input-size"):
        build_backend_model("erfnet", None, backend="onnxruntime", cache_dir=graph_cache)


def test_frames_of_another_size_and_other_precisions_are_refused(backend_model):
    model = backend_model("lmanet_erfnet").model
    with pytest.raises(ValueError, match=r"exported for 64x128 input, got 32x64: set the "
                                         r"pipeline's input size to 64x128"):
        model.step(torch.rand(1, 3, 32, 64))
    with pytest.raises(BackendError, match="precision fp32"):
        model.to(dtype=torch.float16)
    with pytest.raises(BackendError, match="device cpu"):
        model.to(device="meta")
    with pytest.raises(ValueError, match="memory must be a Memory"):
        model.step(torch.rand(1, 3, *SIZE), object())  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["fill", "split"])
def test_a_new_memory_length_gets_its_graphs(backend_model, layout):
    """Layout fill: a new T has graphs of its own; split: the same three serve every T."""
    loaded = backend_model("lmanet_erfnet", layout=layout)
    before = loaded.model.graphs
    pipeline = _pipeline(loaded)
    pipeline.set_memory_length(1)  # as the node's memory_length parameter does
    graphs = loaded.model.graphs
    if layout == "fill":
        assert sorted(graphs.paths) == [0, 1] and "-T1-" in graphs.folder.name
    else:
        assert graphs.folder == before.folder and graphs.exported == ()
        assert sorted(graphs.paths) == ["decode", "decode_fused", "encode"]
    results = [pipeline.process([Frame("cam", np.full((*SIZE, 3), 40 * i, np.uint8), i)])[0]
               for i in range(3)]
    assert [r.memory_fill for r in results] == [1, 1, 1]
    with pytest.raises(ValueError, match="memory_length"):
        loaded.model.memory_length = 0
    assert loaded.model.memory_length == 1
    pipeline.set_memory_length(MEMORY_LENGTH)  # the session's shared model, as it was
