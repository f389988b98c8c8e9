"""The node's parameters: names, defaults, descriptors, validation and a typed snapshot.

One table (:data:`SPECS`) defines every parameter of ``lmanet_node``: its default, its
description, its range or choices and whether it is read-only. The node declares them from this
table, ``config/lmanet.yaml`` lists the same names and defaults (a test keeps them equal), and
``lmanet_node --help`` prints it (:mod:`~lmanet_ros.node.usage`). Types and numeric ranges are
checked, with the reason in words, by :mod:`~lmanet_ros.node.param_types` (rclpy enforces them
and read-only too); :func:`validate` checks what descriptors cannot express (choices, array
contents, parameters that only make sense together, the model's class count).

Nothing here loads a model or imports torch (the model names, which need the model registry, are
looked up when a descriptor is made). The rclpy imports are message and parameter types only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES, CITYSCAPES_COLORS, MAX_CLASSES

__all__ = [
    "ParamSpec",
    "SPECS",
    "MAX_CAMERAS",
    "SPEC_BY_NAME",
    "Settings",
    "CITYSCAPES_PALETTE",
    "descriptor",
    "full_description",
    "validate",
    "is_default_classes",
    "POLICY_PARAMS",
    "INPUT_PARAMS",
]

#: The Cityscapes palette as the flat [r, g, b, ...] list the ``palette`` parameter holds.
CITYSCAPES_PALETTE: tuple[int, ...] = tuple(int(v) for v in CITYSCAPES_COLORS.reshape(-1))

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: The largest pixel budget: lmanet_ros.imaging.MAX_PIXELS (not imported: imaging loads OpenCV,
#: and ``lmanet_node --help`` reads this table).
MAX_BUDGET_PIXELS = 1 << 26
#: Default ``max_frame_pixels``: 3840x2160 (4K UHD).
DEFAULT_MAX_FRAME_PIXELS = 3840 * 2160
#: Default ``max_network_pixels``: 2048x1024, the Cityscapes full resolution.
DEFAULT_MAX_NETWORK_PIXELS = 2048 * 1024
_CAMERA_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of the node.

    Attributes:
        name: the parameter name (dots group related parameters, as in the YAML file).
        default: the default value; its Python type fixes the parameter type. A
            :class:`rclpy.parameter.Parameter.Type` declares a typed parameter without a value
            (``cameras``: an empty list has no ROS type).
        description: one or two sentences, shown by ``ros2 param describe``.
        read_only: cannot change after start (restart the node to change it).
        int_range: (from, to) for integers, inclusive.
        float_range: (from, to) for doubles, inclusive.
        choices: allowed strings (checked by :func:`validate`).
        constraints: extra constraints in words (``additional_constraints``).
        listing: gives a sentence that ends the description and needs the model registry
            (hence torch), e.g. the model names: added by :func:`full_description`.
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    constraints: str = ""
    listing: Callable[[], str] | None = None


def _model_names() -> str:
    """The registered models, as a sentence (imports the model registry, hence torch)."""
    from lmanet_ros.models.registry import list_models
    return "Known models: " + ", ".join(list_models()) + "."


def _demo_models() -> str:
    """The models with packaged demo weights, as a sentence (imports torch)."""
    from lmanet_ros.models.weights import DEMO, models_with_weights
    return "Demo weights exist for: " + ", ".join(models_with_weights(DEMO)) + "."


SPECS: tuple[ParamSpec, ...] = (
    # -- the model (read-only: changing them means loading another network) ------------------
    ParamSpec("model", "lmanet_erfnet",
              "Network to run. erfnet and pspnet* are single frame; lmanet_* (LMANet), "
              "tmanet_erfnet, tdnet_erfnet and stf_* use a memory of past frames; the "
              "*_delayed_* forms publish each frame's labels one frame late, with that frame's "
              "header.", read_only=True,
              constraints="a name known to lmanet_ros.models", listing=_model_names),
    ParamSpec("checkpoint", "",
              "Path of the weights (.pth, .pt or .safetensors); 'demo': the packaged demo weights "
              "of the model (trained on synthetic streets). Empty: random weights, for tests "
              "only (a loud warning is logged and diagnostics report it).",
              read_only=True, listing=_demo_models),
    ParamSpec("device", "auto",
              "Where to run the network: auto (CUDA when available, else CPU), cpu, cuda or "
              "cuda:N. Asking for CUDA where there is none is a startup error.", read_only=True,
              constraints="auto | cpu | cuda | cuda:N"),
    ParamSpec("precision", "fp32", "Arithmetic precision of the network: fp32, fp16 or bf16.",
              read_only=True, choices=("fp32", "fp16", "bf16")),
    ParamSpec("backend", "auto",
              "What runs the network: torch (PyTorch, any device and precision), onnxruntime "
              "or openvino (graphs exported from the checkpoint on first use and cached by its "
              "sha256 and input size; CPU and fp32 only, at a fixed input size: "
              "input_height/input_width, else the trained size), or auto: onnxruntime, else "
              "openvino (the fastest measured on a CPU for LMANet-ERFNet) where a graph "
              "backend can run the checkpoint as "
              "asked, else torch; the start-up log says which and why. A named backend whose "
              "package is missing is a startup error, never a fall-back.",
              read_only=True, choices=("auto", "torch", "onnxruntime", "openvino")),
    ParamSpec("num_threads", 0,
              "CPU threads PyTorch uses for inference; 0: the physical cores this process may "
              "run on (its CPU affinity), at most 4, which keeps latency steady on a busy "
              "machine (PyTorch's own default, every logical CPU, does not). A count above the "
              "CPUs of the affinity is clamped to them, with a warning (at start and at run "
              "time).",
              int_range=(0, 256)),
    ParamSpec("input_height", 0,
              "Height in pixels of the network input; frames are resized to it and the outputs "
              "back to the frame's size. Used when input_width is set too; 0: the size the "
              "weights were trained at (checkpoint metadata), else each frame's own size.",
              int_range=(0, 8192),
              constraints="used only when both input_height and input_width are positive"),
    ParamSpec("input_width", 0,
              "Width in pixels of the network input; used when input_height is set too; 0: the "
              "weights' trained size, else each frame's own size.", int_range=(0, 8192),
              constraints="used only when both input_height and input_width are positive"),
    ParamSpec("max_network_pixels", DEFAULT_MAX_NETWORK_PIXELS,
              "Budget of the network input, height x width in pixels (default 2048x1024): the "
              "network's memory grows with it (lmanet_erfnet on a CPU: about 440 bytes per "
              "pixel, 0.9 GB at the default). input_height x input_width above it is refused "
              "(at start and at run time); where the network runs at each frame's own size, a "
              "larger frame is refused before decoding (counted as frames_over_budget in "
              "/diagnostics).", int_range=(1, MAX_BUDGET_PIXELS),
              constraints="input_height * input_width <= max_network_pixels"),
    ParamSpec("max_frame_pixels", DEFAULT_MAX_FRAME_PIXELS,
              "Budget of one input frame, width x height in pixels (default 3840x2160): a frame "
              "whose header (raw, PNG or JPEG) states more is refused before it is decoded, "
              "logged and counted as frames_over_budget in /diagnostics; the next frame is "
              "processed as usual. Decoding and the outputs at the frame's size cost about "
              "90 bytes per frame pixel (0.7 GB at the default).",
              int_range=(1, MAX_BUDGET_PIXELS)),
    # -- the temporal memory --------------------------------------------------------------------
    ParamSpec("memory.length", 0,
              "Frames held by each camera's temporal memory; 0: the checkpoint metadata's, else "
              "the model's own (4 for lmanet_erfnet, 3 for lmanet_pspnet*, as in the published "
              "evaluations). A change clears every memory (reset reason 'parameter').",
              int_range=(0, 32)),
    ParamSpec("memory.max_gap", 1.0,
              "Largest gap in seconds between two processed frames of a camera that keeps its "
              "memory; a larger gap clears it (reason 'gap'). 0 disables the rule.",
              float_range=(0.0, 3600.0)),
    ParamSpec("memory.stride", 1,
              "Store every k-th processed frame in the memory (1 = every frame), for cameras much "
              "faster than the 17 Hz the published model was trained on.", int_range=(1, 100)),
    # -- classes ----------------------------------------------------------------------------------
    ParamSpec("class_names", list(CITYSCAPES_CLASS_NAMES),
              "Class names, index = class id in the labels image. The Cityscapes default gives "
              "way to class metadata stored in the checkpoint; any other value wins over both "
              "(a conflict is logged).",
              constraints="1 to the model's number of outputs names, unique, non-empty"),
    ParamSpec("palette", list(CITYSCAPES_PALETTE),
              "Colours of the classes as a flat list [r, g, b, r, g, b, ...], one triple per "
              "class name, each value 0..255.",
              constraints="3 * len(class_names) values in 0..255"),
    # -- outputs ----------------------------------------------------------------------------------
    ParamSpec("publish.labels", True, "Publish ~/labels: class ids, mono8, at the input size."),
    ParamSpec("publish.color", True,
              "Publish ~/color: the colour mask, rgb8 (rendered only while subscribed)."),
    ParamSpec("publish.overlay", True,
              "Publish ~/overlay: the input blended with the colour mask, rgb8 (rendered only "
              "while subscribed)."),
    ParamSpec("publish.confidence", False,
              "Publish ~/confidence: the max softmax probability as mono8 0..255 (computed only "
              "while subscribed)."),
    ParamSpec("overlay_alpha", 0.5,
              "Weight of the colour mask in ~/overlay: 0 gives the image, 1 the mask.",
              float_range=(0.0, 1.0)),
    # -- input ------------------------------------------------------------------------------------
    ParamSpec("input.transport", "raw",
              "raw: subscribe sensor_msgs/Image on 'image'; compressed: subscribe "
              "sensor_msgs/CompressedImage (jpeg, png) on 'image/compressed'.",
              choices=("raw", "compressed")),
    ParamSpec("input.reliability", "best_effort",
              "QoS reliability of the input subscription: best_effort (sensor data, matches every "
              "publisher) or reliable (bag replay without loss; a best-effort publisher is then "
              "incompatible and a warning is logged).", choices=("best_effort", "reliable")),
    ParamSpec("input.depth", 1,
              "QoS history depth of the input subscription. 1 (default) suits processing_mode "
              "latest: DDS keeps only the newest frame while the node is busy. 0 = keep all: "
              "use it with reliable and processing_mode all for lossless replay.",
              int_range=(0, 1000)),
    ParamSpec("processing_mode", "latest",
              "latest: live cameras, only the newest frame of each camera is processed (bounded "
              "latency, older frames are counted as drops); all: every frame in order (bag "
              "replay), the input is throttled instead of queued without bound.",
              choices=("latest", "all")),
    ParamSpec("cameras", Parameter.Type.STRING_ARRAY,
              "Camera names served by this node (one model, one memory per camera). Empty: one "
              "camera on 'image'. Camera 'front' subscribes 'front/image' and publishes "
              "~/front/labels etc., with ~/front/reset_memory.",
              constraints="at most 32 unique names of letters, digits and '_', starting with a "
                          "letter"),
    ParamSpec("diagnostics_period", 1.0, "Seconds between two /diagnostics messages.",
              float_range=(0.1, 60.0)),
)

SPEC_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in SPECS}

#: Parameters that feed the pipeline's memory policy (gap and stride rules).
POLICY_PARAMS = frozenset({"memory.max_gap", "memory.stride"})
#: Parameters that shape the input subscriptions (a change re-creates them).
#: Most cameras one node serves (the ``cameras`` parameter; the executor's threads are sized
#: for them).
MAX_CAMERAS = 32
INPUT_PARAMS = frozenset({"input.transport", "input.reliability", "input.depth", "cameras"})


def full_description(spec: ParamSpec) -> str:
    """The description of ``spec`` with its listing, if any (which may import torch)."""
    return f"{spec.description} {spec.listing()}" if spec.listing else spec.description


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of ``spec`` (full description, range, read_only, constraints)."""
    desc = ParameterDescriptor(description=full_description(spec), read_only=spec.read_only)
    constraints = spec.constraints
    if spec.choices:
        constraints = "one of: " + ", ".join(spec.choices)
    desc.additional_constraints = constraints
    if spec.int_range is not None:
        desc.integer_range = [IntegerRange(from_value=spec.int_range[0],
                                           to_value=spec.int_range[1], step=0)]
    if spec.float_range is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=spec.float_range[0],
                                                        to_value=spec.float_range[1], step=0.0)]
    if isinstance(spec.default, Parameter.Type):
        desc.type = spec.default.value
    return desc


def _plain(value: Any) -> Any:
    """Parameter values as plain Python: arrays become lists, None stays None."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return list(value)


def is_default_classes(names: Iterable[str], palette: Iterable[int]) -> bool:
    """Whether names and palette are the built-in Cityscapes default (i.e. not set by a user)."""
    return (tuple(names) == CITYSCAPES_CLASS_NAMES
            and tuple(int(v) for v in palette) == CITYSCAPES_PALETTE)


def _check_classes(names: list[str], palette: list[int], num_classes: int | None) -> str | None:
    limit = min(MAX_CLASSES, num_classes) if num_classes else MAX_CLASSES
    if not 1 <= len(names) <= limit:
        what = f"the model has {num_classes} outputs" if num_classes else "ids must fit mono8"
        return f"class_names must hold 1..{limit} names ({what}), got {len(names)}"
    for index, name in enumerate(names):
        if not name.strip():
            return f"class_names[{index}] is empty"
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            return f"class name '{name}' is used twice (ids {seen[name]} and {index})"
        seen[name] = index
    if len(palette) != 3 * len(names):
        return (f"palette must hold 3 values (r, g, b) per class: {len(names)} class names "
                f"need {3 * len(names)} values, got {len(palette)}")
    for index, value in enumerate(palette):
        if not 0 <= value <= 255:
            return f"palette[{index}] = {value} is outside 0..255 (class {index // 3})"
    return None


def validate(changes: Mapping[str, Any], current: Mapping[str, Any], *,
             num_classes: int | None = None, running_backend: str | None = None) -> str | None:
    """Check a set of parameter changes; return None if acceptable, else the reason in words.

    The values are of the right type and within their numeric ranges
    (:func:`lmanet_ros.node.param_types.coerce` has checked them).

    Args:
        changes: name -> new value, for the parameters of this table being set together
            (names not in :data:`SPECS` are ignored: they belong to someone else).
        current: name -> value of every parameter now (values not being changed).
        num_classes: the model's number of outputs once it is loaded (None before).
        running_backend: the backend that runs once the model is loaded (what ``auto``
            chose), None before: the ``backend`` value then.
    """
    values = {**{k: _plain(v) for k, v in current.items()},
              **{k: _plain(v) for k, v in changes.items()}}
    for name, value in changes.items():
        spec = SPEC_BY_NAME.get(name)
        if spec is not None and spec.choices and _plain(value) not in spec.choices:
            return f"{name} must be one of {', '.join(spec.choices)}, got '{value}'"
    if "device" in changes and not _DEVICE_RE.match(str(values["device"]).strip().lower()):
        return f"device must be auto, cpu, cuda or cuda:N, got '{values['device']}'"
    if "model" in changes and not str(values["model"]).strip():
        return "model must name a network, e.g. lmanet_erfnet"
    resized = [name for name in ("input_height", "input_width")
               if name in changes and name in current and values[name] != _plain(current[name])]
    running = running_backend or values.get("backend", "auto")
    if resized and running not in ("torch", "auto"):
        return (f"{resized[0]} cannot change while backend {running} runs: its graphs are "
                f"exported for one input size; restart the node with the new size (or with "
                f"backend torch to change it at run time)")
    if {"class_names", "palette"} & changes.keys():
        reason = _check_classes(list(values.get("class_names") or []),
                                [int(v) for v in values.get("palette") or []], num_classes)
        if reason:
            return reason
    if {"input_height", "input_width", "max_network_pixels"} & changes.keys():
        height, width = int(values.get("input_height") or 0), int(values.get("input_width") or 0)
        budget = int(values.get("max_network_pixels") or DEFAULT_MAX_NETWORK_PIXELS)
        if height > 0 and width > 0 and height * width > budget:
            return (f"network input {height}x{width} (input_height x input_width) = "
                    f"{height * width} pixels is over max_network_pixels {budget}: the network's "
                    f"memory grows with its input; lower the size or raise max_network_pixels")
    if "cameras" in changes:
        cameras = list(values.get("cameras") or [])
        for camera in cameras:
            if not _CAMERA_RE.match(camera):
                return (f"camera name '{camera}' is not a valid topic name token (letters, "
                        f"digits and '_', starting with a letter)")
        if len(set(cameras)) != len(cameras):
            return f"camera names must be unique, got {cameras}"
        if len(cameras) > MAX_CAMERAS:
            return f"at most {MAX_CAMERAS} cameras per node, got {len(cameras)}"
    return None


@dataclass(frozen=True)
class Settings:
    """A typed, immutable snapshot of every parameter (the worker reads one without locks)."""

    model: str = "lmanet_erfnet"
    checkpoint: str = ""
    device: str = "auto"
    precision: str = "fp32"
    backend: str = "auto"
    num_threads: int = 0
    input_height: int = 0
    input_width: int = 0
    max_network_pixels: int = DEFAULT_MAX_NETWORK_PIXELS
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    memory_length: int = 0
    memory_max_gap: float = 1.0
    memory_stride: int = 1
    class_names: tuple[str, ...] = CITYSCAPES_CLASS_NAMES
    palette: tuple[int, ...] = CITYSCAPES_PALETTE
    publish_labels: bool = True
    publish_color: bool = True
    publish_overlay: bool = True
    publish_confidence: bool = False
    overlay_alpha: float = 0.5
    input_transport: str = "raw"
    input_reliability: str = "best_effort"
    input_depth: int = 1
    processing_mode: str = "latest"
    cameras: tuple[str, ...] = field(default_factory=tuple)
    diagnostics_period: float = 1.0

    @staticmethod
    def attribute(name: str) -> str:
        """The attribute of a parameter name ('memory.max_gap' -> 'memory_max_gap')."""
        return name.replace(".", "_")

    def updated(self, values: Mapping[str, Any]) -> "Settings":
        """A copy with the parameters in ``values`` (parameter names) replaced."""
        kwargs = {}
        for name, value in values.items():
            if name not in SPEC_BY_NAME:
                continue
            value = _plain(value)
            if isinstance(value, list) or name == "cameras":
                value = tuple(value or ())
            kwargs[self.attribute(name)] = value
        return replace(self, **kwargs)

    def value(self, name: str) -> Any:
        """The value of parameter ``name`` (lists for arrays)."""
        value = getattr(self, self.attribute(name))
        return list(value) if isinstance(value, tuple) else value

    def as_dict(self) -> dict[str, Any]:
        """Parameter name -> value for every parameter of the table."""
        return {spec.name: self.value(spec.name) for spec in SPECS}

    @property
    def input_size(self) -> tuple[int, int]:
        """The network input (height, width) in pixels the parameters ask for: (0, 0) = not set,
        which is also what one of the two alone at 0 means (they are set one after the other)."""
        if self.input_height > 0 and self.input_width > 0:
            return (self.input_height, self.input_width)
        return (0, 0)

    @property
    def pipeline_input_size(self) -> tuple[int, int] | None:
        """:attr:`input_size` as the pipeline takes it: None when not set (the pipeline then uses
        the weights' trained size, else each frame's own)."""
        return self.input_size if self.input_size[0] else None
