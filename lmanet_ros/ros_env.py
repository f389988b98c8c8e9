"""The ROS side of running things on one host: a domain of one's own, DDS kept local, an
executor spun through rclpy's stale-handle race, teardown.

Parallel runs on one machine (test sessions, benchmarks, CI, demos) must not see each other's
nodes: each claims a ROS_DOMAIN_ID in 1..101 by holding an exclusive lock file for as long as it
runs, and keeps discovery on localhost. Nothing here imports rclpy at module level, so the
environment can be set before rclpy (and its middleware) is loaded.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterable, MutableMapping
from pathlib import Path
import time
from typing import IO, Any

__all__ = ["LOCK_DIR", "claim_domain_id", "isolate", "teardown"]

LOCK_DIR = Path(tempfile.gettempdir()) / "lmanet_ros_test_domains"


def claim_domain_id() -> tuple[int, IO[str]]:
    """Return (domain id in 1..101 that no other holder on this host has, its open lock file).

    The domain stays claimed while the returned file stays open (keep a reference to it).

    Raises:
        RuntimeError: all 101 domains are held.
    """
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = os.getpid() % 101
    for offset in range(101):
        candidate = (start + offset) % 101 + 1
        handle = open(LOCK_DIR / f"{candidate}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return candidate, handle
    raise RuntimeError(f"no free ROS_DOMAIN_ID in 1..101 (lock files in {LOCK_DIR})")


def isolate(env: MutableMapping[str, str] | None = None, *, domain_id: int | None = None,
            keep_domain: bool = False) -> IO[str] | None:
    """Keep DDS traffic of ``env`` (default ``os.environ``) on this host, in a domain of its own.

    Sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (and ``ROS_LOCALHOST_ONLY=1`` on Humble),
    plain log colours, and ``ROS_DOMAIN_ID``: ``domain_id`` when given, the one already set when
    ``keep_domain`` and one is set, else a freshly claimed one. Call it before importing rclpy.

    Returns:
        the lock file of a claimed domain (keep it open while the run lasts), else None.
    """
    env = os.environ if env is None else env
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if env.get("ROS_DISTRO") == "humble":
        env["ROS_LOCALHOST_ONLY"] = "1"
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    lock = None
    if domain_id is None and not (keep_domain and env.get("ROS_DOMAIN_ID")):
        domain_id, lock = claim_domain_id()
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return lock


#: More stale-handle retries than this within one second are a fault, not the race: re-raised.
STALE_HANDLE_RETRIES_PER_S = 100


def spin(executor: Any) -> int:
    """``executor.spin()`` until it or its context shuts down, through rclpy's stale-handle race.

    rclpy raises ``InvalidHandle`` ("cannot use Destroyable because destruction was requested")
    out of ``spin()`` when an entity with event handlers (a subscription or publisher with QoS
    event callbacks) is destroyed in one thread while the spinning thread builds its wait set
    (ros2/rclpy#1142, #1206, open). Uncaught, the executor stops and the node lives on deaf.
    That wait set is abandoned and rebuilt from the entities that remain, so spinning again is
    safe.

    Returns:
        the number of stale-handle retries.

    Raises:
        InvalidHandle: more than :data:`STALE_HANDLE_RETRIES_PER_S` retries within one second.
    """
    from rclpy.exceptions import InvalidHandle
    retries, recent = 0, []
    while True:
        try:
            executor.spin()
            return retries
        except InvalidHandle:
            now = time.monotonic()
            recent = [t for t in recent if now - t < 1.0] + [now]
            if len(recent) > STALE_HANDLE_RETRIES_PER_S:
                raise
            retries += 1


def teardown(nodes: Iterable[Any] = (), *, executor: Any = None, context: Any = None) -> None:
    """Shut down ``executor``, destroy ``nodes`` (None entries skipped), shut down ``context``
    (None: the default one); each step runs even when an earlier one raised."""
    import rclpy

    try:
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
    finally:
        try:
            for node in nodes:
                if node is not None:
                    node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)
