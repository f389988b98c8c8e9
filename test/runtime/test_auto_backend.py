"""``backend="auto"`` (the node's default): a graph backend where one can run the weights as asked,
else torch, each choice with its reason in words; never a silent fall-back for a named backend."""
from __future__ import annotations

import sys

import pytest
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from runtime_helpers import MEMORY_LENGTH, SIZE

from lmanet_ros.models import build_model
from lmanet_ros.models.attention import attention_backend
from lmanet_ros.pipeline import SegmentationPipeline
from lmanet_ros.runtime import AUTO_PREFERENCE, RuntimeModel, auto_backend, load_torch_model


@pytest.fixture(scope="module")
def demo():
    return load_torch_model("lmanet_erfnet", "demo")


def _choice(loaded, device_type="cpu", precision="fp32", input_size=None):
    return auto_backend(loaded, device_type=device_type, precision=precision,
                        input_size=input_size)


def test_a_checkpoint_on_the_cpu_at_its_trained_size_gets_the_fastest_runtime(demo):
    backend, reason = _choice(demo)  # the demo metadata's trained size: 128x256
    assert AUTO_PREFERENCE[0] == backend == "onnxruntime"
    assert reason.startswith("auto: onnxruntime, the fastest installed backend on the CPU")


@pytest.mark.parametrize("case, expected", [
    ({"device_type": "cuda"}, "auto: torch on cuda (the graph backends run on the CPU)"),
    ({"precision": "fp16"}, "auto: torch for fp16 (the graph backends compute in fp32)"),
])
def test_cuda_and_half_precision_stay_with_torch(demo, case, expected):
    assert _choice(demo, **case) == ("torch", expected)


def test_random_weights_a_memory_without_graph_form_and_no_fixed_size_stay_with_torch():
    random = load_torch_model("lmanet_erfnet", None)
    assert _choice(random, input_size=SIZE) == (
        "torch", "auto: torch for random weights (graphs are made from a checkpoint)")
    tdnet = load_torch_model("tdnet_erfnet", None)
    assert _choice(tdnet, input_size=SIZE) == (
        "torch", "auto: torch (tdnet_erfnet's memory has no graph form)")
    weights = build_model("lmanet_erfnet").state_dict()  # a checkpoint without metadata
    no_size = load_torch_model("lmanet_erfnet", weights)
    backend, reason = _choice(no_size)
    assert backend == "torch" and "each frame's own size" in reason
    assert _choice(no_size, input_size=SIZE)[0] == "onnxruntime"


def test_the_next_installed_runtime_then_torch(demo, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises
    assert _choice(demo)[0] == "openvino"
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert _choice(demo) == ("torch", "auto: torch (none of onnxruntime, openvino is installed)")


def test_the_pipeline_runs_what_auto_chose_and_keeps_the_reason(graph_cache):
    pipeline = SegmentationPipeline.from_pretrained(
        "lmanet_erfnet", "demo", backend="auto", input_size=SIZE, memory_length=MEMORY_LENGTH,
        num_threads=1, cache_dir=graph_cache)
    assert isinstance(pipeline.model, RuntimeModel) and pipeline.backend == "onnxruntime"
    assert pipeline.model.layout == "split" and pipeline.device.type == "cpu"
    assert pipeline.backend_reason.startswith("auto: onnxruntime")
    assert pipeline.attention.endswith(" between onnxruntime graphs"), pipeline.attention
    torch_pipeline = SegmentationPipeline.from_pretrained("lmanet_erfnet", None, backend="auto")
    assert torch_pipeline.backend == "torch"
    assert torch_pipeline.backend_reason.startswith("auto: torch for random weights")
    assert torch_pipeline.attention == attention_backend("cpu")
    named = SegmentationPipeline.from_pretrained("lmanet_erfnet", None, backend="torch")
    assert named.backend_reason == ""  # a named backend is no choice
