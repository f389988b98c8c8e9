"""The ROS 2 node ``lmanet_node`` and what only it uses (rclpy; no bags, evaluation or tools).

- :mod:`~lmanet_ros.node.node`: :class:`LmanetNode` (the wiring: topics, services, parameters,
  the worker thread) and :func:`main` (the ``lmanet_node`` entry point; ``python -m
  lmanet_ros.node`` runs it too);
- :mod:`~lmanet_ros.node.process`: the process around it: SIGINT/SIGTERM handling, the spin
  thread, a shutdown bounded in time (no rclpy or torch at import);
- :mod:`~lmanet_ros.node.loading`: start-up of the pipeline (checks, weights, classes, warm-up);
- :mod:`~lmanet_ros.node.intake`: the per-camera latest-frame slot / bounded FIFO (no ROS);
- :mod:`~lmanet_ros.node.stats`: per-camera counters and their frozen snapshot (no ROS);
- :mod:`~lmanet_ros.node.diagnostics`, :mod:`~lmanet_ros.node.messages`,
  :mod:`~lmanet_ros.node.qos`: the messages and QoS the node publishes with;
- :mod:`~lmanet_ros.node.throttle`: log-line throttling (no ROS);
- :mod:`~lmanet_ros.node.params`: the parameter table, validation and :class:`Settings`;
- :mod:`~lmanet_ros.node.launch_args`: the launch arguments (no rclpy, no launch), shared by
  ``launch/lmanet.launch.py`` and the process-level tests.

Nothing is imported here at import time, so ``lmanet_ros.node.launch_args`` stays free of rclpy
and torch; :func:`main` (the console script's entry point) imports the node when called.
"""
from __future__ import annotations

__all__ = ["main"]


def main(args: list[str] | None = None) -> int:
    """Run ``lmanet_node`` (:func:`lmanet_ros.node.node.main`); returns the exit code.

    SIGINT and SIGTERM are routed to a clean shutdown before rclpy and torch are imported
    (:func:`lmanet_ros.node.process.install_signal_handlers`)."""
    from lmanet_ros.node.process import install_signal_handlers
    install_signal_handlers()
    from lmanet_ros.node.node import main as run_node
    return run_node(args)
