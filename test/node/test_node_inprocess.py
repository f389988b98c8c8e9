"""LmanetNode in the test process (an rclpy Context of its own, a MultiThreadedExecutor spinning in
a thread): labels with the header copied, diagnostics read from the pipeline, parameter refusal
and run-time changes, start-up refusal, and the weights' metadata (trained input size and memory
length of the demo LMANet) in force when the parameters leave them at 0, explicit values winning.

Where a process boundary is not the point this is much faster than the process-level tests
(test_node_io.py and friends), and the node's pipeline can be inspected directly.
"""
from __future__ import annotations


import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from inprocess_helpers import InProcess
from ros_helpers import camera_status, make_image, pixels_of, stamp_of, wait_until

pytestmark = pytest.mark.ros

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: A small network input keeps every inference short on the test machine's CPU.
SMALL = {"input_height": 64, "input_width": 128}


@pytest.fixture(scope="module")
def live():
    """A random-weights lmanet_erfnet at 64x128, diagnostics every 0.1 s; labels collected."""
    rig = InProcess.labelled({**SMALL, "diagnostics_period": 0.1})
    yield rig
    rig.close()


def _image(height: int = 48, width: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _send(rig: InProcess, msg) -> Image:
    rig.pub.publish(msg)
    stamp = stamp_of(msg)
    return rig.labels.wait_for(1, 30.0, lambda m: stamp_of(m) == stamp)[0]


def _status(rig: InProcess, predicate, camera: str = "image") -> dict:
    """Values of the newest status of ``camera`` (or ``model``) that satisfy ``predicate``."""
    def find():
        for array_msg in reversed(list(rig.diagnostics.messages)):
            if camera == "model":
                found = next(({kv.key: kv.value for kv in s.values} for s in array_msg.status
                              if s.name == f"{rig.fqn}: model"), None)
            else:
                found = (camera_status(array_msg, rig.fqn, camera) or (None, None))[1]
            if found is not None and predicate(found):
                return found
        return None
    return wait_until(find, 15.0, what=f"diagnostics of {camera} matching")


def test_labels_arrive_with_the_header_copied(live):
    msg = make_image(_image(), "bgr8", frame_id="front_optical")
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 999999999
    labels = _send(live, msg)
    assert (labels.header.stamp.sec, labels.header.stamp.nanosec) == (1700000000, 999999999)
    assert labels.header.frame_id == "front_optical"
    assert (labels.encoding, labels.height, labels.width) == ("mono8", 48, 96)
    assert pixels_of(labels).max() < 19


def test_diagnostics_report_what_the_pipeline_holds(live):
    pipeline = live.node.pipeline
    assert pipeline.input_size == (64, 128) and pipeline.memory_length == 4
    model = _status(live, lambda v: True, camera="model")
    assert model["input_size"] == "64x128" and model["memory_length"] == "4"
    assert model["checkpoint_id"] == "random-init" and model["weights"] == "random weights"
    start = 2000.0
    for index in range(3):
        _send(live, make_image(_image(seed=index), stamp=start + 0.05 * index))
    before = pipeline.stats("image").duplicates
    _send(live, make_image(_image(seed=9), stamp=start + 0.1))  # the same stamp again
    # a snapshot taken once the frame is done (the node counts it after publishing)
    values = _status(live, lambda v: int(v["duplicates"]) == before + 1
                     and int(v["frames_processed"]) == pipeline.stats("image").processed)
    stream = pipeline.stats("image")
    assert int(values["duplicates"]) == stream.duplicates          # read from the pipeline
    assert int(values["memory_fill"]) == stream.memory_fill
    assert int(values["resets"]) == sum(stream.resets.values())
    assert values["memory_length"] == "4" and int(values["frames_processed"]) >= 4


def test_bad_parameter_values_are_refused_and_nothing_changes(live):
    before = live.node.get_parameter("palette").value
    results = live.node.set_parameters([Parameter("palette", value=[1, 2, 3])])
    assert not results[0].successful
    assert "3 values (r, g, b) per class" in results[0].reason
    assert list(live.node.get_parameter("palette").value) == list(before)
    refused = live.node.set_parameters([Parameter("processing_mode", value="fastest")])[0]
    assert not refused.successful and "latest, all" in refused.reason
    assert live.node.get_parameter("processing_mode").value == "latest"


def test_memory_length_and_input_size_change_the_pipeline(live):
    pipeline = live.node.pipeline
    try:
        assert live.node.set_parameters([Parameter("memory.length", value=2)])[0].successful
        assert pipeline.memory_length == 2
        assert _status(live, lambda v: v["memory_length"] == "2")
        assert live.node.set_parameters([Parameter("input_width", value=0)])[0].successful
        assert pipeline.input_size == (0, 0)  # random weights: no trained size, frame's own
        labels = _send(live, make_image(_image(40, 88), stamp=3000.0))
        assert (labels.height, labels.width) == (40, 88)
    finally:
        live.node.set_parameters([Parameter("memory.length", value=0),
                                  Parameter("input_width", value=SMALL["input_width"])])
    assert pipeline.memory_length == 4 and pipeline.input_size == (64, 128)


def test_unknown_model_is_refused_at_startup():
    from lmanet_ros.node.loading import StartupError
    with pytest.raises(StartupError, match="unknown model 'segformer'"):
        InProcess({"model": "segformer"})


def _label_info(rig: InProcess):
    from lmanet_ros.msg import LabelInfo
    return rig.subscribe(LabelInfo, f"{rig.fqn}/label_info", LATCHED).wait_for(1, 10.0)[0]


def test_demo_weights_metadata_gives_input_size_and_memory_length():
    rig = InProcess({"checkpoint": "demo", "diagnostics_period": 0.1})
    try:
        pipeline = rig.node.pipeline
        assert pipeline.input_size == (128, 256)   # the demo metadata's trained size
        assert pipeline.memory_length == 3         # the demo metadata's T (model default 4)
        assert pipeline.weights is not None and pipeline.weights.tag == "demo"
        assert pipeline.checkpoint_id == pipeline.load_report.sha256[:16]
        assert _label_info(rig).memory_length == 3
        rig.diagnostics = rig.subscribe(DiagnosticArray, "/diagnostics")
        model = _status(rig, lambda v: True, camera="model")
        assert model["input_size"] == "128x256" and model["memory_length"] == "3"
        assert model["weights"].startswith("demo weights of lmanet_erfnet")
    finally:
        rig.close()


def test_explicit_parameters_win_over_the_weights_metadata():
    # backend torch: the input size goes back to the trained size at run time (the default,
    # auto, runs onnxruntime for these weights, whose graphs have one size: a restart)
    rig = InProcess({"checkpoint": "demo", "memory.length": 2, "backend": "torch", **SMALL})
    try:
        assert rig.node.pipeline.input_size == (64, 128)
        assert rig.node.pipeline.memory_length == 2
        assert _label_info(rig).memory_length == 2
        # back to 0: the weights' values again
        assert rig.node.set_parameters([Parameter("memory.length", value=0),
                                        Parameter("input_height", value=0)])[0].successful
        assert rig.node.pipeline.memory_length == 3
        assert rig.node.pipeline.input_size == (128, 256)
    finally:
        rig.close()
