"""The node's place in the ROS graph: outputs remapped onto its own inputs, other nodes of its name.

- :func:`feedback`: an output topic (``~/labels``, ``~/color``, ..., ``~/label_info``,
  ``/diagnostics``) that resolves, after namespaces and remaps, to one of the node's input topics
  (``image``, ``image/compressed``, ``<camera>/image``...): the node would take its own output as
  input, frame after frame. :func:`watch` refuses it at start-up (:class:`StartupError`, one
  line: the process exits with code 1) before the model is loaded.
- :class:`NameWatch`: another node with the node's fully qualified name in the graph (at start-up
  and whenever one appears later) gets a warning that names it: ``ros2 param`` and ``ros2
  service`` reach either of them, ``ros2 node info`` mixes them, and their outputs share topics.
  Both keep working; the watch says so again when the count grows, and when the name is the
  node's alone again.

The topic names are those of :class:`~lmanet_ros.node.ports.CameraPort`; names are resolved by
rcl (:meth:`rclpy.node.Node.resolve_topic_name`), with the node's remaps.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from lmanet_ros.node.loading import StartupError
from lmanet_ros.node.ports import OUTPUTS, CameraPort

__all__ = ["NAME_CHECK_S", "NODE_OUTPUTS", "NameWatch", "feedback", "watch"]

#: Seconds between two looks at the graph for other nodes of the node's name.
NAME_CHECK_S = 2.0
#: Topics the node publishes once, whatever its cameras (relative names, as the node creates them).
NODE_OUTPUTS = ("~/label_info", "~/vision_label_info", "/diagnostics")


def _topics(cameras: Iterable[str]) -> tuple[list[str], list[str]]:
    """(input topics, output topics) of a node serving ``cameras`` ([] = the single camera), as
    relative names: both input transports, every image output (enabled or not: a
    ``publish.<output>`` parameter may turn one on later) and :data:`NODE_OUTPUTS`."""
    ports = [CameraPort(name=name, key=name or "image") for name in list(cameras) or [""]]
    inputs = [topic for port in ports
              for topic in (port.input_topic, f"{port.input_topic}/compressed")]
    outputs = [port.output_topic(output) for port in ports for output in OUTPUTS]
    return inputs, outputs + list(NODE_OUTPUTS)


def feedback(resolve: Callable[[str], str], cameras: Iterable[str]) -> str | None:
    """Why the outputs of a node serving ``cameras`` would reach its own inputs; None if none does.

    Args:
        resolve: relative topic name -> fully qualified name after remaps
            (:meth:`rclpy.node.Node.resolve_topic_name` of the node).
        cameras: the ``cameras`` parameter ([] = the single camera on ``image``).
    """
    inputs, outputs = _topics(cameras)
    resolved_inputs = {resolve(topic): topic for topic in inputs}
    for output in outputs:
        topic = resolve(output)
        if topic in resolved_inputs:
            return (f"output {output} and input {resolved_inputs[topic]} both resolve to "
                    f"{topic}: the node would segment its own output; remap one of them to "
                    f"another topic")
    return None


class NameWatch:
    """Warns while other nodes of ``node``'s fully qualified name are in the graph (see the
    module docstring); looks at once, then every ``period`` seconds of steady time (a node on
    simulated time keeps looking while /clock stands still)."""

    def __init__(self, node: Node, period: float = NAME_CHECK_S) -> None:
        self._node = node
        self.others = 0
        self.check()
        self.timer = node.create_timer(period, self.check,
                                       callback_group=MutuallyExclusiveCallbackGroup(),
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))

    def check(self) -> int:
        """Count the other nodes of this name in the graph, log a change; the count."""
        node = self._node
        own = (node.get_name(), node.get_namespace())
        others = max(0, sum(1 for entry in node.get_node_names_and_namespaces()
                            if tuple(entry) == own) - 1)
        name = node.get_fully_qualified_name()
        if others > self.others:
            count = "another node runs" if others == 1 else f"{others} other nodes run"
            node.get_logger().warning(
                f"{count} in the ROS graph under this node's name, {name}: `ros2 param` and "
                f"`ros2 service` reach either of them and their outputs share topics; both keep "
                f"working. Give each its own name or namespace (-r __node:=NAME, -r "
                f"__ns:=/NAMESPACE; launch arguments node_name, namespace)")
        elif others == 0 < self.others:
            node.get_logger().info(f"no other node named {name} in the ROS graph any more")
        self.others = others
        return others


def watch(node: Any) -> NameWatch:
    """Refuse outputs remapped onto the inputs, then watch for other nodes of the node's name.

    Call it once the parameters are declared (``cameras`` is read), before the model is loaded.

    Raises:
        StartupError: an output resolves to an input topic (:func:`feedback`, one line).
    """
    reason = feedback(node.resolve_topic_name, node.get_parameter("cameras").value or [])
    if reason:
        raise StartupError(f"topics: {reason}")
    return NameWatch(node)
