"""``lmanet_node --help`` (and ``-h``, and the same for ``lmanet_lifecycle_node``): how to pass
ROS arguments, the topics and services, every parameter of :data:`SPECS`; printed without
initialising ROS or importing torch, so it answers at once.

Only the arguments outside ``--ros-args ... [--]`` count: ``--help`` inside them is ROS's.
"""
from __future__ import annotations

import shutil
import textwrap
from typing import Iterable

from lmanet_ros.node.launch_args import LIFECYCLE_EXECUTABLE, NODE_NAME
from rclpy.parameter import Parameter

from lmanet_ros.node.param_types import expected_type, shown, type_name
from lmanet_ros.node.params import SPECS, ParamSpec

__all__ = ["asked", "text"]

HELP_FLAGS = ("-h", "--help")
#: Columns of the text: the terminal's, within these bounds.
MIN_WIDTH, MAX_WIDTH = 60, 100
#: Indentation of a parameter's description, in columns.
INDENT = 6
#: Items of a list default shown in a parameter's headline.
DEFAULT_ITEMS = 3

_USAGE = """\
usage: {prog} [-h]
       {prog} [--ros-args [-p NAME:=VALUE ...] [--params-file FILE]
       {space} [-r FROM:=TO ...] [--log-level LEVEL]]

{summary}

ROS arguments (after --ros-args):
  -p NAME:=VALUE         set a parameter, e.g. -p model:=erfnet -p memory.max_gap:=2.0
  --params-file FILE     parameters from a YAML file (config/lmanet.yaml lists them all)
  -r FROM:=TO            remap a topic, e.g. -r image:=/camera/image_raw; -r __ns:=/robot1
                         sets the namespace, -r __node:=NAME the node name ({node})
  --log-level LEVEL      debug, info, warn, error or fatal

exit codes (a failure says why in one line on stderr):
  0                      ended by SIGINT or SIGTERM
  1                      start-up failure: a bad parameter value, checkpoint or device, an
                         output remapped onto an input
  2                      a malformed ROS argument, a missing or broken parameter file

examples:
  {prog} --ros-args -p checkpoint:=demo -r image:=/camera/image_raw
  {prog} --ros-args --params-file config/lmanet.yaml -p device:=cpu
  ros2 launch lmanet_ros lmanet.launch.py image:=/camera/image_raw{launch_extra}

topics (relative: namespaces and remaps apply; with cameras:=[front, ...] camera front
subscribes front/image and publishes ~/front/labels etc.):
  image                  in: sensor_msgs/Image (input.transport raw)
  image/compressed       in: sensor_msgs/CompressedImage (input.transport compressed)
{outputs}
  ~/label_info           out: class names and colours, latched (the node is ready)
  /diagnostics           out: the model's and each camera's status

services (std_srvs/Trigger): ~/reset_memory clears every camera's memory,
  ~/<camera>/reset_memory one camera's{lifecycle_services}

parameters (`ros2 param set` changes them at run time, except the read-only ones; `ros2 param
describe` on a running node also lists the model names):
"""

_SUMMARY = ("Semantic segmentation of camera streams with a temporal memory per camera "
            "(LMANet and other video models): labels, colour mask, overlay and confidence "
            "images with the input's header.")
_LIFECYCLE = (" As a managed (lifecycle) node: it starts unconfigured; the transitions "
              "configure (load the model) and activate (process frames) start it, e.g. "
              "`ros2 lifecycle set /lmanet configure`.")


def asked(argv: Iterable[str]) -> bool:
    """Whether ``argv`` (with or without the program name) asks for the help: ``-h`` or
    ``--help`` outside the ROS arguments (``--ros-args`` up to ``--`` or the end)."""
    in_ros = False
    for arg in argv:
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif not in_ros and arg in HELP_FLAGS:
            return True
    return False


def _width() -> int:
    return max(MIN_WIDTH, min(MAX_WIDTH, shutil.get_terminal_size((MAX_WIDTH, 24)).columns))


def _headline(spec: ParamSpec) -> str:
    """'name (type, default X, range a..b, read-only)'."""
    # a typed parameter without a default value starts as an empty list
    default = [] if isinstance(spec.default, Parameter.Type) else spec.default
    words = [type_name(expected_type(spec)), f"default {shown(default, DEFAULT_ITEMS)}"]
    bounds = spec.int_range or spec.float_range
    if bounds is not None:
        words.append(f"{bounds[0]}..{bounds[1]}")
    if spec.choices:
        words.append("one of " + " | ".join(spec.choices))
    if spec.read_only:
        words.append("read-only")
    return f"  {spec.name} ({', '.join(words)})"


def _parameter(spec: ParamSpec, width: int) -> str:
    """One parameter: its headline, then its description wrapped and indented."""
    about = spec.description
    if spec.constraints and not spec.choices:
        about += f" Constraint: {spec.constraints}."
    body = textwrap.fill(about, width, initial_indent=" " * INDENT,
                         subsequent_indent=" " * INDENT)
    return f"{_headline(spec)}\n{body}"


def _outputs() -> str:
    """The image outputs, one line each, from the ``publish.<output>`` parameters."""
    lines = []
    for spec in SPECS:
        if spec.name.startswith("publish."):
            output = spec.name.split(".", 1)[1]
            state = "on" if spec.default else "off"
            lines.append(f"  {'~/' + output:<22} out: sensor_msgs/Image ({spec.name}, {state} "
                         f"by default)")
    return "\n".join(lines)


def text(prog: str) -> str:
    """The help of the executable ``prog`` (``lmanet_node`` or ``lmanet_lifecycle_node``)."""
    lifecycle = prog == LIFECYCLE_EXECUTABLE
    width = _width()
    summary = textwrap.fill(_SUMMARY + (_LIFECYCLE if lifecycle else ""), width)
    head = _USAGE.format(
        prog=prog, space=" " * len(prog), summary=summary, node=NODE_NAME,
        outputs=_outputs(), launch_extra=" managed:=true" if lifecycle else "",
        lifecycle_services="; the lifecycle services ~/change_state, ~/get_state..."
        if lifecycle else "")
    return head + "\n".join(_parameter(spec, width) for spec in SPECS) + "\n"
