"""Shared fixtures: a DDS domain of this test session's own, kept on this host, an rclpy context,
a client node spinning in the background, and ``lmanet_node`` processes started as
``launch/lmanet.launch.py`` starts them. The helpers they use are in ``ros_helpers.py``.

The environment is set at import, before any test module imports rclpy, and is inherited by every
child process (:func:`lmanet_ros.ros_env.isolate`): ``ROS_DOMAIN_ID`` (one that no other test
session on this machine holds, claimed with a lock file; ``LMANET_TEST_DOMAIN_ID`` forces one) and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (``ROS_LOCALHOST_ONLY=1`` on Humble). Nothing here
imports rclpy at module level, so tests without ROS do not pay for it.

``LMANET_CACHE`` (the graph cache, :mod:`lmanet_ros.runtime.cache`) is a folder of this session's
own unless set: a node started with a checkpoint runs ``backend: auto`` (onnxruntime) and exports
its graphs there, not into the user's ``~/.cache``; removed at the end.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from lmanet_ros.ros_env import isolate
from ros_helpers import (NodeProcess, RosClient, child_env,  # noqa: F401 (child_env re-exported)
                         start_node_process, wait_ready, wait_until)

_forced = os.environ.get("LMANET_TEST_DOMAIN_ID")
#: The claimed domain's open lock file: the domain stays ours while the session lives.
_domain_lock = isolate(domain_id=int(_forced) if _forced else None)
os.environ.setdefault("PYTHONUNBUFFERED", "1")
#: The session's graph cache when LMANET_CACHE was not set (None: it was).
_graph_cache = None if os.environ.get("LMANET_CACHE") else tempfile.mkdtemp(
    prefix="lmanet_test_graphs_")
if _graph_cache:
    os.environ["LMANET_CACHE"] = _graph_cache


def pytest_unconfigure(config) -> None:
    if _graph_cache:
        shutil.rmtree(_graph_cache, ignore_errors=True)


@pytest.fixture(scope="module")
def ros_context():
    """An rclpy Context of its own for a test module: init before, shutdown after."""
    import rclpy
    from rclpy.context import Context
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def ros(ros_context):
    """A :class:`RosClient` spinning for the whole module."""
    client = RosClient(ros_context)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def node_factory(ros, tmp_path_factory):
    """Start ready ``lmanet_node`` processes; at teardown each gets SIGINT and must exit 0.

    Call it as ``node_factory(params={...}, launch={...})``: ``params`` are written into a copy
    of config/lmanet.yaml passed as the ``params_file`` launch argument, ``launch`` holds other
    launch-argument values (image, cameras, namespace, checkpoint, device, ...).
    """
    directory = tmp_path_factory.mktemp("lmanet_node")
    started: list[NodeProcess] = []

    def factory(params: dict[str, Any] | None = None, launch: dict[str, str] | None = None,
                ready: bool = True) -> NodeProcess:
        process, _ = start_node_process(directory, launch, params)
        started.append(process)
        if ready:
            wait_ready(ros, process)
        return process

    yield factory
    failures = []
    for process in started:
        if process.popen.poll() is not None and getattr(process, "expected_exit", False):
            continue
        code = process.interrupt()
        if code != 0:
            failures.append(f"{process.fqn} exited with {code} after SIGINT:\n"
                            f"{process.log()[-2000:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A scratch directory for one test."""
    return tmp_path
