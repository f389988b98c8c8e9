"""An LmanetNode in the test process: an rclpy Context of its own, a MultiThreadedExecutor spinning
in a thread, and a client node beside it (for tests where a process boundary is not the point and
the node's pipeline is inspected directly)."""
from __future__ import annotations

import itertools
import os
import threading

from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from lmanet_ros.node.launch_args import NODE_NAME
from lmanet_ros.ros_env import spin, teardown
from ros_helpers import Collector, wait_until

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
_namespaces = itertools.count()


class InProcess:
    """An LmanetNode and a client node sharing one executor thread in a Context of their own."""

    def __init__(self, params: dict, remaps: dict[str, str] | None = None) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node

        from lmanet_ros.node.node import LmanetNode

        self.context = Context()
        rclpy.init(context=self.context)
        self.namespace = f"/inproc_{os.getpid()}_{next(_namespaces)}"
        self.node = self.client = self.executor = None
        try:
            self.node = LmanetNode(context=self.context, namespace=self.namespace,
                                   parameter_overrides=[Parameter(name, value=value)
                                                        for name, value in params.items()],
                                   cli_args=["--ros-args"] + [
                                       arg for source, target in (remaps or {}).items()
                                       for arg in ("-r", f"{source}:={target}")])
            self.client = Node("inproc_client", namespace=self.namespace, context=self.context)
            self.executor = MultiThreadedExecutor(num_threads=self.node.executor_threads + 1,
                                                  context=self.context)
            self.executor.add_node(self.node)
            self.executor.add_node(self.client)
        except Exception:
            self.close()
            raise
        self._thread = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self._thread.start()

    @property
    def fqn(self) -> str:
        return f"{self.namespace}/{NODE_NAME}"

    def subscribe(self, msg_type, topic: str, qos=RELIABLE) -> Collector:
        collector = Collector()
        collector.subscription = self.client.create_subscription(msg_type, topic, collector, qos)
        return collector

    def publisher(self, topic: str = "image"):
        """An image publisher matched with the node's input subscription."""
        pub = self.client.create_publisher(Image, topic, RELIABLE)
        wait_until(lambda: pub.get_subscription_count() > 0, 10.0, what="the node's input")
        return pub

    @classmethod
    def labelled(cls, params: dict) -> "InProcess":
        """A node with ``params`` whose labels (``.labels``) and /diagnostics (``.diagnostics``)
        are collected, and a matched image publisher (``.pub``)."""
        from diagnostic_msgs.msg import DiagnosticArray
        rig = cls(params)
        rig.labels = rig.subscribe(Image, f"{rig.fqn}/labels")
        rig.diagnostics = rig.subscribe(DiagnosticArray, "/diagnostics")
        rig.pub = rig.publisher()
        wait_until(lambda: rig.labels.subscription.get_publisher_count() > 0, 10.0,
                   what="the node's labels publisher")
        return rig

    def close(self) -> None:
        if self.node is not None:
            self.node.stop(timeout=5.0)
        teardown([self.node, self.client], executor=self.executor, context=self.context)
