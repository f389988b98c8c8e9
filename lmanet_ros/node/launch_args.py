"""Launch arguments of ``lmanet.launch.py`` and what they turn into, without importing launch.

The launch file and the process-level tests both build the node's start from here, so they cannot
drift: the same executable, parameter file, overrides, remappings, node name and namespace.

- :data:`ARGUMENTS`: the launch arguments (name, default, description).
- :func:`resolve`: launch-argument strings -> a :class:`NodeLaunch` (what to start).
- :meth:`NodeLaunch.command`: the equivalent ``lmanet_node --ros-args ...`` command line.
- :meth:`NodeLaunch.node_kwargs`: keyword arguments for ``launch_ros.actions.Node`` (or
  ``LifecycleNode`` for ``managed:=true``: ``lmanet_lifecycle_node``, configured and activated
  by the launch file with ``autostart:=true``, else left unconfigured for a lifecycle manager).
- :func:`dds_environment`: the ``dds_profile`` argument -> the Fast DDS environment of the node
  (camera-sized images need a transport for large samples: see config/fastdds_shm_udp.xml).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["PACKAGE", "EXECUTABLE", "LIFECYCLE_EXECUTABLE", "NODE_NAME", "LaunchArgument",
           "ARGUMENTS", "DDS_PROFILES", "DEFAULT_DDS_PROFILE", "FASTDDS_VARIABLES", "NodeLaunch",
           "config_file", "default_params_file", "dds_environment", "dds_transport", "resolve",
           "parse_cameras", "parse_bool"]

PACKAGE = "lmanet_ros"
EXECUTABLE = "lmanet_node"
#: The managed (lifecycle) variant of the node (``managed:=true``).
LIFECYCLE_EXECUTABLE = "lmanet_lifecycle_node"
NODE_NAME = "lmanet"

#: The Fast DDS environment variables that choose the transports of a process.
FASTDDS_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
#: Named values of the ``dds_profile`` launch argument: (variable, value) for the node, a value
#: ending in .xml being a file of config/. ``default``: Fast DDS's own transports.
DDS_PROFILES: dict[str, tuple[str, str] | None] = {
    "shm_udp": ("FASTDDS_DEFAULT_PROFILES_FILE", "fastdds_shm_udp.xml"),
    "large_data": ("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"),
    "loopback_shm": ("FASTDDS_DEFAULT_PROFILES_FILE", "fastdds_shm.xml"),
    "default": None,
}
#: ``auto``: the shell's Fast DDS variables where one is set, else this profile.
DEFAULT_DDS_PROFILE = "shm_udp"


@dataclass(frozen=True)
class LaunchArgument:
    """One launch argument: its name, default (a string, as launch has them) and description."""

    name: str
    default: str
    description: str


ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("image", "image",
                   "Camera topic (sensor_msgs/Image) of the single-camera node; "
                   "'<image>/compressed' is used when input.transport is compressed."),
    LaunchArgument("cameras", "",
                   "Comma-separated camera names for one node serving several cameras (camera "
                   "'front' reads 'front/image'); empty: the single camera on 'image'."),
    LaunchArgument("namespace", "", "Namespace of the node (and of its relative topics)."),
    LaunchArgument("node_name", NODE_NAME, "Name of the node."),
    LaunchArgument("params_file", "",
                   "Parameter file; empty: config/lmanet.yaml of the installed package."),
    LaunchArgument("checkpoint", "",
                   "Weights to load (.pth, .pt, .safetensors); empty: the parameter file's value."),
    LaunchArgument("device", "",
                   "auto, cpu, cuda or cuda:N; empty: the parameter file's value."),
    LaunchArgument("backend", "",
                   "auto, torch, onnxruntime or openvino; empty: the parameter file's value."),
    LaunchArgument("use_sim_time", "false", "Use /clock (bag replay with --clock)."),
    LaunchArgument("log_level", "info", "Logging level of the node (debug, info, warn, error)."),
    LaunchArgument("managed", "false",
                   "Start the managed (lifecycle) node lmanet_lifecycle_node: configure loads "
                   "the model, activate starts processing (its ~/change_state service, a "
                   "lifecycle manager such as Nav2's)."),
    LaunchArgument("autostart", "false",
                   "With managed:=true: configure and activate the node once it is up (as "
                   "Nav2's lifecycle manager with autostart); false: it waits unconfigured."),
    LaunchArgument("dds_profile", "auto",
                   "Fast DDS transports of the node: shm_udp (shared memory for large images "
                   "beside UDPv4 on every interface), large_data, loopback_shm (this host "
                   "only), default (Fast DDS's own: large raw images get lost), a profile XML "
                   f"file, or auto: the shell's {' / '.join(FASTDDS_VARIABLES)} where set, "
                   f"else {DEFAULT_DDS_PROFILE}. The camera driver needs the same."),
)

_ARGUMENT_NAMES = frozenset(arg.name for arg in ARGUMENTS)


def config_file(name: str) -> str:
    """config/<name>: from the installed package share directory, else the source tree."""
    try:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
        try:
            shared = Path(get_package_share_directory(PACKAGE)) / "config" / name
            if shared.is_file():
                return str(shared)
        except (PackageNotFoundError, OSError):  # not installed; no AMENT_PREFIX_PATH
            pass
    except ImportError:
        pass
    return str(Path(__file__).resolve().parents[2] / "config" / name)


def default_params_file() -> str:
    """config/lmanet.yaml: from the installed package share directory, else the source tree."""
    return config_file("lmanet.yaml")


def dds_environment(profile: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables that give a process the Fast DDS transports of ``profile``.

    Args:
        profile: a name of :data:`DDS_PROFILES`, ``auto`` or the path of a Fast DDS XML file.
        environ: the environment ``auto`` looks at (default ``os.environ``).

    Returns:
        the variables to set ({} for ``default``, and for ``auto`` where the shell sets one of
        :data:`FASTDDS_VARIABLES`: the process keeps the shell's).

    Raises:
        ValueError: an unknown name, or an XML file that does not exist.
    """
    profile = str(profile).strip() or "auto"
    if profile == "auto":
        environ = os.environ if environ is None else environ
        if any(environ.get(name) for name in FASTDDS_VARIABLES):
            return {}
        profile = DEFAULT_DDS_PROFILE
    if profile in DDS_PROFILES:
        entry = DDS_PROFILES[profile]
        if entry is None:
            return {}
        variable, value = entry
        return {variable: config_file(value) if value.endswith(".xml") else value}
    path = Path(os.path.expanduser(profile))
    if path.suffix != ".xml" or not path.is_file():
        raise ValueError(f"dds_profile '{profile}': expected auto, "
                         f"{', '.join(DDS_PROFILES)} or an existing Fast DDS .xml file")
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(path.resolve())}


@contextmanager
def dds_transport(profile: str = "auto") -> Iterator[dict[str, str]]:
    """Set :func:`dds_environment` of ``profile`` in ``os.environ`` while the block runs (create
    the rclpy context there: Fast DDS reads the variables when a process's first participant
    starts); yields the variables set."""
    variables = dds_environment(profile)
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield variables
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def parse_bool(text: str) -> bool:
    """'true'/'false' (any case, also 1/0, yes/no) -> bool; anything else raises ValueError."""
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got '{text}'")


def parse_cameras(text: str) -> list[str]:
    """'front, rear' or '[front, rear]' -> ['front', 'rear']; '' -> []."""
    text = str(text).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [name.strip().strip("'\"") for name in text.split(",") if name.strip()]


def _yaml_scalar(value: Any) -> str:
    """A value as the YAML that ``-p name:=value`` parses back to the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a double-quoted YAML string


@dataclass(frozen=True)
class NodeLaunch:
    """Everything needed to start one ``lmanet_node`` (launch file or subprocess).

    Attributes:
        params_file: the parameter file (absolute path).
        overrides: parameters set on top of the file (name -> typed value), in order.
        remappings: (from, to) topic remappings.
        namespace: the node's namespace ('' = root).
        node_name: the node's name.
        log_level: the ROS log level.
        environment: variables set for the node's process (its Fast DDS transports).
        managed: start the lifecycle node (:data:`LIFECYCLE_EXECUTABLE`).
        autostart: the launch file configures and activates the managed node.
    """

    params_file: str
    overrides: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    namespace: str = ""
    node_name: str = NODE_NAME
    log_level: str = "info"
    environment: dict[str, str] = field(default_factory=dict)
    managed: bool = False
    autostart: bool = False

    @property
    def executable(self) -> str:
        """The node's executable: :data:`LIFECYCLE_EXECUTABLE` when managed, else
        :data:`EXECUTABLE`."""
        return LIFECYCLE_EXECUTABLE if self.managed else EXECUTABLE

    @property
    def fully_qualified_name(self) -> str:
        """'/<namespace>/<node_name>' (for topic names of the outputs)."""
        return f"{self.namespace.rstrip('/')}/{self.node_name}" if self.namespace.strip("/") \
            else f"/{self.node_name}"

    def ros_arguments(self) -> list[str]:
        """The ``--ros-args ...`` part of the command line (without ``--ros-args``)."""
        args = ["--params-file", self.params_file]
        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        for name, value in self.overrides.items():
            args += ["-p", f"{name}:={_yaml_scalar(value)}"]
        args += ["-r", f"__node:={self.node_name}"]
        if self.namespace.strip("/"):
            args += ["-r", f"__ns:={self.namespace}"]
        if self.log_level and self.log_level != "info":
            args += ["--log-level", self.log_level]
        return args

    def command(self, executable: str | None = None) -> list[str]:
        """``[executable, '--ros-args', ...]``: the command the launch file's Node action runs
        (``executable`` default: :attr:`executable`; a path to it, e.g.)."""
        return [executable or self.executable, "--ros-args", *self.ros_arguments()]

    def process_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of the node's process: ``base`` (default ``os.environ``) with
        :attr:`environment` set on top."""
        return {**(os.environ if base is None else base), **self.environment}

    def node_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``launch_ros.actions.Node`` for the same start."""
        kwargs: dict[str, Any] = {
            "package": PACKAGE, "executable": self.executable, "name": self.node_name,
            "namespace": self.namespace, "output": "screen", "emulate_tty": True,
            "parameters": [self.params_file] + ([dict(self.overrides)] if self.overrides else []),
            "remappings": list(self.remappings),
            "additional_env": dict(self.environment),
        }
        if self.log_level and self.log_level != "info":
            kwargs["ros_arguments"] = ["--log-level", self.log_level]
        return kwargs


def resolve(values: Mapping[str, str] | None = None) -> NodeLaunch:
    """Turn launch-argument values (strings; missing = default) into a :class:`NodeLaunch`.

    Raises:
        ValueError: an unknown argument name or a malformed value.
    """
    values = dict(values or {})
    unknown = set(values) - _ARGUMENT_NAMES
    if unknown:
        raise ValueError(f"unknown launch arguments: {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(arg.name for arg in ARGUMENTS)})")
    merged = {arg.name: arg.default for arg in ARGUMENTS}
    merged.update({k: str(v) for k, v in values.items()})

    image = merged["image"].strip() or "image"
    remappings: list[tuple[str, str]] = []
    if image != "image":
        remappings += [("image", image), ("image/compressed", f"{image.rstrip('/')}/compressed")]

    overrides: dict[str, Any] = {}
    cameras = parse_cameras(merged["cameras"])
    if cameras:
        overrides["cameras"] = cameras
    if merged["checkpoint"].strip():
        overrides["checkpoint"] = os.path.expanduser(merged["checkpoint"].strip())
    for name in ("device", "backend"):
        if merged[name].strip():
            overrides[name] = merged[name].strip()
    overrides["use_sim_time"] = parse_bool(merged["use_sim_time"])

    namespace = merged["namespace"].strip()
    if namespace and not namespace.startswith("/"):
        namespace = "/" + namespace
    params_file = merged["params_file"].strip() or default_params_file()
    return NodeLaunch(params_file=os.path.abspath(os.path.expanduser(params_file)),
                      overrides=overrides, remappings=tuple(remappings),
                      namespace=namespace.rstrip("/") if namespace != "/" else "",
                      node_name=merged["node_name"].strip() or NODE_NAME,
                      log_level=merged["log_level"].strip().lower() or "info",
                      environment=dds_environment(merged["dds_profile"]),
                      managed=parse_bool(merged["managed"]),
                      autostart=parse_bool(merged["autostart"]))
