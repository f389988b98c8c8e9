"""Parameter values of the wrong type: an integer for a double is converted (at start from the
command line and a parameter file, at run time from ``ros2 param set``), so is an empty list
(no ROS type); anything else is refused with a reason naming the parameter, the type expected
and the value given.

The conversion and the reasons without a node (:func:`lmanet_ros.node.param_types.coerce`),
then one node started with ``-p memory.max_gap:=2`` and ``overlay_alpha: 1`` in its parameter
file, set with the real ``ros2 param set``. Run-time sets through the SetParameters service, and
their effect, are in test_node_memory.py; failed starts in test_node_startup.py.
"""
from __future__ import annotations

import subprocess

import pytest
from rclpy.parameter import Parameter

from process_helpers import needs_tools, ros2
from ros_helpers import (NodeProcess, child_env, node_executable, wait_ready,
                         write_params_file)
from lmanet_ros.node.launch_args import resolve
from lmanet_ros.node.param_types import coerce
from lmanet_ros.node.params import SPEC_BY_NAME


def _coerced(name: str, value):
    param, reason = coerce(SPEC_BY_NAME[name], Parameter(name, value=value))
    return param.type_, param.value, reason


def test_an_integer_for_a_double_becomes_that_double():
    assert _coerced("memory.max_gap", 2) == (Parameter.Type.DOUBLE, 2.0, None)
    assert _coerced("overlay_alpha", 0) == (Parameter.Type.DOUBLE, 0.0, None)
    assert _coerced("memory.max_gap", 2.5) == (Parameter.Type.DOUBLE, 2.5, None)
    assert _coerced("memory.stride", 3) == (Parameter.Type.INTEGER, 3, None)


def test_an_empty_list_becomes_the_parameters_empty_list():
    assert Parameter("cameras", value=[]).type_ == Parameter.Type.BYTE_ARRAY  # what [] is read as
    assert _coerced("cameras", []) == (Parameter.Type.STRING_ARRAY, [], None)
    assert _coerced("palette", []) == (Parameter.Type.INTEGER_ARRAY, [], None)  # validate: too few


@pytest.mark.parametrize("name, value, reason", [
    ("memory.stride", "abc", "memory.stride must be an integer (got the string 'abc')"),
    ("memory.stride", 2.0, "memory.stride must be an integer (got the double 2.0)"),
    ("memory.max_gap", "long", "memory.max_gap must be a double (got the string 'long')"),
    ("memory.max_gap", True, "memory.max_gap must be a double (got the boolean true)"),
    ("publish.labels", 1, "publish.labels must be a boolean, true or false (got the integer 1)"),
    ("model", 3, "model must be a string (got the integer 3)"),
    ("model", [], "model must be a string (got an empty list)"),
    ("cameras", [1, 2], "cameras must be a list of strings (got the list of integers [1, 2])"),
    ("palette", ["a"] * 9, "palette must be a list of integers (got the list of strings "
                           "['a', 'a', 'a', 'a', 'a', 'a', ...])"),
    ("memory.stride", 0, "memory.stride must be an integer in [1, 100] (got 0)"),
    ("memory.length", 33, "memory.length must be an integer in [0, 32] (got 33)"),
    ("overlay_alpha", 2, "overlay_alpha must be a double in [0.0, 1.0] (got 2.0)"),
    ("overlay_alpha", float("nan"), "overlay_alpha must be a double in [0.0, 1.0] (got nan)"),
])
def test_other_values_are_refused_naming_parameter_type_and_value(name, value, reason):
    assert _coerced(name, value)[2] == reason


# ------------------------------------------------------------------------------ a running node
@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    """A ready node started with an integer for two double parameters: ``-p
    memory.max_gap:=2`` on the command line, ``overlay_alpha: 1`` in its parameter file."""
    directory = tmp_path_factory.mktemp("param_types")
    launch = resolve({"namespace": "/param_types",
                      "params_file": write_params_file(directory, {"overlay_alpha": 1})})
    command = launch.command(node_executable()) + ["-p", "memory.max_gap:=2"]
    log_path = directory / "node.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                                 cwd=str(directory))
    process = NodeProcess(launch, popen, log_path)
    try:
        wait_ready(ros, process)
        yield process
    finally:
        assert process.interrupt() == 0, process.log()[-2000:]


def test_integers_given_at_start_for_doubles_are_doubles(ros, node):
    values = ros.get_parameters(node.fqn, ["memory.max_gap", "overlay_alpha"])
    assert values == {"memory.max_gap": 2.0, "overlay_alpha": 1.0}
    assert all(type(value) is float for value in values.values()), values


@needs_tools
def test_ros2_param_set_converts_integers_and_empty_lists_refuses_in_words(ros, node):
    try:
        assert "Set parameter successful" in ros2("param", "set", node.fqn, "memory.max_gap",
                                                  "3")
        assert "Double value is: 3.0" in ros2("param", "get", node.fqn, "memory.max_gap")
        assert "Set parameter successful" in ros2("param", "set", node.fqn, "cameras", "[]")
        refused = ros2("param", "set", node.fqn, "memory.stride", "abc")
        assert "memory.stride must be an integer (got the string 'abc')" in refused, refused
        assert "Integer value is: 1" in ros2("param", "get", node.fqn, "memory.stride")
    finally:
        ros2("daemon", "stop")
    node.wait_log("parameter change refused: memory.stride must be an integer")
