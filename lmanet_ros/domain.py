"""A ROS_DOMAIN_ID of one's own on this host, for tests, benchmarks and demos (no ROS import).

Parallel runs on one machine (test sessions, benchmarks, CI) must not see each other's nodes:
each claims a domain in 1..101 by holding an exclusive lock file for as long as it runs.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

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
