"""SIGINT and SIGTERM end a bare ``lmanet_node`` cleanly at any moment (issue 13).

Moments: during the imports (rclpy, torch), during the warm-up (a 1024x2048 network input), while
256x512 frames are being inferred (random-weight lmanet_erfnet), and during one long inference
(a 1024x2048 frame); 1, 2 or 5 signals, SIGINT, SIGTERM or both, the later ones landing while the
node shuts down. Every case: exit code 0 (or 130), no traceback, no abort or core dump, the
process gone within 5 s of the first signal (lmanet_ros.node.process).
"""
from __future__ import annotations

import signal
import subprocess
import time
from typing import Iterator

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from process_helpers import CLEAN_CODES, EXIT_WITHIN_S, FrameStream, failure_marks
from ros_helpers import (NodeProcess, Rig, make_image, start_node_process, stamp_of,
                         wait_ready, wait_until)

pytestmark = pytest.mark.ros

#: Seconds between two signals of a burst: the later ones land during the shutdown.
GAP_S = 0.15
FRAME = (256, 512)
LONG = (1024, 2048)
INT, TERM = signal.SIGINT, signal.SIGTERM
BURSTS = {"1xINT": (INT,), "2xINT": (INT, INT), "5xINT": (INT,) * 5, "TERM": (TERM,),
          "INT+TERM": (INT, TERM)}


def send(process: NodeProcess, burst: str) -> float:
    """Send the burst's signals GAP_S apart (while the process lives); the first one's time."""
    first = time.monotonic()
    for index, signum in enumerate(BURSTS[burst]):
        if index:
            time.sleep(GAP_S)
        if process.popen.poll() is None:
            process.popen.send_signal(signum)
    return first


def assert_clean_exit(process: NodeProcess, first: float) -> None:
    """The process exits with a clean code, without a traceback, within EXIT_WITHIN_S."""
    try:
        code = process.popen.wait(EXIT_WITHIN_S + 10.0)
    except subprocess.TimeoutExpired:
        process.popen.kill()
        process.popen.wait(10.0)
        raise AssertionError(f"still running {EXIT_WITHIN_S + 10:.0f} s after the first signal:"
                             f"\n{process.log()[-3000:]}")
    elapsed = time.monotonic() - first
    log = process.log()
    print(f"exit code {code}, {elapsed:.2f} s after the first signal")
    assert code in CLEAN_CODES, f"exit code {code}:\n{log[-3000:]}"
    marks = failure_marks(log)
    assert not marks, f"{marks} in the output:\n{log[-3000:]}"
    assert elapsed < EXIT_WITHIN_S, f"exited {elapsed:.2f} s after the first signal"


@pytest.fixture
def start(run_dir) -> Iterator:
    """Start bare nodes (random weights, CPU); any still running at the end is killed."""
    started: list[NodeProcess] = []

    def factory(params: dict | None = None) -> NodeProcess:
        process, _ = start_node_process(run_dir, {"device": "cpu"}, params)
        started.append(process)
        return process

    yield factory
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(10.0)


@pytest.mark.parametrize("burst", ["1xINT", "5xINT", "TERM"])
def test_signal_during_the_imports(start, burst):
    process = start()
    time.sleep(0.3)  # the interpreter is up (~50 ms); rclpy and torch take seconds to import
    first = send(process, burst)
    assert "loaded " not in process.log(), "the model was loaded already: not during the imports"
    assert_clean_exit(process, first)


@pytest.mark.parametrize("burst", ["1xINT", "2xINT", "INT+TERM"])
def test_signal_during_the_warm_up(start, burst):
    process = start({"input_height": LONG[0], "input_width": LONG[1]})
    process.wait_log("loaded ", timeout=60.0)  # the next step is the warm-up at 1024x2048
    first = send(process, burst)
    assert "warmed up" not in process.log(), "the warm-up had ended: not during the warm-up"
    assert_clean_exit(process, first)


@pytest.mark.parametrize("burst", ["1xINT", "5xINT", "TERM"])
def test_signal_while_frames_are_inferred(ros, start, burst):
    process = start()
    wait_ready(ros, process)
    labels = ros.subscribe(Image, process.topic("labels"))
    stream = FrameStream(ros, process.input_topic("image"), FRAME)
    try:
        labels.wait_for(2, timeout=60.0)  # the worker is busy: a frame takes longer to infer
        first = send(process, burst)      # than the 0.1 s to the next one
        assert_clean_exit(process, first)
    finally:
        stream.close()
        ros.unsubscribe(labels)


def _inferring(rig: Rig) -> bool:
    """Whether the node's newest model diagnostics report an inference in progress."""
    for array_msg in reversed(list(rig.diagnostics.messages)):
        for status in array_msg.status:
            if status.name == f"{rig.node.fqn}: model":
                return any(kv.key == "inferring_for_s" and kv.value for kv in status.values)
    return False


def test_two_sigints_during_a_long_inference(ros, start):
    """The issue's abort: two SIGINTs while one inference runs for seconds in native code."""
    process = start({"diagnostics_period": 0.1, "input.reliability": "reliable"})
    wait_ready(ros, process)
    rig = Rig(ros, process, input_qos=QoSProfile(depth=1,
                                                 reliability=ReliabilityPolicy.RELIABLE))
    try:
        image = np.random.default_rng(1).integers(0, 256, (*LONG, 3), dtype=np.uint8)
        rig.pub.publish(make_image(image, stamp=5.0))
        wait_until(lambda: _inferring(rig), 60.0, what="an inference in progress")
        assert not any(stamp_of(m) == 5.0 for m in rig.outputs["labels"].messages)
        first = send(process, "2xINT")
        assert_clean_exit(process, first)
    finally:
        for collector in (*rig.outputs.values(), rig.diagnostics):
            ros.unsubscribe(collector)
