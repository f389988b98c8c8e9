"""ONNX export of the network step (lmanet_ros.runtime.export): graphs per fill level that match
PyTorch, their metadata, and the exporter failure mode they guard against (memory inputs dropped
and baked in as constants by the legacy TorchScript exporter)."""
from __future__ import annotations

import io

import onnx
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from runtime_helpers import MEMORY_LENGTH, SIZE

from lmanet_ros.models import build_model, get_weights
from lmanet_ros.models.attention import BACKEND_ENV
from lmanet_ros.models.checkpoint import file_sha256
from lmanet_ros.runtime import (BackendError, ExportError, GraphCache, LoadedModel, OPSET,
                                export_onnx, load_torch_model, read_metadata)
from lmanet_ros.runtime.graphs import StepGraph, check_exportable, example_inputs, graph_specs
from lmanet_ros.runtime.model import RuntimeModel
from lmanet_ros.runtime.split import resolve_layout, split_example_inputs, split_modules
from lmanet_ros.runtime.verify import TOLERANCE, max_error, verify_graph, verify_module_graph

#: Frames streamed: every fill level 0..T, then the full memory several times.
FRAMES = 6


def _stream_errors(reference, runtime, size, frames=FRAMES):
    """Per frame: (fill level read, max relative error of logits and of every memory tensor)."""
    generator = torch.Generator().manual_seed(3)
    torch_memory = runtime_memory = None
    errors = []
    with torch.inference_mode():
        for _ in range(frames):
            x = torch.rand(1, 3, *size, generator=generator)
            fill = len(torch_memory) if torch_memory is not None else 0
            expected, torch_memory = reference.step(x, torch_memory)
            got, runtime_memory = runtime.step(x, runtime_memory)
            worst = max_error(expected, got)
            if torch_memory is not None:
                assert type(runtime_memory) is type(torch_memory)
                assert len(runtime_memory) == len(torch_memory)
                for column in ("keys", "values"):
                    for a, b in zip(getattr(torch_memory, column), getattr(runtime_memory, column)):
                        worst = max(worst, max_error(a, b))
            errors.append((min(fill, reference.memory_length), worst))
    return errors


@pytest.mark.parametrize("name, layout", [("erfnet", "fill"), ("lmanet_erfnet", "fill"),
                                          ("lmanet_erfnet", "split")])
def test_graphs_match_pytorch_over_a_stream_at_every_fill_level(name, layout, backend_model):
    runtime = backend_model(name, layout=layout).model
    assert runtime.layout == layout
    reference = load_torch_model(name, "demo").model
    if reference.info.temporal:
        reference.memory_length = MEMORY_LENGTH
    errors = _stream_errors(reference, runtime, SIZE)
    assert {fill for fill, _ in errors} == set(range(reference.memory_length + 1))
    assert max(error for _, error in errors) <= TOLERANCE, errors
    assert runtime.session_runs == FRAMES * runtime.runs_per_step


@pytest.mark.parametrize("layout", ["fill", "split"])
def test_lmanet_pspnet50_graphs_match_pytorch_with_random_weights(tmp_path, layout):
    torch.manual_seed(0)
    model = build_model("lmanet_pspnet50", memory_length=1).eval()
    loaded = LoadedModel(model, None, None, None)
    size = (65, 129)  # 8k + 1: PSPNet's size, no padding
    runtime = RuntimeModel(loaded, backend="onnxruntime", input_size=size, threads=1,
                           cache=GraphCache(tmp_path), layout=layout)
    errors = _stream_errors(model, runtime, size)  # 6 frames, as for the ERFNet models
    assert {fill for fill, _ in errors} == {0, 1}
    assert max(error for _, error in errors) <= TOLERANCE, errors


def test_the_split_layout_is_lmanets_and_auto_picks_it(backend_model):
    assert backend_model("lmanet_erfnet").model.layout == "split"
    assert backend_model("erfnet").model.layout == "fill"
    with pytest.raises(BackendError, match="no split layout.*use layout fill"):
        resolve_layout(build_model("tmanet_erfnet"), "split")
    with pytest.raises(BackendError, match="graph layout must be auto or one of fill, split"):
        resolve_layout(build_model("erfnet"), "fused")


def test_split_metadata_describes_each_graph(backend_model):
    graphs = backend_model("lmanet_erfnet", layout="split").model.graphs
    assert "-split-" in graphs.folder.name
    shapes = {"x": [1, 3, *SIZE], "features": [1, 128, 8, 16], "keys_new": [1, 16, 8, 16],
              "values_new": [1, 64, 8, 16], "query_key": [1, 16, 8, 16],
              "query_value": [1, 64, 8, 16], "readout": [1, 64, 8, 16], "logits": [1, 20, *SIZE]}
    inputs = {"encode": ["x"], "decode": ["features"], "decode_fused": ["query_value", "readout"]}
    for name, path in graphs.paths.items():
        meta = read_metadata(path)
        assert meta["layout"] == "split" and meta["graph"] == name
        assert meta["graphs"] == ["encode", "decode", "decode_fused"]
        assert "memory_length" not in meta and "fill_levels" not in meta
        assert meta["model"] == "lmanet_erfnet" and meta["input_size"] == list(SIZE)
        assert [m["name"] for m in meta["inputs"]] == inputs[name]
        for tensor in meta["inputs"] + meta["outputs"]:
            assert tensor["shape"] == shapes[tensor["name"]], tensor
        assert [i.name for i in onnx.load(str(path)).graph.input] == inputs[name]


def test_a_split_graph_that_ignores_an_input_is_refused(lmanet):
    """The split layout's check: each input varied alone must move the output it moves in
    PyTorch; a graph with the read-out baked in (input present, unused) is refused."""
    modules = split_modules(lmanet, SIZE)
    first = split_example_inputs(lmanet, SIZE, seed=0)["decode_fused"]
    second = split_example_inputs(lmanet, SIZE, seed=1)["decode_fused"]
    constant = first[1].clone()

    class BakedIn(torch.nn.Module):
        def forward(self, query_value, readout):
            return modules["decode_fused"](query_value, constant + 0 * readout.sum())

    names = (["query_value", "readout"], ["logits"])
    with pytest.raises(ExportError, match="input 'readout' of the split graph .* does not "
                                          "change its output 'logits'"):
        verify_module_graph(_dynamo_bytes(BakedIn(), first, *names), modules["decode_fused"],
                            *names, first, second, "the split graph 'decode_fused'")
    verify_module_graph(_dynamo_bytes(modules["decode_fused"], first, *names),
                        modules["decode_fused"], *names, first, second,
                        "the split graph 'decode_fused'")  # the module itself passes


def _dynamo_bytes(module, inputs, input_names, output_names):
    with torch.no_grad():
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=OPSET,
                                    input_names=input_names, output_names=output_names)
    return program.model_proto.SerializeToString()


def test_metadata_describes_each_graph(backend_model):
    graphs = backend_model("lmanet_erfnet", layout="fill").model.graphs
    sha = file_sha256(get_weights("lmanet_erfnet", "demo").path)
    for fill, path in graphs.paths.items():
        meta = read_metadata(path)
        assert meta["model"] == "lmanet_erfnet" and meta["checkpoint_sha256"] == sha
        assert meta["input_size"] == list(SIZE) and meta["memory_length"] == MEMORY_LENGTH
        assert meta["fill_level"] == fill and meta["fill_levels"] == [0, 1, 2]
        assert meta["classes"][0] == "road" and meta["palette"][0] == [128, 64, 128]
        assert len(meta["classes"]) == len(meta["palette"]) == 19
        assert meta["normalisation"] is None and meta["memory_type"] == "Memory"
        assert [m["name"] for m in meta["memory_inputs"]] == (
            [f"keys_{i}" for i in range(fill)] + [f"values_{i}" for i in range(fill)])
        assert [m["shape"] for m in meta["memory_outputs"]] == [[1, 16, 8, 16], [1, 64, 8, 16]]
        assert meta["input"]["shape"] == [1, 3, *SIZE] and meta["logits"]["shape"][1] == 20
        proto = onnx.load(str(path))
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
        assert [i.name for i in proto.graph.input] == ["x", *(m["name"]
                                                              for m in meta["memory_inputs"])]


def _legacy_graph(model, fill, monkeypatch):
    """The step of ``fill`` frames through the legacy TorchScript exporter, under no_grad, with
    the attention's torch path (the tracer cannot take the compiled kernel at all)."""
    monkeypatch.setenv(BACKEND_ENV, "torch")
    spec = graph_specs(model, SIZE)[fill]
    inputs = example_inputs(model, fill, SIZE)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(StepGraph(model, fill), inputs, buffer, dynamo=False,
                          opset_version=OPSET, input_names=spec.input_names,
                          output_names=spec.output_names)
    return onnx.load_from_string(buffer.getvalue()), spec


@pytest.fixture(scope="module")
def lmanet():
    torch.manual_seed(0)
    return build_model("lmanet_erfnet", memory_length=1).eval()


def test_the_legacy_exporter_drops_the_memory_and_is_refused(lmanet, monkeypatch):
    proto, spec = _legacy_graph(lmanet, 1, monkeypatch)
    assert [i.name for i in proto.graph.input] == ["x"]  # the failure mode, as measured
    with pytest.raises(ExportError, match=r"lacks the inputs \['keys_0', 'values_0'\]"):
        verify_graph(proto.SerializeToString(), lmanet, spec, SIZE)


def test_memory_inputs_that_do_not_change_the_logits_are_refused(lmanet, monkeypatch):
    proto, spec = _legacy_graph(lmanet, 1, monkeypatch)
    for memory in spec.memory_inputs:  # present, but unused: the read-out stays a constant
        proto.graph.input.append(onnx.helper.make_tensor_value_info(
            memory.name, onnx.TensorProto.FLOAT, list(memory.shape)))
    with pytest.raises(ExportError, match="do not change the graph's logits"):
        verify_graph(proto.SerializeToString(), lmanet, spec, SIZE)


def test_export_needs_a_fixed_input_size_and_names_the_fix(tmp_path):
    with pytest.raises(BackendError, match="--input-size"):
        export_onnx("erfnet", None, tmp_path / "erfnet.onnx")


def test_models_without_a_fifo_memory_are_refused():
    with pytest.raises(BackendError, match="PathMemory"):
        check_exportable(build_model("tdnet_erfnet"))
    check_exportable(build_model("tmanet_erfnet"))
