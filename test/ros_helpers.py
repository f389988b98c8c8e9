"""Helpers of the ROS tests (no fixtures: those are in conftest.py): polling, a client node
spinning in the background, image messages, and ``lmanet_node`` started as a process exactly as
``launch/lmanet.launch.py`` starts it (``lmanet_ros.node.launch_args``).

Import them as ``from ros_helpers import ...`` (a uniquely named module: ``from conftest import``
would resolve to whichever conftest.py pytest imported last). Nothing here imports rclpy at module
level, so tests without ROS do not pay for it; the ROS environment is set by conftest.py.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lmanet_ros.stamps import ns_to_seconds, seconds_to_ns, split_ns, stamp_ns

ROOT = Path(__file__).resolve().parent.parent

#: Seconds a node may take to load, warm up and publish label_info on this machine.
READY_TIMEOUT = float(os.environ.get("LMANET_TEST_READY_TIMEOUT", "90"))
#: Seconds a node may take to exit after SIGINT.
EXIT_TIMEOUT = 30.0


def node_executable(name: str = "lmanet_node") -> str:
    """The console script ``name`` (``lmanet_node``, ``lmanet_lifecycle_node``) of this
    interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes (the session's domain, localhost only)."""
    env = dict(os.environ)
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------- rclpy side
class Collector:
    """Messages of one subscription, kept in arrival order with their arrival times."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.times: list[float] = []
        self._cond = threading.Condition()

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self.times.append(time.monotonic())
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self.messages)

    def wait_for(self, count: int = 1, timeout: float = 10.0,
                 predicate: Callable[[Any], bool] | None = None) -> list[Any]:
        """Wait until ``count`` messages (matching ``predicate``) arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matching = [m for m in self.messages if predicate is None or predicate(m)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout:.1f} s: {len(matching)} of "
                                         f"{count} messages")
                self._cond.wait(remaining)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
            self.times.clear()


class RosClient:
    """A test node spinning in a background thread; helpers for topics, services, parameters."""

    def __init__(self, context) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node

        self.context = context
        self.node = Node(f"lmanet_test_client_{os.getpid()}", context=context)
        self.executor = MultiThreadedExecutor(num_threads=3, context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._rclpy = rclpy
        self._thread.start()

    def _spin(self) -> None:
        """Spin until closed (an error ends the thread with its traceback: ending silently, as
        this did, left every later wait of the module timing out with no cause given)."""
        from lmanet_ros.ros_env import spin
        spin(self.executor)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._thread.join(5.0)

    # topics
    def subscribe(self, msg_type, topic: str, qos=None) -> Collector:
        """Subscribe (reliable, depth 100 by default) and collect the messages."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        collector = Collector()
        qos = qos or QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        collector.subscription = self.node.create_subscription(msg_type, topic, collector, qos)
        return collector

    def unsubscribe(self, collector: Collector) -> None:
        self.node.destroy_subscription(collector.subscription)

    def publisher(self, msg_type, topic: str, qos=None, *, subscribers: int = 1,
                  timeout: float = 20.0):
        """A publisher (best effort, depth 10 by default), once it has ``subscribers`` matched."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        qos = qos or QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        pub = self.node.create_publisher(msg_type, topic, qos)
        if subscribers:
            wait_until(lambda: pub.get_subscription_count() >= subscribers, timeout,
                       what=f"{subscribers} subscriber(s) on {pub.topic_name}")
        return pub

    def wait_for_publishers(self, collector: Collector, count: int = 1, timeout: float = 20.0):
        sub = collector.subscription
        wait_until(lambda: sub.get_publisher_count() >= count, timeout,
                   what=f"{count} publisher(s) on {sub.topic_name}")

    # services
    def client(self, srv_type, name: str, timeout: float = 10.0, qos=None):
        """A service client, once the service is available (destroy it with the node);
        ``qos``: its QoS (None: the ROS default for services)."""
        client = (self.node.create_client(srv_type, name) if qos is None else
                  self.node.create_client(srv_type, name, qos_profile=qos))
        if not client.wait_for_service(timeout_sec=timeout):
            self.node.destroy_client(client)
            raise AssertionError(f"service {name} not available after {timeout} s")
        return client

    @staticmethod
    def call_with(client, request, timeout: float = 10.0):
        """Call through an existing client; return (response, seconds from call to answer)."""
        done = threading.Event()
        start = time.monotonic()
        future = client.call_async(request)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            raise AssertionError(f"service {client.srv_name} did not answer within {timeout} s")
        return future.result(), time.monotonic() - start

    def call(self, srv_type, name: str, request=None, timeout: float = 10.0):
        """Call a service once (a client of its own); return (response, seconds)."""
        client = self.client(srv_type, name, timeout)
        try:
            return self.call_with(client, request if request is not None else srv_type.Request(),
                                  timeout)
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_fqn: str, values: dict[str, Any], *, atomic: bool = False,
                       timeout: float = 10.0):
        """Set parameters of another node through its SetParameters service; list of results."""
        from rcl_interfaces.srv import SetParameters, SetParametersAtomically
        from rclpy.parameter import Parameter
        params = [Parameter(name, value=value).to_parameter_msg()
                  for name, value in values.items()]
        srv = SetParametersAtomically if atomic else SetParameters
        suffix = "set_parameters_atomically" if atomic else "set_parameters"
        response, _ = self.call(srv, f"{node_fqn}/{suffix}", srv.Request(parameters=params),
                                timeout)
        return [response.result] if atomic else list(response.results)

    def get_parameters(self, node_fqn: str, names: list[str], timeout: float = 10.0):
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        response, _ = self.call(GetParameters, f"{node_fqn}/get_parameters",
                                GetParameters.Request(names=names), timeout)
        return {name: parameter_value_to_python(value)
                for name, value in zip(names, response.values)}


# ------------------------------------------------------------------------------ message helpers
def make_image(rgb, encoding: str = "rgb8", stamp: float = 1.0, frame_id: str = "camera",
               row_padding: int = 0):
    """A sensor_msgs/Image of an RGB array in any encoding (lmanet_ros.imaging.encode_image)."""
    import array

    from sensor_msgs.msg import Image

    from lmanet_ros import imaging
    step, data = imaging.encode_image(rgb, encoding, row_padding=row_padding)
    msg = Image()
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding, msg.step = encoding, step
    msg.data = array.array("B", data)
    set_header(msg, stamp, frame_id)
    return msg


def make_compressed(rgb, fmt: str = "jpeg", stamp: float = 1.0, frame_id: str = "camera"):
    """A sensor_msgs/CompressedImage of an RGB array."""
    import array

    from sensor_msgs.msg import CompressedImage

    from lmanet_ros import imaging
    msg = CompressedImage()
    msg.format = fmt
    msg.data = array.array("B", imaging.encode_compressed(rgb, fmt))
    set_header(msg, stamp, frame_id)
    return msg


def set_header(msg, stamp: float, frame_id: str) -> None:
    """Set header stamp (seconds, float; rounded to the nanosecond) and frame_id of a message."""
    msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(seconds_to_ns(stamp))
    msg.header.frame_id = frame_id


def stamp_of(msg) -> float:
    """The header stamp of a message in seconds."""
    return ns_to_seconds(stamp_ns(msg.header))


def pixels_of(msg):
    """An rgb8 or mono8 Image as a numpy array (H, W, 3) or (H, W), honouring step."""
    import numpy as np
    channels = {"rgb8": 3, "mono8": 1}[msg.encoding]
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, :msg.width * channels].reshape(msg.height, msg.width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def camera_status(array_msg, node_fqn: str, camera: str = "image"):
    """The DiagnosticStatus of one camera of a node in a DiagnosticArray (or None), as
    (status, {key: value})."""
    name = f"{node_fqn}: camera {camera}"
    for status in array_msg.status:
        if status.name == name:
            return status, {kv.key: kv.value for kv in status.values}
    return None


class Rig:
    """A started node, a publisher of one camera's input and collectors of its outputs.

    Args:
        ros: the :class:`RosClient`.
        node: the :class:`NodeProcess`.
        outputs: output names to collect (``labels``, ``color``...), under ``camera``.
        camera: '' for the single camera, else the camera name.
        input_qos: QoS of the test's image publisher (best effort depth 10 by default).
        compressed: publish sensor_msgs/CompressedImage on ``image/compressed``.
        input_topic: the input topic relative to the node's namespace, if remapped.
    """

    def __init__(self, ros, node, outputs=("labels",), camera: str = "", input_qos=None,
                 compressed: bool = False, input_topic: str | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CompressedImage, Image
        self.ros, self.node, self.camera = ros, node, camera
        prefix = f"{camera}/" if camera else ""
        self.outputs = {name: ros.subscribe(Image, node.topic(prefix + name)) for name in outputs}
        self.diagnostics = ros.subscribe(DiagnosticArray, "/diagnostics")
        for collector in self.outputs.values():
            ros.wait_for_publishers(collector)
        topic = node.input_topic(input_topic or
                                 prefix + ("image/compressed" if compressed else "image"))
        self.pub = ros.publisher(CompressedImage if compressed else Image, topic, input_qos)

    def send(self, msg, outputs=None, timeout: float = 30.0,
             resend_every: float | None = None) -> dict:
        """Publish ``msg``; return the outputs that carry its stamp (waits for each).

        ``resend_every``: publish the same message again every this many seconds until the
        first output arrives (for the first frame to a node that has just started: a best-effort
        sample written before the node's reader matched this writer is dropped by DDS; a resent
        frame reaches the node as a duplicate stamp, processed without a reset).
        """
        stamp = stamp_of(msg)
        names = list(outputs or self.outputs)
        deadline = time.monotonic() + timeout

        def match(m, s=stamp) -> bool:
            return stamp_of(m) == s
        self.pub.publish(msg)
        try:
            while resend_every is not None:
                try:
                    self.outputs[names[0]].wait_for(
                        1, min(resend_every, max(deadline - time.monotonic(), 0.0)), match)
                    break
                except AssertionError:
                    if time.monotonic() >= deadline:
                        raise AssertionError(f"no {names[0]} output within {timeout:.1f} s, the "
                                             f"frame sent every {resend_every:.1f} s") from None
                    self.pub.publish(msg)
            return {name: self.outputs[name].wait_for(
                1, max(deadline - time.monotonic(), 0.0), match)[0] for name in names}
        except AssertionError as error:
            raise AssertionError(f"{error} (frame stamped {stamp}); the node's log ends:\n"
                                 f"{self.node.log()[-3000:]}") from None

    def status(self, predicate=lambda values: True, timeout: float = 10.0):
        """(status, values) of the newest diagnostics of this camera satisfying ``predicate``."""
        key = self.camera or "image"

        def find():
            for array_msg in reversed(list(self.diagnostics.messages)):
                found = camera_status(array_msg, self.node.fqn, key)
                if found and predicate(found[1]):
                    return found
            return None
        return wait_until(find, timeout, what=f"diagnostics of camera {key} matching")


def resets(values: dict, reason: str | None = None) -> int:
    """Reset count of a camera's diagnostics values: of one reason, or all."""
    if reason is None:
        return int(values.get("resets", 0))
    return int(values.get(f"resets.{reason}", 0))


# ------------------------------------------------------------------------------- node process
_namespace_counter = itertools.count()


class NodeProcess:
    """One ``lmanet_node`` process started like the launch file does."""

    def __init__(self, launch, popen: subprocess.Popen, log_path: Path) -> None:
        self.launch = launch
        self.popen = popen
        self.log_path = log_path
        self.fqn = launch.fully_qualified_name
        self.label_info = None

    def topic(self, relative: str) -> str:
        """A private topic of the node: ``topic('labels')`` -> ``/ns/lmanet/labels``."""
        return f"{self.fqn}/{relative}"

    def input_topic(self, relative: str = "image") -> str:
        """An input topic in the node's namespace."""
        namespace = self.launch.namespace.rstrip("/")
        return f"{namespace}/{relative}"

    def log(self) -> str:
        """Everything the node wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until ``text`` appears in the node's output; return the output."""
        return wait_until(lambda: text in self.log() and self.log(), timeout,
                          what=f"'{text}' in the node's log")

    def interrupt(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Send SIGINT and wait for the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise AssertionError(f"lmanet_node did not exit within {timeout} s of SIGINT:\n"
                                 f"{self.log()[-3000:]}")


def write_params_file(directory: Path, overrides: dict[str, Any] | None) -> str:
    """config/lmanet.yaml with ``overrides`` applied, written under ``directory``."""
    import yaml
    data = yaml.safe_load((ROOT / "config" / "lmanet.yaml").read_text())
    data["/**"]["ros__parameters"].update(overrides or {})
    path = directory / f"params_{next(_namespace_counter)}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def start_node_process(directory: Path, launch_values: dict[str, str] | None = None,
                       params: dict[str, Any] | None = None):
    """Start ``lmanet_node`` from launch-argument values (and parameters in a params file).

    Returns (NodeProcess, command). The node gets a namespace of its own unless one is given.
    """
    from lmanet_ros.node.launch_args import resolve
    values = dict(launch_values or {})
    values.setdefault("namespace", f"/lmanet_test_{os.getpid()}_{next(_namespace_counter)}")
    if params:
        values["params_file"] = write_params_file(directory, params)
    launch = resolve(values)
    command = launch.command(node_executable(launch.executable))
    # a file per process: two nodes of one namespace (a name clash test) wrote into one file
    log_path = (directory / f"node_{launch.namespace.strip('/').replace('/', '_')}_"
                            f"{next(_namespace_counter)}.log")
    log_file = open(log_path, "wb")
    popen = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                             env=child_env(), cwd=str(directory))
    log_file.close()
    return NodeProcess(launch, popen, log_path), command


def wait_ready(ros: RosClient, process: NodeProcess, timeout: float = READY_TIMEOUT):
    """Wait for the latched ~/label_info (the node's readiness); return it."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from lmanet_ros.msg import LabelInfo
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    collector = ros.subscribe(LabelInfo, process.topic("label_info"), qos)
    try:
        deadline = time.monotonic() + timeout
        while not len(collector):
            if not process.alive():
                raise AssertionError(f"lmanet_node exited with {process.popen.returncode} before "
                                     f"it was ready:\n{process.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"lmanet_node not ready after {timeout} s:\n"
                                     f"{process.log()[-3000:]}")
            time.sleep(0.05)
        process.label_info = collector.messages[0]
        return process.label_info
    finally:
        ros.unsubscribe(collector)
