"""Process-level faults of ``lmanet_node`` (issue 17): a malformed command line or parameter file,
a parameter with an empty name, an output remapped onto the node's own input, a second node of
the same name.

- :func:`lmanet_ros.node.ros_args.check` against rcl itself: for every case, it refuses what
  ``rclpy.init`` refuses, and the few broken files rcl takes without a word (empty, a scalar,
  binary, nested lists), nothing else;
- the real executable: each malformed argument or file prints exactly one line on stderr that
  names it, nothing on stdout, exit code 2; an output remapped onto an input: one line, exit 1,
  before the model is loaded;
- a running node refuses SetParameters of an empty, blank or undeclared name with the reason
  (rclpy itself sets a parameter named '' without a word);
- two nodes of one name on one domain: each logs a warning naming it, both keep labelling frames;
  when one ends, the other says the name is its own again and keeps labelling.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from process_helpers import run_all
from ros_helpers import (READY_TIMEOUT, child_env, make_image, node_executable, stamp_of,
                         wait_until)
from lmanet_ros.node.ros_args import RosArgumentError, check

pytestmark = pytest.mark.ros

#: A parameter file of rcl's shape (node name, ros__parameters, values).
GOOD_FILE = "/**:\n  ros__parameters:\n    memory.max_gap: 2.0\n    cameras: [front, rear]\n"
#: Parameter files: name -> (content, words of our reason; None: valid).
FILES: dict[str, tuple[bytes | None, str | None]] = {
    "good.yaml": (GOOD_FILE.encode(), None),
    "nested.yaml": (b"/robot1:\n  lmanet:\n    ros__parameters:\n      memory:\n"
                    b"        stride: 2\n", None),
    "empty_params.yaml": (b"lmanet:\n  ros__parameters: {}\n", None),
    "not_yaml.yaml": (b"/**:\n  ros__parameters:\n    cameras: [front\n", "is not YAML"),
    "two_documents.yaml": (GOOD_FILE.encode() + b"---\nx: 1\n", "is not YAML"),
    "list.yaml": (b"- memory.max_gap: 2.0\n", "holds a list, not node names"),
    "no_ros_parameters.yaml": (b"lmanet:\n  memory.max_gap: 2.0\n",
                               "'memory.max_gap' (line 2) is not under ros__parameters"),
    "top_ros_parameters.yaml": (b"ros__parameters:\n  memory.max_gap: 2.0\n",
                                "has no node name above it"),
    "scalar_parameters.yaml": (b"lmanet:\n  ros__parameters: 5\n",
                               "ros__parameters of 'lmanet' (line 2) holds no NAME: VALUE"),
    "empty_name.yaml": (b"/**:\n  ros__parameters:\n    '': 5\n",
                        "the key at line 3 is not a parameter name"),
    "no_value.yaml": (b"/**:\n  ros__parameters:\n    memory.max_gap:\n",
                      "parameter 'memory.max_gap' (line 3) has no value"),
    "mixed_list.yaml": (b"/**:\n  ros__parameters:\n    palette: [1, 2.5]\n",
                        "mixes double and integer values"),
    # rcl takes these without a word (no parameters at all, or a list flattened)
    "empty.yaml": (b"", "is empty"),
    "scalar.yaml": (b"lmanet\n", "holds a single value, not node names"),
    "binary.yaml": (b"\xff\xfe\x00\x01\x02\x03", "holds a single value, not node names"),
    "no_node_parameters.yaml": (b"/**: {}\n", "'/**' (line 1) holds no ros__parameters"),
    "nested_list.yaml": (b"/**:\n  ros__parameters:\n    palette: [[1, 2, 3]]\n",
                         "is a list of lists or mappings"),
}
#: Files rcl reads without an error although they are broken (ros_args refuses them).
RCL_TAKES = {"empty.yaml", "scalar.yaml", "binary.yaml", "no_node_parameters.yaml",
             "nested_list.yaml"}
#: ROS arguments (after --ros-args) -> words of our reason (None: valid).
ARGUMENTS: dict[tuple[str, ...], str | None] = {
    ("-p", "memory.max_gap:=2.0"): None,
    ("-p", "lmanet:cameras:=[front, rear]"): None,
    ("-p", "model:=~"): None,
    ("-p", "cameras:=[]"): None,
    ("-p", "qos_overrides./image.subscription.reliability:=reliable"): None,
    ("-r", "image:=/camera/image_raw"): None,
    ("-r", "rostopic://image:=/cam"): None,
    ("-r", "rosservice://~/reset_memory:=/reset"): None,
    ("-r", "~/labels:=/seg/labels"): None,
    ("-r", "__ns:=/robot1", "-r", "__node:=seg"): None,
    ("--log-level", "lmanet:=debug"): None,
    ("-p", "a:=1", "--", "-p", "b"): None,  # after '--': not ROS arguments
    ("-p", "memory.max_gap"): "-p memory.max_gap: no ':=' (expected -p NAME:=VALUE)",
    ("-p",): "-p ends the ROS arguments: expected -p NAME:=VALUE",
    ("-p", ":=5"): "-p :=5: the parameter name is empty",
    ("-p", "memory.max_gap:="): "the value after ':=' is empty",
    ("-p", "memory max_gap:=2"): "'memory max_gap' is not a parameter name",
    ("-p", "memory.:=2"): "'memory.' is not a parameter name",
    ("-p", "/robot1/lmanet:model:=erfnet"): "'/robot1/lmanet' before ':' is not a node name",
    ("-p", "palette:=[1, 2.5]"): "mixes double and integer values",
    ("-p", "cameras:=[front"): "the value is not YAML",
    ("-p", "cameras:={front: 1}"): "the value is a mapping",
    ("-r", "image"): "-r image: no ':=' (expected -r FROM:=TO)",
    ("-r",): "-r ends the ROS arguments: expected -r FROM:=TO",
    ("-r", ":=/camera/image_raw"): "the name to remap is empty",
    ("-r", "image:="): "the new name after ':=' is empty",
    ("-r", "image:=camera//image"): "'camera//image' is not a ROS name",
    ("-r", "image:=1camera"): "'1camera' is not a ROS name",
    ("-r", "__ns:=robot1"): "the namespace 'robot1' must be an absolute ROS name",
    ("-r", "__node:=a/b"): "the node name 'a/b' must be one token",
    ("--params-file",): "--params-file ends the ROS arguments: expected --params-file FILE",
    ("--log-level", "loud"): "'loud' is not a log level",
    ("--log-level",): "--log-level ends the ROS arguments",
    ("-e",): "-e ends the ROS arguments",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("params_files")
    for name, (content, _) in FILES.items():
        (directory / name).write_bytes(content)
    (directory / "a_directory.yaml").mkdir()
    return directory


def _rcl_refuses(arguments: list[str]) -> bool:
    """Whether ``rclpy.init`` (rcl's argument parser) refuses these ROS arguments."""
    import rclpy
    from rclpy.context import Context
    context = Context()
    try:
        rclpy.init(args=["lmanet_node", "--ros-args", *arguments], context=context)
    except Exception:  # RCLError, UnknownROSArgsError
        return True
    rclpy.shutdown(context=context)
    return False


def _our_reason(arguments: list[str]) -> str | None:
    try:
        check(["lmanet_node", "--ros-args", *arguments])
    except RosArgumentError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("arguments", list(ARGUMENTS), ids=" ".join)
def test_arguments_are_refused_as_rcl_refuses_them_in_words(arguments):
    reason = _our_reason(list(arguments))
    assert (reason is not None) == _rcl_refuses(list(arguments)), reason
    words = ARGUMENTS[arguments]
    assert (reason is None) == (words is None), reason
    if words is not None:
        assert words in reason and "\n" not in reason, reason


@pytest.mark.parametrize("name", list(FILES) + ["a_directory.yaml", "missing.yaml"])
def test_parameter_files_are_refused_as_rcl_refuses_them_and_more(files, name):
    path = str(files / name)
    reason = _our_reason(["--params-file", path])
    content, words = FILES.get(name, (None, "is a directory" if name == "a_directory.yaml"
                                      else "no such file"))
    if name in RCL_TAKES:  # rcl reads it as a file without parameters (or flattens a list)
        assert not _rcl_refuses(["--params-file", path])
    else:
        assert (reason is not None) == _rcl_refuses(["--params-file", path]), reason
    assert (reason is None) == (words is None), reason
    if words is not None:
        assert reason.startswith(f"--params-file {path}: ") and words in reason, reason
        assert "\n" not in reason, reason


def test_the_repository_parameter_file_passes():
    from lmanet_ros.node.launch_args import default_params_file
    check(["lmanet_node", "--ros-args", "--params-file", default_params_file()])


# ------------------------------------------------------------------------- the real executable
#: Case -> (ROS arguments, {file}: the files directory; expected exit code; words of the line).
PROCESS_CASES: dict[str, tuple[list[str], int, list[str]]] = {
    "params_file_missing": (["--params-file", "{files}/missing.yaml"], 2,
                            ["missing.yaml", "no such file"]),
    "params_file_directory": (["--params-file", "{files}/a_directory.yaml"], 2,
                              ["a_directory.yaml", "is a directory"]),
    "params_file_not_yaml": (["--params-file", "{files}/not_yaml.yaml"], 2,
                             ["not_yaml.yaml", "is not YAML", "line 4"]),
    "params_file_wrong_shape": (["--params-file", "{files}/no_ros_parameters.yaml"], 2,
                                ["no_ros_parameters.yaml", "not under ros__parameters"]),
    "params_file_empty": (["--params-file", "{files}/empty.yaml"], 2, ["empty.yaml", "empty"]),
    "params_file_binary": (["--params-file", "{files}/binary.yaml"], 2,
                           ["binary.yaml", "holds a single value"]),
    "params_file_last": (["-p", "device:=cpu", "--params-file"], 2, ["--params-file ends"]),
    "param_without_value": (["-p", "memory.max_gap"], 2, ["-p memory.max_gap", "no ':='"]),
    "param_last": (["-p", "device:=cpu", "-p"], 2, ["-p ends the ROS arguments"]),
    "param_empty_name": (["-p", ":=5"], 2, ["-p :=5", "parameter name is empty"]),
    "remap_without_target": (["-r", "image"], 2, ["-r image", "no ':='"]),
    "remap_last": (["-r"], 2, ["-r ends the ROS arguments"]),
    "unknown_argument": (["--no-such-flag"], 2, ["unknown ROS arguments", "--no-such-flag"]),
    # rcl refuses what ros_args does not check: still one line (rcl's own is dropped)
    "rcl_refuses": (["--enclave", "relative"], 2, ["cannot initialise ROS",
                                                   "Enclave name is not valid"]),
    "labels_onto_input": (["-r", "~/labels:=image"], 1,
                          ["output ~/labels and input image", "both resolve to"]),
    "launch_image_onto_overlay": (["-r", "image:=~/overlay"], 1,
                                  ["output ~/overlay and input image", "/lmanet/overlay"]),
    "camera_onto_its_input": (["-p", "cameras:=[front]", "-r", "~/front/color:=front/image"],
                              1, ["output ~/front/color and input front/image"]),
    "diagnostics_onto_compressed": (["-r", "/diagnostics:=image/compressed"], 1,
                                    ["output /diagnostics and input image/compressed"]),
}


@pytest.fixture(scope="module")
def outcomes(files, tmp_path_factory):
    """Every case of PROCESS_CASES run at once: name -> (exit code, stdout, stderr)."""
    directory = tmp_path_factory.mktemp("process_faults")
    return run_all({name: [node_executable(), "--ros-args", "-r", f"__ns:=/faults_{name}",
                           *(arg.format(files=files) for arg in arguments)]
                    for name, (arguments, _, _) in PROCESS_CASES.items()}, directory)


@pytest.mark.parametrize("case", list(PROCESS_CASES))
def test_a_fault_at_start_is_one_line_and_its_exit_code(outcomes, case):
    _, code, words = PROCESS_CASES[case]
    returncode, out, err = outcomes[case]
    lines = [line for line in err.splitlines() if line.strip()]
    assert returncode == code, f"exit code {returncode}:\n{err}"
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert all(word in lines[0] for word in words), lines[0]
    if code == 2:
        assert lines[0].startswith("lmanet_node: "), lines[0]
    assert out == "", out
    print(f"{case}: {lines[0]}")


def test_the_managed_node_names_itself():
    proc = subprocess.run([node_executable("lmanet_lifecycle_node"), "--ros-args", "-p"],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("lmanet_lifecycle_node: -p ends the ROS arguments: expected -p "
                           "NAME:=VALUE\n"), proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_parameter_file_is_one_line(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text(GOOD_FILE)
    path.chmod(0)
    proc = subprocess.run([node_executable(), "--ros-args", "--params-file", str(path)],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"lmanet_node: --params-file {path}: cannot be read (Permission " \
                          f"denied)\n", proc.stderr


# ------------------------------------------------------------------------------ running nodes
def test_a_parameter_without_a_name_is_refused_with_the_reason(ros, node_factory):
    from rcl_interfaces.srv import ListParameters
    node = node_factory()
    results = ros.set_parameters(node.fqn, {"": 5, " ": 5, "memory.maxgap": 2.0,
                                            "memory.max_gap": 3.0})
    assert [result.successful for result in results] == [False, False, False, True]
    assert results[0].reason == "a parameter name cannot be empty or blank (got '')"
    assert results[1].reason == "a parameter name cannot be empty or blank (got ' ')"
    assert results[2].reason == (f"{node.fqn} has no parameter 'memory.maxgap' "
                                 f"(`ros2 param list {node.fqn}` lists them)")
    atomic = ros.set_parameters(node.fqn, {"memory.max_gap": 4.0, "": 1}, atomic=True)[0]
    assert not atomic.successful and "cannot be empty" in atomic.reason
    listed, _ = ros.call(ListParameters, f"{node.fqn}/list_parameters",
                         ListParameters.Request())
    assert "memory.max_gap" in listed.result.names and "" not in listed.result.names
    assert ros.get_parameters(node.fqn, ["memory.max_gap"]) == {"memory.max_gap": 3.0}
    node.wait_log("parameter change refused: a parameter name cannot be empty")


def _labelled(ros, labels, publishers: dict[str, object], stamps: dict[str, float]) -> None:
    """Publish a 64x128 frame on each topic of ``publishers`` (with its stamp of ``stamps``),
    again each second, until labels of every stamp arrived."""
    image = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)

    def arrived():
        for topic, publisher in publishers.items():
            publisher.publish(make_image(image, stamp=stamps[topic]))
        seen = {stamp_of(msg) for msg in labels.messages}
        return set(stamps.values()) <= seen
    wait_until(arrived, 60.0, interval=1.0, what=f"labels of the frames on {list(publishers)}")


def test_two_nodes_of_one_name_warn_and_both_keep_working(ros, node_factory):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    namespace = f"/same_name_{os.getpid()}"
    first = node_factory(launch={"namespace": namespace, "image": "camera_a"})
    second = node_factory(launch={"namespace": namespace, "image": "camera_b"}, ready=False)
    second.wait_log("ready:", READY_TIMEOUT)
    assert first.fqn == second.fqn == f"{namespace}/lmanet"
    warning = f"another node runs in the ROS graph under this node's name, {first.fqn}: "
    second.wait_log(warning, 10.0)
    first.wait_log(warning, 10.0)

    labels = ros.subscribe(Image, first.topic("labels"))
    ros.wait_for_publishers(labels, count=2)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {topic: ros.publisher(Image, f"{namespace}/{topic}", qos)
                  for topic in ("camera_a", "camera_b")}
    _labelled(ros, labels, publishers, {"camera_a": 1.0, "camera_b": 2.0})

    assert second.interrupt() == 0, second.log()[-2000:]
    first.wait_log(f"no other node named {first.fqn} in the ROS graph any more", 20.0)
    _labelled(ros, labels, {"camera_a": publishers["camera_a"]}, {"camera_a": 3.0})
    assert first.log().count(warning) == 1, first.log()[-3000:]
    assert first.alive()
    ros.unsubscribe(labels)
