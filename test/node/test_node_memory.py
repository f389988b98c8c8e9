"""lmanet_node over real DDS: memory resets (time jump back, gap, frame_id, size, service,
parameter) visible in /diagnostics and the log (a gap reset says the gap, a reset request is
logged when it arrives), and parameters accepted (an integer for a double too) and refused, with
reasons that name parameter, type and value, through the SetParameters services.

One node with the live defaults (processing_mode latest, best-effort input); the test sends one
frame at a time and waits for its labels, so every frame is processed.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from rcl_interfaces.srv import DescribeParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from ros_helpers import Rig, make_image, pixels_of, resets, wait_until
from lmanet_ros.node.node import LOG_THROTTLE_S
from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES
from lmanet_ros.node.params import CITYSCAPES_PALETTE

pytestmark = pytest.mark.ros

_clock = itertools.count(1)


class Camera:
    """Stamps of a simulated camera: 50 ms apart unless told otherwise."""

    def __init__(self) -> None:
        self.t = 100.0

    def tick(self, dt: float = 0.05) -> float:
        self.t += dt
        return self.t


@pytest.fixture(scope="module")
def rig(ros, node_factory):
    node = node_factory(params={"diagnostics_period": 0.2})
    return Rig(ros, node, outputs=("labels",))


@pytest.fixture(scope="module")
def cam():
    return Camera()


IMAGE = np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)


def send(rig, stamp: float, frame_id: str = "cam", image: np.ndarray = IMAGE):
    return rig.send(make_image(image, stamp=stamp, frame_id=frame_id))["labels"]


def settle(rig, cam, frames: int = 2):
    for _ in range(frames):
        send(rig, cam.tick())
    return rig.status(lambda v: int(v["frames_processed"]) >= 1)[1]


def wait_resets(rig, reason: str, count: int) -> dict:
    return rig.status(lambda v: resets(v, reason) >= count)[1]


@pytest.mark.parametrize("reason", ["time_jump_back", "gap", "frame_id_change", "size_change"])
def test_memory_reset_rules(rig, cam, reason):
    before = settle(rig, cam)
    if reason == "time_jump_back":
        send(rig, cam.t - 10.0)  # a bag loops
        cam.t -= 10.0
    elif reason == "gap":
        send(rig, cam.tick(1.5))  # > memory.max_gap 1.0
    elif reason == "frame_id_change":
        send(rig, cam.tick(), frame_id="other_cam")
        send(rig, cam.tick(), frame_id="cam")
    else:
        send(rig, cam.tick(), image=IMAGE[:40, :88])
    values = wait_resets(rig, reason, resets(before, reason) + 1)
    assert int(values["memory_fill"]) >= 1
    said = {"gap": "gap 1.50 s > memory.max_gap 1.0 s"}.get(reason, reason)  # the gap, in s
    assert f"memory reset ({said})" in rig.node.log() or "more since the last" in rig.node.log()


def test_memory_fills_up_to_its_length_and_counts_duplicates(rig, cam):
    send(rig, cam.tick(5.0))  # gap: memory cleared
    for _ in range(5):
        send(rig, cam.tick())
    values = rig.status(lambda v: int(v["memory_fill"]) == 4)[1]
    duplicates = int(values["duplicates"])
    total = resets(values)
    send(rig, cam.t)  # same stamp again: processed, counted, no reset
    values = rig.status(lambda v: int(v["duplicates"]) == duplicates + 1)[1]
    assert resets(values) == total


def test_reset_service_resets_the_memory(rig, cam):
    before = settle(rig, cam)
    response, seconds = rig.ros.call(Trigger, rig.node.topic("reset_memory"))
    assert response.success and "image" in response.message
    send(rig, cam.tick())
    values = wait_resets(rig, "request", resets(before, "request") + 1)
    assert int(values["memory_fill"]) == 1


def test_memory_length_change_resets_with_reason_parameter(rig, cam):
    before = settle(rig, cam)
    result = rig.ros.set_parameters(rig.node.fqn, {"memory.length": 2})[0]
    assert result.successful, result.reason
    try:
        for _ in range(4):
            send(rig, cam.tick())
        values = wait_resets(rig, "parameter", resets(before, "parameter") + 1)
        values = rig.status(lambda v: v["memory_length"] == "2")[1]
        assert int(values["memory_fill"]) <= 2
    finally:  # 0: back to the model's own T, 4 for lmanet_erfnet
        assert rig.ros.set_parameters(rig.node.fqn, {"memory.length": 0})[0].successful
    assert rig.status(lambda v: v["memory_length"] == "4")


def test_max_gap_zero_disables_the_gap_rule(rig, cam):
    assert rig.ros.set_parameters(rig.node.fqn, {"memory.max_gap": 0.0})[0].successful
    try:
        before = settle(rig, cam)
        send(rig, cam.tick(30.0))
        send(rig, cam.tick())
        values = rig.status(lambda v: int(v["frames_processed"])
                            >= int(before["frames_processed"]) + 2)[1]
        assert resets(values, "gap") == resets(before, "gap")
    finally:
        rig.ros.set_parameters(rig.node.fqn, {"memory.max_gap": 1.0})


def test_memory_stride_stores_every_kth_frame(rig, cam):
    assert rig.ros.set_parameters(rig.node.fqn, {"memory.stride": 2})[0].successful
    try:
        send(rig, cam.tick(5.0))  # gap: memory cleared, this frame is stored
        for _ in range(4):
            send(rig, cam.tick())
        values = rig.status(lambda v: int(v["memory_fill"]) == 3)[1]  # frames 1, 3, 5 stored
        assert int(values["memory_fill"]) == 3
    finally:
        rig.ros.set_parameters(rig.node.fqn, {"memory.stride": 1})


def test_colour_and_overlay_are_not_rendered_without_subscribers(rig, cam):
    settle(rig, cam)  # only ~/labels is subscribed in this module
    values = rig.status(lambda v: int(v["frames_processed"]) > 0)[1]
    assert int(values["frames_rendered"]) == 0


# ------------------------------------------------------------------------------------ parameters
REFUSED = [
    ({"overlay_alpha": 1.5}, "overlay_alpha must be a double in [0.0, 1.0] (got 1.5)"),
    ({"overlay_alpha": "half"}, "overlay_alpha must be a double (got the string 'half')"),
    ({"memory.length": 33}, "memory.length must be an integer in [0, 32] (got 33)"),
    ({"memory.stride": "abc"}, "memory.stride must be an integer (got the string 'abc')"),
    ({"memory.stride": 2.0}, "memory.stride must be an integer (got the double 2.0)"),
    ({"publish.color": 1}, "publish.color must be a boolean, true or false (got the integer 1)"),
    ({"input.depth": -1}, "input.depth must be an integer in [0, 1000] (got -1)"),
    ({"model": "erfnet"}, "read-only"),
    ({"checkpoint": "/tmp/x.pth"}, "read-only"),
    ({"device": "cpu"}, "read-only"),
    ({"precision": "fp16"}, "read-only"),
    ({"palette": [1, 2, 3]}, "3 values (r, g, b) per class"),
    ({"palette": list(CITYSCAPES_PALETTE[:-1]) + [256]}, "outside 0..255"),
    ({"class_names": [f"c{i}" for i in range(25)]}, "the model has 20 outputs"),
    ({"processing_mode": "fastest"}, "latest, all"),
    ({"input.transport": "ffmpeg"}, "raw, compressed"),
    ({"input.reliability": "sometimes"}, "best_effort, reliable"),
    ({"cameras": ["front", "front"]}, "unique"),
    ({"cameras": ["front/left"]}, "not a valid topic name"),
]


@pytest.mark.parametrize("values, needle", REFUSED, ids=[
    f"{next(iter(v))}={next(iter(v.values()))!s:.12}" for v, _ in REFUSED])
def test_bad_parameter_values_are_refused_with_a_reason(rig, values, needle):
    name = next(iter(values))
    before = rig.ros.get_parameters(rig.node.fqn, [name])[name]
    result = rig.ros.set_parameters(rig.node.fqn, values)[0]
    assert not result.successful
    assert result.reason
    if needle:
        assert needle in result.reason, result.reason
    assert rig.ros.get_parameters(rig.node.fqn, [name])[name] == before


@pytest.mark.parametrize("values", [{"num_threads": 1}, {"diagnostics_period": 0.3},
                                    {"publish.color": False}, {"memory.max_gap": 2.5}])
def test_run_time_parameters_are_accepted(rig, cam, values):
    name = next(iter(values))
    before = rig.ros.get_parameters(rig.node.fqn, [name])[name]
    try:
        assert rig.ros.set_parameters(rig.node.fqn, values)[0].successful
        assert rig.ros.get_parameters(rig.node.fqn, [name])[name] == values[name]
        send(rig, cam.tick())  # still segmenting
    finally:
        assert rig.ros.set_parameters(rig.node.fqn, {name: before})[0].successful


def test_an_integer_for_a_double_is_accepted_as_that_double_and_takes_effect(rig, cam):
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters
    result = rig.ros.set_parameters(rig.node.fqn, {"memory.max_gap": 2})[0]  # an INTEGER
    assert result.successful, result.reason
    try:
        response, _ = rig.ros.call(GetParameters, f"{rig.node.fqn}/get_parameters",
                                   GetParameters.Request(names=["memory.max_gap"]))
        value = response.values[0]
        assert (value.type, value.double_value) == (ParameterType.PARAMETER_DOUBLE, 2.0)
        before = settle(rig, cam)
        send(rig, cam.tick(1.5))  # above the old 1.0 s, within the new 2.0 s: the memory stays
        values = rig.status(lambda v: int(v["frames_processed"])
                            > int(before["frames_processed"]))[1]
        assert resets(values, "gap") == resets(before, "gap")
        time.sleep(LOG_THROTTLE_S)  # the gap reset's line is not held back by an earlier one
        send(rig, cam.tick(2.5))
        wait_resets(rig, "gap", resets(before, "gap") + 1)
        rig.node.wait_log("camera 'image': memory reset (gap 2.50 s > memory.max_gap 2.0 s)")
    finally:
        assert rig.ros.set_parameters(rig.node.fqn, {"memory.max_gap": 1.0})[0].successful


def test_a_reset_request_is_logged_when_it_arrives(rig, cam):
    requested = ("~/reset_memory: memory reset requested for 1 camera(s): image; applied "
                 "before the next frame")
    applied = "camera 'image': memory reset (request)"
    settle(rig, cam)
    time.sleep(LOG_THROTTLE_S)  # the reset's line at the next frame is not held back
    count = rig.node.log().count(requested)
    response, _ = rig.ros.call(Trigger, rig.node.topic("reset_memory"))
    assert response.success
    wait_until(lambda: rig.node.log().count(requested) == count + 1, 10.0,
               what="the request in the log before any frame is sent")
    log = rig.node.log()
    assert log.rfind(applied) < log.rfind(requested)  # the reset itself waits for a frame
    send(rig, cam.tick())
    wait_until(lambda: rig.node.log().rfind(applied) > rig.node.log().rfind(requested), 10.0,
               what="the reset applied at the next frame")


def test_parameters_describe_ranges_and_read_only(rig):
    response, _ = rig.ros.call(DescribeParameters, f"{rig.node.fqn}/describe_parameters",
                               DescribeParameters.Request(names=["checkpoint", "overlay_alpha",
                                                                 "memory.max_gap"]))
    checkpoint, alpha, gap = response.descriptors
    assert checkpoint.read_only and not alpha.read_only
    assert alpha.floating_point_range[0].to_value == 1.0
    assert gap.description and "gap" in gap.description


def test_class_set_change_is_accepted_and_republished(rig, cam):
    from lmanet_ros.msg import LabelInfo
    names = ["ground", "thing", "sky"]
    palette = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    result = rig.ros.set_parameters(rig.node.fqn, {"class_names": names, "palette": palette},
                                    atomic=True)[0]
    assert result.successful, result.reason
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    infos = rig.ros.subscribe(LabelInfo, rig.node.topic("label_info"), latched)
    try:
        info = infos.wait_for(1, 10.0, lambda m: len(m.classes) == 3)[0]
        assert [c.name for c in info.classes] == names
        assert (info.classes[2].r, info.classes[2].g, info.classes[2].b) == (70, 80, 90)
        labels = pixels_of(send(rig, cam.tick()))
        assert labels.max() < 3
    finally:
        rig.ros.unsubscribe(infos)
        result = rig.ros.set_parameters(
            rig.node.fqn, {"class_names": list(CITYSCAPES_CLASS_NAMES),
                           "palette": list(CITYSCAPES_PALETTE)}, atomic=True)[0]
        assert result.successful, result.reason


def test_refusals_are_logged(rig):
    wait_until(lambda: "parameter change refused" in rig.node.log(), 5.0,
               what="a refusal in the node's log")
