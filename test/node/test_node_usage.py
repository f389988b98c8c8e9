"""``lmanet_node --help`` / ``-h`` (and ``lmanet_lifecycle_node``'s): the usage, the ROS
arguments, every parameter of the table; exit 0 at once, without ROS or torch."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ros_helpers import child_env, node_executable
from lmanet_ros.node.params import SPECS
from lmanet_ros.node.usage import asked

#: Seconds the help may take, process start included, on a loaded test machine.
HELP_WITHIN_S = 8.0
COLUMNS = 100


@pytest.mark.parametrize("executable, flag", [("lmanet_node", "--help"), ("lmanet_node", "-h"),
                                              ("lmanet_lifecycle_node", "--help")])
def test_help_prints_the_usage_and_every_parameter(executable, flag):
    start = time.monotonic()
    proc = subprocess.run([node_executable(executable), flag], capture_output=True, text=True,
                          env=child_env(COLUMNS=str(COLUMNS)), timeout=60)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert out.startswith(f"usage: {executable} [-h]\n"), out[:200]
    for words in ("--ros-args", "-p NAME:=VALUE", "--params-file FILE", "image:=/camera/image_raw",
                  "~/reset_memory", "~/labels"):
        assert words in out, words
    for spec in SPECS:
        assert f"\n  {spec.name} (" in out, spec.name
    assert "  memory.max_gap (double, default 1.0, 0.0..3600.0)\n" in out
    assert "  model (string, default 'lmanet_erfnet', read-only)\n" in out
    assert "  input.transport (string, default 'raw', one of raw | compressed)\n" in out
    assert max(len(line) for line in out.splitlines()) <= COLUMNS
    assert ("lifecycle" in out) == (executable == "lmanet_lifecycle_node")
    assert seconds < HELP_WITHIN_S, f"{seconds:.1f} s"
    print(f"{executable} {flag}: {seconds:.2f} s, {len(out.splitlines())} lines")


PROBE = """
import json, sys
from lmanet_ros.node import main
code = main(["lmanet_node", "--help"])
import rclpy
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "ros_up": rclpy.ok()}))
"""


def test_help_starts_no_node_and_imports_no_torch():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=child_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "torch": False, "ros_up": False}, report


@pytest.mark.parametrize("argv, wanted", [
    (["lmanet_node", "-h"], True),
    (["--help", "--ros-args", "-p", "x:=1"], True),
    (["--ros-args", "-p", "x:=1", "--", "--help"], True),
    (["--ros-args", "--help"], False),          # ROS's own
    (["--ros-args", "-p", "memory.max_gap:=2"], False),
    ([], False),
])
def test_only_help_outside_the_ros_arguments_counts(argv, wanted):
    assert asked(argv) is wanted
