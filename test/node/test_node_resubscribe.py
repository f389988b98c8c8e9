"""lmanet_node re-creates its input subscription at run time (an ``input.*`` parameter change)
while frames stream in, and keeps spinning.

rclpy's executor can raise ``InvalidHandle`` ("cannot use Destroyable because destruction was
requested") when a subscription with event handlers is destroyed from one thread while another
builds the wait set (ros2/rclpy#1142, #1206, open). Uncaught, it ends ``spin()``: the node lives
on deaf, its services unanswered. The node spins through it (lmanet_ros.node.process).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sensor_msgs.msg import Image

from lmanet_ros.ros_env import spin
from ros_helpers import Rig, make_image

pytestmark = pytest.mark.ros

#: Input parameter changes, each re-creating the subscription while frames flood in.
CHANGES = 40
#: Subscriptions created and destroyed by the bare-rclpy test.
CYCLES = 150


def test_spin_survives_subscriptions_destroyed_while_it_waits():
    """Bare rclpy, one context: a publisher floods a topic while the main thread creates and
    destroys subscriptions with QoS event callbacks; ``executor.spin()`` alone dies of this
    within a few cycles here, :func:`lmanet_ros.ros_env.spin` keeps spinning."""
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import MultiThreadedExecutor
    from std_msgs.msg import String

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("resubscriber", context=context)
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(node)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["retries"] = spin(executor)
        except BaseException as exc:  # what ended the spin, for the assertion below
            outcome["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    publisher = node.create_publisher(String, "flood", 10)
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            publisher.publish(String(data="x" * 1000))
            time.sleep(0.0005)
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    received = []
    try:
        for _ in range(CYCLES):
            events = SubscriptionEventCallbacks(incompatible_qos=lambda event: None)
            subscription = node.create_subscription(String, "flood", received.append, 100,
                                                    event_callbacks=events)
            time.sleep(0.01)
            node.destroy_subscription(subscription)
            assert thread.is_alive(), f"spin ended: {outcome.get('error')!r}"
        before = len(received)
        node.create_subscription(String, "flood", received.append, 100)
        deadline = time.monotonic() + 10.0
        while len(received) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(received) > before, "nothing received after the churn: the executor is deaf"
    finally:
        stop.set()
        flooder.join(5.0)
        executor.shutdown(timeout_sec=2.0)
        thread.join(5.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert "error" not in outcome, repr(outcome.get("error"))
    print(f"{CYCLES} subscriptions destroyed while spinning: {outcome['retries']} stale-handle "
          f"retries")


def test_input_resubscribed_under_a_flood_keeps_the_node_answering(ros, node_factory):
    node = node_factory(params={"input_height": 32, "input_width": 64})
    image = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    flood_pub = ros.publisher(Image, node.input_topic("image"))
    stop = threading.Event()

    def flood() -> None:  # ~500 Hz: the executor wakes for a sample at nearly every moment
        msg = make_image(image, stamp=1.0)
        while not stop.is_set():
            flood_pub.publish(msg)
            time.sleep(0.002)
    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        for index in range(CHANGES):
            result = ros.set_parameters(node.fqn, {"input.depth": 1 + index % 2})[0]
            assert result.successful, result.reason
    finally:
        stop.set()
        thread.join(5.0)
        ros.node.destroy_publisher(flood_pub)
    log = node.log()
    assert "InvalidHandle" not in log and "Traceback" not in log, log[-3000:]
    # still spinning: a new frame is labelled and the parameter services answer
    rig = Rig(ros, node)
    rig.send(make_image(image, stamp=100.0), timeout=30.0, resend_every=2.0)
    assert ros.get_parameters(node.fqn, ["input.depth"])["input.depth"] == 1 + (CHANGES - 1) % 2
    assert node.alive()
