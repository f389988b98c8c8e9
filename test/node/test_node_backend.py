"""lmanet_node with ``backend: onnxruntime``: the exported graphs run behind the node.

Over real DDS, a node started with the demo LMANet-ERFNet weights, backend onnxruntime, 64x128
input and T = 2 exports its graphs into a cache of its own at start (the log says where), then
publishes the labels the torch pipeline gives for the same frames, and its /diagnostics name the
backend. A backend that cannot run stops the start with one line: CUDA asked for (a node
process), a missing package (the node's loader, in this process).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from process_helpers import LineLog
from ros_helpers import (Rig, child_env, make_image, node_executable, pixels_of, wait_until,
                         write_params_file)
from lmanet_ros.node.launch_args import resolve
from lmanet_ros.node.loading import StartupError, load_pipeline
from lmanet_ros.node.params import Settings, validate
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.synthetic import SynthSequence

pytestmark = pytest.mark.ros

SIZE = (64, 128)
MEMORY_LENGTH = 2
FRAMES = 4
RELIABLE_ALL = QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL,
                          reliability=ReliabilityPolicy.RELIABLE)
PARAMS = {"checkpoint": "demo", "backend": "onnxruntime", "input_height": SIZE[0],
          "input_width": SIZE[1], "memory.length": MEMORY_LENGTH, "num_threads": 1,
          "processing_mode": "all", "input.reliability": "reliable", "input.depth": 0,
          "diagnostics_period": 0.25}


@pytest.fixture(scope="module")
def street() -> list[np.ndarray]:
    return [f.image for f in SynthSequence(5, height=SIZE[0], width=SIZE[1], n_frames=FRAMES)]


@pytest.fixture(scope="module")
def rig(ros, node_factory, tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx_cache")
    with pytest.MonkeyPatch.context() as patch:  # the node process's graph cache
        patch.setenv("LMANET_CACHE", str(cache))
        node = node_factory(params=PARAMS)
    return Rig(ros, node, outputs=("labels",), input_qos=RELIABLE_ALL), cache


def _model_values(rig: Rig) -> dict[str, str] | None:
    for array_msg in reversed(list(rig.diagnostics.messages)):
        for status in array_msg.status:
            if status.name == f"{rig.node.fqn}: model":
                return {kv.key: kv.value for kv in status.values}
    return None


def test_the_node_publishes_the_torch_pipelines_labels_from_onnxruntime(rig, street):
    rig, cache = rig
    log = rig.node.log()
    assert f"backend onnxruntime {onnxruntime.__version__}" in log
    assert "onnxruntime runs 3 graph(s), split around the memory attention" in log
    assert str(cache) in log
    folders = list(cache.iterdir())  # exported at start: LMANet's split layout
    assert len(folders) == 1 and sorted(p.name for p in folders[0].glob("*.onnx")) == [
        "decode.onnx", "decode_fused.onnx", "encode.onnx"]

    reference = SegmentationPipeline.from_pretrained(
        "lmanet_erfnet", "demo", device="cpu", input_size=SIZE, memory_length=MEMORY_LENGTH)
    for index, image in enumerate(street):
        stamp = 10.0 + 0.05 * index
        labels = rig.send(make_image(image, stamp=stamp), timeout=60.0)["labels"]
        expected = reference.process([Frame("cam", image, int(stamp * 1e9), "camera")])[0]
        np.testing.assert_array_equal(pixels_of(labels), expected.labels)

    values = wait_until(lambda: _model_values(rig), 10.0, what="the model's diagnostics")
    assert values["backend"] == f"onnxruntime {onnxruntime.__version__}"
    assert values["device"] == "cpu"
    assert values["attention"].endswith(" between onnxruntime graphs"), values["attention"]
    assert (values["input_size"], values["memory_length"]) == ("64x128", str(MEMORY_LENGTH))


def test_the_fixed_input_size_is_refused_at_run_time_and_frames_go_on(rig, street):
    rig, _ = rig
    result = rig.ros.set_parameters(rig.node.fqn, {"input_height": 2 * SIZE[0]})[0]
    assert not result.successful and "backend onnxruntime" in result.reason, result.reason
    assert rig.ros.set_parameters(rig.node.fqn, {"input_height": SIZE[0]})[0].successful
    large = np.repeat(np.repeat(street[0], 2, axis=0), 2, axis=1)  # resized to the graphs' size
    labels = rig.send(make_image(large, stamp=20.0), timeout=60.0)["labels"]
    assert (labels.height, labels.width) == large.shape[:2]


def test_a_graph_backend_on_cuda_stops_the_start_with_one_line(tmp_path):
    params = write_params_file(tmp_path, {"backend": "onnxruntime", "device": "cuda",
                                          "checkpoint": "demo"})
    launch = resolve({"namespace": "/backend_cuda", "params_file": params})
    done = subprocess.run(launch.command(node_executable(launch.executable)), env=child_env(),
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert done.returncode not in (0, None) and "Traceback" not in done.stderr + done.stdout
    problems = [line for line in done.stderr.splitlines()
                if line.strip() and not line.startswith(("[DEBUG]", "[INFO]", "[WARN]"))]
    assert len(problems) == 1, done.stderr
    assert "onnxruntime backend runs on the CPU, not cuda" in problems[0], problems[0]


def test_the_default_backend_auto_runs_onnxruntime_for_a_checkpoint_and_says_why(
        tmp_path, monkeypatch):
    monkeypatch.setenv("LMANET_CACHE", str(tmp_path))
    assert Settings().backend == "auto"
    settings = Settings(checkpoint="demo", input_height=SIZE[0], input_width=SIZE[1],
                        memory_length=MEMORY_LENGTH, num_threads=1)
    log = LineLog()
    pipeline = load_pipeline(settings, log)
    assert pipeline.backend == "onnxruntime"
    loaded = next(line for line in log.lines if line.startswith("loaded lmanet_erfnet"))
    assert (f"backend onnxruntime {onnxruntime.__version__}; auto: onnxruntime, the fastest "
            f"installed backend on the CPU") in loaded
    assert "split around the memory attention" in "\n".join(log.lines)
    # what auto chose is what a run-time resize is checked against
    reason = validate({"input_height": 2 * SIZE[0]}, settings.as_dict(),
                      running_backend=pipeline.backend)
    assert reason and "while backend onnxruntime runs" in reason and "backend torch" in reason
    assert validate({"input_height": 2 * SIZE[0]}, settings.as_dict(),
                    running_backend="torch") is None
    log = LineLog()  # random weights: nothing to export, torch runs
    assert load_pipeline(Settings(input_height=SIZE[0], input_width=SIZE[1]), log).backend == \
        "torch"
    assert "auto: torch for random weights" in log.lines[0]


def test_a_missing_backend_package_is_a_startup_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    settings = Settings(checkpoint="demo", backend="openvino", input_height=SIZE[0],
                        input_width=SIZE[1])
    log = LineLog()
    with pytest.raises(StartupError, match="openvino backend needs the 'openvino' package.*"
                                           "pip install openvino"):
        load_pipeline(settings, log)
    assert not log.lines  # refused before anything was loaded


def test_the_parameters_choices_are_the_runtimes_backends():
    from lmanet_ros.node.params import SPEC_BY_NAME, Settings
    from lmanet_ros.runtime import BACKEND_CHOICES
    spec = SPEC_BY_NAME["backend"]
    assert spec.choices == BACKEND_CHOICES and spec.read_only and spec.default == "auto"
    assert Settings().backend == "auto"
