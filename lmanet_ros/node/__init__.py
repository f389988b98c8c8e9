"""The ROS 2 node ``lmanet_node`` and what only it uses (rclpy; no bags, evaluation or tools).

- :mod:`~lmanet_ros.node.node`: :class:`LmanetNode` (the wiring: topics, services, parameters,
  the worker thread) and :func:`main` (the ``lmanet_node`` entry point; ``python -m
  lmanet_ros.node`` runs it too);
- :mod:`~lmanet_ros.node.lifecycle`: :class:`LmanetLifecycleNode`, the managed (lifecycle)
  variant, and the ``lmanet_lifecycle_node`` entry point (:func:`lifecycle_main`);
- :mod:`~lmanet_ros.node.process`: the process around it: SIGINT/SIGTERM handling, the spin
  thread, a shutdown bounded in time (no rclpy or torch at import);
- :mod:`~lmanet_ros.node.loading`: start-up of the pipeline (checks, weights, classes, warm-up);
- :mod:`~lmanet_ros.node.intake`: the per-camera latest-frame slot / bounded FIFO (no ROS);
- :mod:`~lmanet_ros.node.stats`: per-camera counters and their frozen snapshot (no ROS);
- :mod:`~lmanet_ros.node.diagnostics`, :mod:`~lmanet_ros.node.messages`,
  :mod:`~lmanet_ros.node.qos`: the messages and QoS the node publishes with;
- :mod:`~lmanet_ros.node.throttle`: log-line throttling (no ROS);
- :mod:`~lmanet_ros.node.events`: the throttled log lines and counters of frame events (bad
  input, a failed frame, CUDA out of memory, resets and reset requests);
- :mod:`~lmanet_ros.node.graph`: the ROS graph around the node: outputs remapped onto its own
  inputs refused, another node of the same name warned about;
- :mod:`~lmanet_ros.node.params`: the parameter table, validation and :class:`Settings`;
- :mod:`~lmanet_ros.node.param_types`: values of the wrong type or out of range: an integer
  for a double converted, the rest refused in words;
- :mod:`~lmanet_ros.node.usage`: ``--help`` (no rclpy initialisation, no torch);
- :mod:`~lmanet_ros.node.ros_args`: the ROS arguments and parameter files checked before
  rclpy sees them (one line and exit 2 for a bad one);
- :mod:`~lmanet_ros.node.launch_args`: the launch arguments (no rclpy, no launch), shared by
  ``launch/lmanet.launch.py`` and the process-level tests.

Nothing is imported here at import time, so ``lmanet_ros.node.launch_args`` stays free of rclpy
and torch; :func:`main` (the console script's entry point) imports the node when called, after
answering ``-h``/``--help`` (:mod:`~lmanet_ros.node.usage`) without it.
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["lifecycle_main", "main"]


def _run(module: str, executable: str, args: list[str] | None) -> int:
    """Print the help of ``executable`` if ``args`` (default: the command line) ask for it, or
    run ``module``'s ``main``. The caller has routed SIGINT and SIGTERM already
    (:func:`_shield`)."""
    from lmanet_ros.node import usage
    if usage.asked(sys.argv[1:] if args is None else args):
        print(usage.text(executable), end="")
        return 0
    return importlib.import_module(module).main(args)


def _shield() -> None:
    """Route SIGINT and SIGTERM to a clean shutdown before anything else is imported
    (:func:`lmanet_ros.node.process.install_signal_handlers`): a signal during the imports
    then ends the process with code 0 instead of a ``KeyboardInterrupt`` traceback."""
    from lmanet_ros.node.process import install_signal_handlers
    install_signal_handlers()


def main(args: list[str] | None = None) -> int:
    """Run ``lmanet_node`` (:func:`lmanet_ros.node.node.main`); returns the exit code."""
    _shield()
    from lmanet_ros.node.launch_args import EXECUTABLE
    return _run("lmanet_ros.node.node", EXECUTABLE, args)


def lifecycle_main(args: list[str] | None = None) -> int:
    """Run ``lmanet_lifecycle_node``, the managed variant
    (:func:`lmanet_ros.node.lifecycle.main`); returns the exit code."""
    _shield()
    from lmanet_ros.node.launch_args import LIFECYCLE_EXECUTABLE
    return _run("lmanet_ros.node.lifecycle", LIFECYCLE_EXECUTABLE, args)
