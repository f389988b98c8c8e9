"""Helpers of the tests that treat ``lmanet_node`` and the ROS 2 tools as processes (signals,
``ros2 launch``, ``ros2 param``, ``ros2 service``, launch_pytest): what a clean exit is, frames
streamed into a node, and the real ROS 2 tools, skipping with the reason where they are missing.

The tools come from ../shared/wheels (scripts/setup_venv.sh installs them where that folder
exists); ``ros2 launch lmanet_ros ...`` finds the package through AMENT_PREFIX_PATH
(scripts/ros_env.sh, which scripts/test.sh sources). Import as ``from process_helpers import ...``;
nothing here imports rclpy at module level.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest

from ros_helpers import NodeProcess, child_env, make_image, stamp_of, wait_until

#: Seconds from the first signal (or Ctrl-C) to the end of every process, at most.
EXIT_WITHIN_S = 5.0
#: Exit codes of a clean end after SIGINT/SIGTERM.
CLEAN_CODES = (0, 130)
#: Output that means a process did not end cleanly.
FAILURE_MARKS = ("Traceback", "terminate called", "Aborted", "core dumped", "Fatal Python")

TOOLS_MISSING = ("the ROS 2 launch and command-line tools are not installed (ROS 2 from PyPI has "
                 "none; scripts/setup_venv.sh installs them where ../shared/wheels exists; "
                 "robots have them)")
PREFIX_MISSING = ("the lmanet_ros ament prefix is not on AMENT_PREFIX_PATH: run the tests with "
                  "scripts/test.sh, or `. scripts/ros_env.sh` first (after scripts/setup_venv.sh)")


def run_all(commands: dict[str, list[str]], directory: Path,
            timeout: float = 120.0) -> dict[str, tuple[int, str, str]]:
    """Run every command at once (in ``directory``, the tests' environment); name ->
    (exit code, stdout, stderr). A command still running after ``timeout`` s is killed."""
    running = {name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=child_env(), text=True, cwd=str(directory))
               for name, command in commands.items()}
    results = {}
    for name, proc in running.items():
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = (proc.returncode, out, err)
    return results


class LineLog:
    """A logger with ``info`` and ``warning`` that keeps the lines (the node's is rclpy's)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    warning = info


def failure_marks(output: str) -> list[str]:
    """The FAILURE_MARKS found in a process's output."""
    return [mark for mark in FAILURE_MARKS if mark in output]


# ------------------------------------------------------------------------------------- frames
class FrameStream:
    """Publish a random rgb8 image of ``shape`` to ``topic`` at 10 Hz from a thread until
    closed (reliable: it reaches best-effort and reliable subscriptions alike)."""

    def __init__(self, ros, topic: str, shape: tuple[int, int]) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        self._pub = ros.publisher(Image, topic,
                                  QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self._image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stamp = 1.0
        while not self._closed.wait(0.1):
            self._pub.publish(make_image(self._image, stamp=stamp))
            stamp += 0.1

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5.0)


def segment_once(ros, input_topic: str, labels_topic: str, stamp: float,
                 frame_id: str) -> Any:
    """Publish a 67x131 bgr8 frame (again each second) until its labels arrive; the labels.

    The labels must carry the input header: ``stamp`` and ``frame_id``, at the input's size.
    """
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    labels = ros.subscribe(Image, labels_topic)
    try:
        ros.wait_for_publishers(labels)
        publisher = ros.publisher(Image, input_topic,
                                  QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        image = np.random.default_rng(0).integers(0, 256, (67, 131, 3), dtype=np.uint8)

        def segmented():
            publisher.publish(make_image(image, "bgr8", stamp=stamp, frame_id=frame_id))
            return next((m for m in labels.messages if stamp_of(m) == stamp), None)
        msg = wait_until(segmented, 60.0, interval=1.0, what=f"labels of the frame on "
                                                             f"{input_topic}")
    finally:
        ros.unsubscribe(labels)
    assert (msg.encoding, msg.height, msg.width) == ("mono8", 67, 131)
    assert msg.header.frame_id == frame_id
    return msg


# ------------------------------------------------------------------------------ the ROS tools
def require_module(name: str) -> ModuleType:
    """Import a ROS launch package (launch, launch_pytest) or skip the module where it is not
    installed (then neither is launch_testing's pytest plugin, which would turn a skip at
    import into a collection error: it imports every test module itself)."""
    reason = f"{name}: {TOOLS_MISSING}"
    try:
        module = importlib.import_module(name)
    except ImportError:
        pytest.skip(reason, allow_module_level=True)
    if getattr(module, "__file__", None) is None:  # the repository's launch/ folder, not ROS's
        pytest.skip(reason, allow_module_level=True)
    return module


def ros2_executable() -> str | None:
    """The ``ros2`` command of this environment (None where it is not installed)."""
    candidate = Path(sys.executable).parent / "ros2"
    return str(candidate) if candidate.exists() else shutil.which("ros2")


def installed_launch_file() -> Path | None:
    """lmanet.launch.py in the lmanet_ros ament prefix, whose lib/lmanet_ros/lmanet_node the
    launch file starts (None where the prefix is missing or not on AMENT_PREFIX_PATH)."""
    try:
        from ament_index_python.packages import get_package_prefix, get_package_share_directory
        launch_file = Path(get_package_share_directory("lmanet_ros")) / "launch" / \
            "lmanet.launch.py"
        executable = Path(get_package_prefix("lmanet_ros")) / "lib" / "lmanet_ros" / \
            "lmanet_node"
    except (ImportError, LookupError, OSError):  # not found; AMENT_PREFIX_PATH unset
        return None
    return launch_file if launch_file.is_file() and os.access(executable, os.X_OK) else None


def tools_missing() -> str | None:
    """Why the tests of the real ROS 2 tools cannot run here; None when they can."""
    if ros2_executable() is None or importlib.util.find_spec("launch_ros") is None:
        return TOOLS_MISSING
    return PREFIX_MISSING if installed_launch_file() is None else None


#: Marks a test (module) of the real tools: skipped, with the reason, where they are missing (a
#: mark, not a skip at import: see :func:`require_module`).
needs_tools = pytest.mark.skipif(tools_missing() is not None, reason=str(tools_missing()))


def ros2(*args: str, expect: Callable[[str], bool] = lambda output: True,
         timeout: float = 30.0) -> str:
    """Run ``ros2 ARGS`` until it exits 0 with an output that ``expect`` accepts (a fresh
    ``ros2`` daemon may not know a node yet); its output (stdout, then stderr)."""
    command = [str(ros2_executable()), *args]
    outputs = [""]

    def attempt() -> str | None:
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=child_env(),
                                  timeout=max(5.0, timeout / 2))
        except subprocess.TimeoutExpired as exc:  # e.g. a service not there yet: it waits
            outputs.append(f"timed out: {exc.stdout or ''}{exc.stderr or ''}")
            return None
        output = proc.stdout + proc.stderr
        outputs.append(f"exit {proc.returncode}: {output}")
        return output if proc.returncode == 0 and expect(output) else None

    try:
        return wait_until(attempt, timeout, interval=0.5, what=f"`ros2 {' '.join(args)}`")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its last output:\n{outputs[-1]}") from None


def start_ros2_launch(directory: Path, values: dict[str, str]) -> NodeProcess:
    """Start ``ros2 launch lmanet_ros lmanet.launch.py`` with the launch arguments ``values``
    in a process group of its own, as a terminal starts a command (so that :func:`ctrl_c`
    reaches launch and the node). Returns the :class:`NodeProcess` of ``ros2 launch`` (node
    name and topics from the same arguments; its log holds launch's and the node's output)."""
    from lmanet_ros.node.launch_args import resolve
    command = [str(ros2_executable()), "launch", "lmanet_ros", "lmanet.launch.py",
               *(f"{name}:={value}" for name, value in values.items())]
    log_path = directory / "ros2_launch.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                                 cwd=str(directory), start_new_session=True)
    return NodeProcess(resolve(values), popen, log_path)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def ctrl_c(process: NodeProcess, timeout: float = EXIT_WITHIN_S + 10.0) -> tuple[int, float]:
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group of ``process``.

    Returns (exit code of the group's leader, seconds until every process of the group was
    gone); kills the group and fails after ``timeout`` seconds.
    """
    group = process.popen.pid
    start = time.monotonic()
    os.killpg(group, signal.SIGINT)
    try:
        code = process.popen.wait(timeout)
        wait_until(lambda: not _group_alive(group), max(0.1, timeout - (time.monotonic() - start)),
                   interval=0.05, what="every process of the group to exit")
    except (subprocess.TimeoutExpired, AssertionError):
        kill_group(process)
        raise AssertionError(f"still running {timeout:.0f} s after Ctrl-C:\n"
                             f"{process.log()[-3000:]}") from None
    return code, time.monotonic() - start


def kill_group(process: NodeProcess) -> None:
    """SIGKILL the process group of ``process`` (when a test failed before ending it)."""
    if _group_alive(process.popen.pid):
        os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(10.0)
