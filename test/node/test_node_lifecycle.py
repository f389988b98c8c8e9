"""lmanet_lifecycle_node, the managed node, driven through its lifecycle services over real DDS
(``<node>/change_state`` and ``<node>/get_state``, as a lifecycle manager does): unconfigured ->
configure (model loaded, nothing processed while inactive) -> activate (labels with the input
header copied, label_info published) -> deactivate (no more labels) -> cleanup (model released)
-> configure and activate again -> shutdown; a bad checkpoint makes configure fail while the node
stays alive; the state in /diagnostics. ``ros2 lifecycle`` is tested where that verb is installed
(the ros2 command line of ../shared/wheels has none). In-process: cleanup releases the pipeline.

Random weights and a 32x64 network input keep every configure and inference short.
"""
from __future__ import annotations

import gc
import subprocess
import time
import weakref

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from process_helpers import ros2, ros2_executable
from ros_helpers import READY_TIMEOUT, make_image, stamp_of, wait_until

pytestmark = pytest.mark.ros

SMALL = {"input_height": 32, "input_width": 64, "diagnostics_period": 0.5}
MANAGED = {"managed": "true", "device": "cpu"}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
#: Seconds during which a node that must not publish is watched.
QUIET_S = 1.5


def _has_lifecycle_verb() -> bool:
    """Whether ``ros2 lifecycle`` is installed."""
    executable = ros2_executable()
    if executable is None:
        return False
    return subprocess.run([executable, "lifecycle", "--help"], capture_output=True,
                          timeout=60).returncode == 0


def transition(ros, fqn: str, transition_id: int) -> bool:
    """Ask ``fqn`` for a transition through its change_state service; whether it succeeded."""
    request = ChangeState.Request(transition=Transition(id=transition_id))
    response, _ = ros.call(ChangeState, f"{fqn}/change_state", request, timeout=READY_TIMEOUT)
    return response.success


def state(ros, fqn: str, timeout: float = 10.0) -> str:
    """The label of ``fqn``'s current lifecycle state (its get_state service)."""
    response, _ = ros.call(GetState, f"{fqn}/get_state", timeout=timeout)
    return response.current_state.label


def model_values(ros, fqn: str, predicate, timeout: float = 10.0) -> dict:
    """The values of the newest model status of ``fqn`` on /diagnostics matching ``predicate``."""
    diagnostics = ros.subscribe(DiagnosticArray, "/diagnostics")

    def find():
        for array_msg in reversed(list(diagnostics.messages)):
            for status in array_msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name == f"{fqn}: model" and predicate(values):
                    return dict(values, message=status.message)
        return None
    try:
        return wait_until(find, timeout, what=f"the model status of {fqn}")
    finally:
        ros.unsubscribe(diagnostics)


class Camera:
    """A reliable publisher on a node's input and the labels it publishes."""

    def __init__(self, ros, node) -> None:
        self.ros = ros
        self.pub = ros.publisher(Image, node.input_topic(), RELIABLE, subscribers=0)
        self.labels = ros.subscribe(Image, node.topic("labels"))
        self.image = np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)

    def send(self, stamp: float, frame_id: str = "lifecycle_cam") -> None:
        self.pub.publish(make_image(self.image, stamp=stamp, frame_id=frame_id))

    def segmented(self, stamp: float) -> Image:
        """Publish a frame stamped ``stamp`` (again each second) until its labels arrive."""
        wait_until(lambda: self.pub.get_subscription_count() > 0, 20.0, what="the node's input")

        def labelled():
            self.send(stamp)
            return next((m for m in self.labels.messages if stamp_of(m) == stamp), None)
        return wait_until(labelled, 30.0, interval=1.0, what=f"labels of frame {stamp}")

    def assert_quiet(self, stamp: float) -> None:
        """Frames sent for :data:`QUIET_S` seconds get no labels; nobody takes the input."""
        wait_until(lambda: self.pub.get_subscription_count() == 0, 10.0,
                   what="no subscription on the node's input")
        before = len(self.labels)
        deadline = time.monotonic() + QUIET_S
        while time.monotonic() < deadline:
            self.send(stamp)
            time.sleep(0.1)
        assert len(self.labels) == before, "labels published by a node that is not active"


@pytest.fixture(scope="module")
def bad_node(node_factory, tmp_path_factory):
    """A managed node whose checkpoint is no checkpoint (started first: it runs concurrently)."""
    corrupt = tmp_path_factory.mktemp("lifecycle") / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint" * 100)
    return node_factory(params=SMALL, launch=dict(MANAGED, checkpoint=str(corrupt)), ready=False)


@pytest.fixture(scope="module")
def node(node_factory, bad_node):
    """A managed node with random weights, not configured."""
    return node_factory(params=SMALL, launch=MANAGED, ready=False)


def test_transitions_through_the_lifecycle_services(ros, node):
    from lmanet_ros.msg import LabelInfo
    fqn = node.fqn
    assert state(ros, fqn, timeout=60.0) == "unconfigured"
    label_info = ros.subscribe(LabelInfo, node.topic("label_info"), LATCHED)
    camera = Camera(ros, node)

    assert transition(ros, fqn, Transition.TRANSITION_CONFIGURE)
    assert state(ros, fqn) == "inactive"
    assert "warmed up" in node.log()
    ros.wait_for_publishers(camera.labels)  # the outputs exist, silent while inactive
    assert "not processing" in model_values(
        ros, fqn, lambda v: v.get("lifecycle_state") == "inactive")["message"]
    camera.assert_quiet(stamp=1.0)
    assert not len(label_info)

    assert transition(ros, fqn, Transition.TRANSITION_ACTIVATE)
    assert state(ros, fqn) == "active"
    label_info.wait_for(1, timeout=10.0)
    msg = camera.segmented(stamp=2.5)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (2, 500_000_000)
    assert (msg.header.frame_id, msg.encoding, msg.height, msg.width) == \
        ("lifecycle_cam", "mono8", 48, 96)
    model_values(ros, fqn, lambda v: v.get("lifecycle_state") == "active")

    assert transition(ros, fqn, Transition.TRANSITION_DEACTIVATE)
    assert state(ros, fqn) == "inactive"
    camera.assert_quiet(stamp=3.0)

    assert transition(ros, fqn, Transition.TRANSITION_CLEANUP)
    assert state(ros, fqn) == "unconfigured"
    node.wait_log("the model is released")
    wait_until(lambda: camera.labels.subscription.get_publisher_count() == 0, 10.0,
               what="the labels publisher to be destroyed by cleanup")

    assert transition(ros, fqn, Transition.TRANSITION_CONFIGURE)
    assert transition(ros, fqn, Transition.TRANSITION_ACTIVATE)
    assert stamp_of(camera.segmented(stamp=4.0)) == 4.0

    assert transition(ros, fqn, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert state(ros, fqn) == "finalized"
    assert node.alive()
    ros.unsubscribe(label_info)
    ros.unsubscribe(camera.labels)


def test_a_bad_checkpoint_fails_configure_and_the_node_lives_on(ros, bad_node):
    fqn = bad_node.fqn
    assert state(ros, fqn, timeout=60.0) == "unconfigured"
    assert not transition(ros, fqn, Transition.TRANSITION_CONFIGURE)
    assert state(ros, fqn) == "unconfigured"
    lines = [line for line in bad_node.log().splitlines() if "configure failed" in line]
    assert len(lines) == 1 and "corrupt.pth" in lines[0], bad_node.log()[-3000:]
    assert "Traceback" not in bad_node.log()
    assert not transition(ros, fqn, Transition.TRANSITION_CONFIGURE)  # again: still alive
    assert bad_node.alive()


@pytest.mark.skipif(not _has_lifecycle_verb(), reason="`ros2 lifecycle` is not installed (the "
                    "ros2 command line of ../shared/wheels has no ros2lifecycle)")
def test_ros2_lifecycle_set_and_get(ros, node_factory):
    fqn = node_factory(params=SMALL, launch=MANAGED, ready=False).fqn
    assert "unconfigured" in ros2("lifecycle", "get", fqn, timeout=60.0)
    assert "Transitioning successful" in ros2("lifecycle", "set", fqn, "configure",
                                              timeout=READY_TIMEOUT)
    assert "inactive" in ros2("lifecycle", "get", fqn)


def test_cleanup_releases_the_pipeline_in_process():
    """The pipeline (and its model) is garbage once cleanup ran: no reference is left behind."""
    import rclpy
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from lmanet_ros.node.lifecycle import LmanetLifecycleNode
    from lmanet_ros.ros_env import teardown

    context = Context()
    rclpy.init(context=context)
    node = None
    try:
        node = LmanetLifecycleNode(context=context, namespace="/lifecycle_inproc",
                                   parameter_overrides=[Parameter(name, value=value)
                                                        for name, value in SMALL.items()])
        assert node.pipeline is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        pipeline = weakref.ref(node.pipeline)
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert node.pipeline is None and pipeline() is None
    finally:
        teardown([node], context=context)
