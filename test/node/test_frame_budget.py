"""lmanet_node over real DDS with the issue 17 inputs: frames over the pixel budget are refused
before decoding (an 8192x8192 PNG of zeros, 79 KB; a 64x96 JPEG whose header claims 8000x8000),
counted as ``frames_over_budget`` in /diagnostics and logged, in bounded memory (the node's peak
RSS, ``VmHWM``), and the next good frame is labelled; ``max_frame_pixels`` and
``max_network_pixels`` act at run time; a network input over budget is refused when set;
``num_threads`` above the CPUs available is clamped with a warning, at start and at run time.

One node (random weights, lmanet_erfnet, network input 64x128) in the replay configuration
(processing_mode all, reliable keep-all input) on compressed input.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from fault_helpers import lying_jpeg
from ros_helpers import Rig, make_compressed, stamp_of, wait_until

pytestmark = pytest.mark.ros

RELIABLE_ALL = QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL,
                          reliability=ReliabilityPolicy.RELIABLE)
#: Growth of the node's peak RSS allowed while it refuses the two bombs and labels a frame;
#: decoding the PNG alone would take 192 MiB, the network at its size several GB.
GROWTH_LIMIT = 100 << 20
#: Threads the node process may have (executor, DDS, PyTorch's pool bounded by the CPUs);
#: 256 intra-op threads would be far above.
THREAD_LIMIT = 128
_stamps = itertools.count(1)


def next_stamp() -> float:
    """Increasing stamps 50 ms apart (no gap reset between test frames)."""
    return 2000.0 + next(_stamps) * 0.05


def frame(height: int = 64, width: int = 128, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def compressed(data: bytes, fmt: str):
    """A CompressedImage of ``data`` as it is, with a fresh stamp."""
    msg = make_compressed(frame(8, 8), fmt, stamp=next_stamp())
    msg.data = type(msg.data)("B", data)
    return msg


def proc_status(pid: int, key: str) -> int:
    """A numeric field of /proc/<pid>/status (VmHWM in kB, Threads)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture(scope="module")
def rig(ros, node_factory):
    node = node_factory(params={"processing_mode": "all", "input.reliability": "reliable",
                                "input.depth": 0, "input.transport": "compressed",
                                "num_threads": 256, "input_height": 64, "input_width": 128,
                                "diagnostics_period": 0.25})
    rig = Rig(ros, node, outputs=("labels",), input_qos=RELIABLE_ALL, compressed=True)

    def labelled():
        try:
            return rig.send(make_compressed(frame(), "png", stamp=next_stamp()), timeout=5.0)
        except AssertionError:
            return None
    wait_until(labelled, 60.0, interval=0.0, what="the labels of one frame")
    return rig


def good_frame_is_labelled(rig, height: int = 64, width: int = 128) -> None:
    try:
        out = rig.send(make_compressed(frame(height, width), "png", stamp=next_stamp()))
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the node's log ends:\n{rig.node.log()[-3000:]}") from None
    assert (out["labels"].height, out["labels"].width) == (height, width)


def refused(rig, msg, needle: str) -> dict:
    """Publish ``msg``, then a good 64x128 frame (labelled); the diagnostics once ``msg`` is
    counted over budget, its reason containing ``needle``."""
    before = int(rig.status()[1]["frames_over_budget"])
    rig.pub.publish(msg)
    good_frame_is_labelled(rig)
    assert not any(stamp_of(m) == stamp_of(msg) for m in rig.outputs["labels"].messages)
    _, values = rig.status(lambda v: int(v["frames_over_budget"]) > before)
    assert int(values["frames_over_budget"]) == before + 1
    assert needle in values["last_bad_input"], values["last_bad_input"]
    return values


def test_bombs_are_refused_in_bounded_memory_and_the_next_frame_labelled(rig):
    pid = rig.node.popen.pid
    peak_before = proc_status(pid, "VmHWM") * 1024
    ok, png = cv2.imencode(".png", np.zeros((8192, 8192), np.uint8))
    assert ok
    refused(rig, compressed(png.tobytes(), "png"),
            "frame 8192x8192 (67108864 pixels) is over max_frame_pixels 8294400: refused "
            "before decoding")
    refused(rig, compressed(lying_jpeg(8000, 8000), "jpeg"),
            "frame 8000x8000 (64000000 pixels) is over max_frame_pixels 8294400")
    growth = proc_status(pid, "VmHWM") * 1024 - peak_before
    print(f"node peak RSS growth over both bombs and two good frames: {growth / 2**20:.1f} MiB")
    assert growth < GROWTH_LIMIT
    status, values = rig.status(lambda v: int(v["frames_over_budget"]) >= 2)
    assert int(values["bad_inputs"]) >= 2
    log = rig.node.log()
    assert "bad input on" in log and "refused before decoding" in log
    assert rig.node.alive()


def test_max_frame_pixels_changes_at_run_time(rig):
    # the budget at exactly the good frame's 64x128: one row more is refused
    assert rig.ros.set_parameters(rig.node.fqn, {"max_frame_pixels": 64 * 128})[0].successful
    try:
        refused(rig, make_compressed(frame(65, 128), "jpeg", stamp=next_stamp()),
                "frame 128x65 (8320 pixels) is over max_frame_pixels 8192")
    finally:
        result = rig.ros.set_parameters(rig.node.fqn, {"max_frame_pixels": 3840 * 2160})[0]
        assert result.successful, result.reason
    good_frame_is_labelled(rig)


def test_frames_over_the_network_budget_at_their_own_size(rig):
    # random weights carry no trained size: without input_height/input_width the network runs
    # at each frame's own size, and max_network_pixels bounds the frame
    result = rig.ros.set_parameters(rig.node.fqn, {
        "input_height": 0, "input_width": 0, "max_network_pixels": 64 * 128}, atomic=True)[0]
    assert result.successful, result.reason
    try:
        refused(rig, make_compressed(frame(65, 128), "png", stamp=next_stamp()),
                "frame 128x65 (8320 pixels) is over max_network_pixels 8192 and the network "
                "runs at each frame's own size")
        # a network input within the budget: such a frame is resized to it and labelled
        result = rig.ros.set_parameters(rig.node.fqn, {"input_height": 32, "input_width": 64},
                                        atomic=True)[0]
        assert result.successful, result.reason
        good_frame_is_labelled(rig, 65, 128)
    finally:
        result = rig.ros.set_parameters(rig.node.fqn, {
            "input_height": 64, "input_width": 128, "max_network_pixels": 2048 * 1024},
            atomic=True)[0]
        assert result.successful, result.reason


def test_a_network_input_over_budget_is_refused_when_set(rig):
    result = rig.ros.set_parameters(rig.node.fqn, {"input_height": 8192, "input_width": 8192},
                                    atomic=True)[0]
    assert not result.successful
    assert "network input 8192x8192" in result.reason
    assert "over max_network_pixels 2097152" in result.reason
    # lowering the budget under the input size in force (64x128) is refused too
    result = rig.ros.set_parameters(rig.node.fqn, {"max_network_pixels": 1000})[0]
    assert not result.successful and "over max_network_pixels 1000" in result.reason
    values = rig.ros.get_parameters(rig.node.fqn, ["input_height", "max_network_pixels"])
    assert values == {"input_height": 64, "max_network_pixels": 2048 * 1024}
    good_frame_is_labelled(rig)


def test_num_threads_above_the_cpus_is_clamped_with_a_warning(rig):
    cpus = len(os.sched_getaffinity(rig.node.popen.pid))
    log = rig.node.log()
    assert f"num_threads 256 is more than the {cpus} CPU(s) this process may run on" in log
    assert f"PyTorch uses {cpus} thread(s)" in log
    threads = proc_status(rig.node.popen.pid, "Threads")
    print(f"node threads with num_threads 256 on {cpus} CPU(s): {threads}")
    assert threads < THREAD_LIMIT
    # at run time: applied (and warned about) with the next frame
    assert rig.ros.set_parameters(rig.node.fqn, {"num_threads": 200})[0].successful
    good_frame_is_labelled(rig)
    rig.node.wait_log(f"num_threads 200 is more than the {cpus} CPU(s)")
    assert proc_status(rig.node.popen.pid, "Threads") < THREAD_LIMIT
    assert rig.ros.set_parameters(rig.node.fqn, {"num_threads": 0})[0].successful
