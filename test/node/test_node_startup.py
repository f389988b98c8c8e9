"""lmanet_node start-up failures: a non-zero exit with one clear line, never a traceback.

Each case starts the node the way the launch file does (launch arguments -> command line), or
with the ROS arguments of :data:`COMMAND_LINE` alone; the processes run concurrently to keep the
module short.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from process_helpers import run_all
from ros_helpers import child_env, node_executable, wait_until, write_params_file
from lmanet_ros.node.launch_args import resolve

pytestmark = pytest.mark.ros

LOG_LEVELS = ("[DEBUG]", "[INFO]", "[WARN]")


def _cases(directory):
    corrupt = directory / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint" * 100)
    wrong = directory / "wrong_shapes.pth"
    import torch
    torch.save({"state_dict": {"decoder.output_conv.weight": torch.zeros(3, 3)}}, wrong)
    fifo = directory / "weights.fifo"
    os.mkfifo(fifo)
    return {
        # name: (launch values, params, expected words in the error line, strict one line)
        "missing_checkpoint": ({"checkpoint": str(directory / "nope.pth")}, None,
                               ["checkpoint not found", "nope.pth"], True),
        "cuda_absent": ({"device": "cuda"}, None, ["cuda", "not available"], True),
        "cuda_index": ({"device": "cuda:3"}, None, ["cuda:3"], True),
        "unknown_model": ({}, {"model": "segformer"},
                          ["unknown model 'segformer'", "lmanet_erfnet"], True),
        "corrupt_checkpoint": ({"checkpoint": str(corrupt)}, None, ["corrupt.pth"], False),
        # issue 17: what the path is, at once (never 'not found', never reading /dev/zero)
        "checkpoint_directory": ({"checkpoint": str(directory)}, None,
                                 ["is a directory, not a file"], True),
        "checkpoint_dev_zero": ({"checkpoint": "/dev/zero"}, None,
                                ["/dev/zero is not a regular file: it is a character device"],
                                True),
        "checkpoint_fifo": ({"checkpoint": str(fifo)}, None,
                            ["weights.fifo is not a regular file: it is a FIFO"], True),
        "network_over_budget": ({}, {"input_height": 8192, "input_width": 8192},
                                ["network input 8192x8192", "over max_network_pixels 2097152"],
                                True),
        "mismatched_checkpoint": ({"checkpoint": str(wrong)}, None, ["wrong_shapes.pth"], False),
        "no_demo_weights": ({"checkpoint": "demo"}, {"model": "pspnet50"},
                            ["no demo weights for model 'pspnet50'", "lmanet_erfnet"], True),
        "palette_length": ({}, {"palette": [1, 2, 3]}, ["palette must hold 3 values"], True),
        "wrong_type": ({}, {"memory.max_gap": "long"},
                       ["memory.max_gap must be a double (got the string 'long')"], True),
        "float_for_int": ({}, {"memory.stride": 2.5},
                          ["memory.stride must be an integer (got the double 2.5)"], True),
        "string_for_int_on_command_line": (
            {}, None, ["memory.stride must be an integer (got the string 'abc')"], True),
        "empty_palette": ({}, None, ["palette must hold 3 values", "got 0"], True),
        "lifecycle_wrong_type": ({"managed": "true"}, {"memory.stride": "abc"},
                                 ["memory.stride must be an integer (got the string 'abc')"],
                                 True),
        "out_of_range": ({}, {"overlay_alpha": 2.0},
                         ["overlay_alpha must be a double in [0.0, 1.0] (got 2.0)"], True),
    }


#: Case -> its ROS arguments, without a parameter file: rcl merges a ``-p`` value of another
#: type than the file's badly (the file's integer 1 hides ``-p memory.stride:=abc``).
COMMAND_LINE = {"string_for_int_on_command_line": ["-p", "memory.stride:=abc"],
                "empty_palette": ["-p", "palette:=[]"]}


WITHOUT_MESSAGES = ("import sys; sys.modules['lmanet_ros.msg'] = None; "
                    "from lmanet_ros.node.node import main; sys.exit(main())")


@pytest.fixture(scope="module")
def without_messages(tmp_path_factory):
    """A node whose lmanet_ros messages cannot be imported (a machine without the msg build)."""
    directory = tmp_path_factory.mktemp("no_msgs")
    launch = resolve({"namespace": "/startup_without_messages"})
    command = [sys.executable, "-c", WITHOUT_MESSAGES, *launch.command()[1:]]
    log = directory / "node.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                env=child_env(), cwd=str(directory))
    yield proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, without_messages):
    directory = tmp_path_factory.mktemp("startup")
    cases = _cases(directory)
    assert set(cases) == set(CASES)
    commands = {}
    for name, (launch_values, params, _, _) in cases.items():
        values = dict(launch_values, namespace=f"/startup_{name}")
        if params:
            values["params_file"] = write_params_file(directory, params)
        launch = resolve(values)
        command = launch.command(node_executable(launch.executable))
        if name in COMMAND_LINE:
            command = [command[0], "--ros-args", *COMMAND_LINE[name],
                       "-r", f"__ns:={values['namespace']}"]
        commands[name] = command
    results = run_all(commands, directory)
    return cases, results


CASES = ("missing_checkpoint", "cuda_absent", "cuda_index", "unknown_model", "corrupt_checkpoint",
         "mismatched_checkpoint", "no_demo_weights", "palette_length", "wrong_type",
         "float_for_int", "string_for_int_on_command_line", "empty_palette",
         "lifecycle_wrong_type", "out_of_range", "checkpoint_directory", "checkpoint_dev_zero",
         "checkpoint_fifo", "network_over_budget")


@pytest.mark.parametrize("case", CASES)
def test_startup_failure_is_one_clear_line(outcomes, case):
    cases, results = outcomes
    _, _, words, strict = cases[case]
    code, out, err = results[case]
    assert code not in (0, None), f"exit code {code}\n{err}"
    assert "Traceback" not in err + out, err
    lines = [line for line in err.splitlines() if line.strip()]
    problems = [line for line in lines if not line.startswith(LOG_LEVELS)]
    assert len(problems) == 1, f"expected one error line, got:\n{err}"
    assert all(word.lower() in problems[0].lower() for word in words), problems[0]
    if strict:  # failed before anything was loaded: nothing else was printed
        assert len(lines) == 1, err
    print(f"{case}: {problems[0]}")


def test_node_runs_without_its_messages_and_says_label_info_is_off(without_messages, outcomes):
    proc, log = without_messages
    wait_until(lambda: "ready:" in log.read_text() or proc.poll() is not None, 120.0,
               what="the node without messages to be ready")
    text = log.read_text()
    assert "label_info is off" in text and "ready:" in text, text
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()
