"""The messages the node takes and publishes, to and from arrays and the pipeline (no node needed).

- :func:`decode`: an input Image or CompressedImage as an RGB array, within a
  :class:`FrameBudget` (``max_frame_pixels``, ``max_network_pixels``) checked against the
  message's header before anything is decoded: a frame over budget raises
  :class:`~lmanet_ros.imaging.ImageTooLarge` with the parameter that refused it;
- :func:`image_message`: a sensor_msgs/Image of a uint8 array with the input header copied;
- :func:`label_info_message`: lmanet_ros/LabelInfo (model, checkpoint id, memory length in force,
  classes), where the package's messages are built (:data:`LabelInfo` is None otherwise);
- :func:`vision_label_info_message`: vision_msgs/LabelInfo where vision_msgs is installed
  (:data:`VisionLabelInfo` is None otherwise).
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from lmanet_ros import imaging
from lmanet_ros.classes import ClassSet
from lmanet_ros.imaging import ImageTooLarge

try:  # generated from msg/ by colcon; absent on a machine that only has the Python sources
    from lmanet_ros.msg import ClassInfo, LabelInfo
except ImportError:  # pragma: no cover - depends on the installation
    ClassInfo = LabelInfo = None

try:  # robots with vision_msgs installed
    from vision_msgs.msg import LabelInfo as VisionLabelInfo
    from vision_msgs.msg import VisionClass
except ImportError:
    VisionLabelInfo = VisionClass = None

__all__ = ["FrameBudget", "ImageTooLarge", "LabelInfo", "VisionLabelInfo", "decode",
           "image_message", "label_info_message", "vision_label_info_message"]


def _size(height: int, width: int) -> str:
    """A frame's size as imaging words it, width first: 'WxH (N pixels)'."""
    return f"{width}x{height} ({width * height} pixels)"


@dataclass(frozen=True)
class FrameBudget:
    """What one frame may cost, in pixels, checked before it is decoded.

    Attributes:
        max_frame_pixels: the largest frame (width * height) decoded (parameter
            ``max_frame_pixels``); decoding and the outputs at the frame's size cost memory in
            proportion to it.
        max_network_pixels: the largest network input (height * width; parameter
            ``max_network_pixels``): the network's activations grow with it. Where the network
            runs at each frame's own size (``network_size`` (0, 0)) it bounds the frame too.
        network_size: the network input (height, width) in force, (0, 0): each frame's own.
    """

    max_frame_pixels: int = imaging.MAX_PIXELS
    max_network_pixels: int = imaging.MAX_PIXELS
    network_size: tuple[int, int] = (0, 0)

    @classmethod
    def of(cls, settings: Any, network_size: tuple[int, int]) -> "FrameBudget":
        """The budget of the node's :class:`~lmanet_ros.node.params.Settings` and the network
        input size in force (the pipeline's ``input_size``)."""
        return cls(settings.max_frame_pixels, settings.max_network_pixels,
                   (int(network_size[0]), int(network_size[1])))

    def frame_limit(self) -> int:
        """The most pixels a frame may have."""
        if self.network_size[0]:
            return self.max_frame_pixels
        return min(self.max_frame_pixels, self.max_network_pixels)

    def check_network(self) -> None:
        """ImageTooLarge when the fixed network input itself is over ``max_network_pixels``
        (a size from checkpoint metadata, or the budget lowered at run time)."""
        height, width = self.network_size
        if height * width > self.max_network_pixels:
            raise ImageTooLarge(
                f"network input {height}x{width} (height x width, {height * width} pixels) "
                f"is over max_network_pixels "
                f"{self.max_network_pixels}: frame refused (lower input_height/input_width or "
                f"raise max_network_pixels)", width=width, height=height,
                limit=self.max_network_pixels)

    def refusal(self, exc: ImageTooLarge) -> ImageTooLarge:
        """``exc`` (raised under :meth:`frame_limit`) reworded to name the parameter that
        refused the frame and what to change."""
        size = _size(exc.height, exc.width)
        if self.network_size[0] or self.max_frame_pixels <= self.max_network_pixels:
            reason = (f"frame {size} is over max_frame_pixels {self.max_frame_pixels}: refused "
                      f"before decoding (raise max_frame_pixels to accept such frames)")
        else:
            reason = (f"frame {size} is over max_network_pixels {self.max_network_pixels} and "
                      f"the network runs at each frame's own size: refused before decoding "
                      f"(set input_height/input_width to resize, or raise max_network_pixels)")
        return ImageTooLarge(reason, width=exc.width, height=exc.height, limit=exc.limit)


def decode(msg: Image | CompressedImage, budget: FrameBudget = FrameBudget()) -> np.ndarray:
    """An input message as (H, W, 3) uint8 RGB, refused before decoding when over ``budget``
    (the raw header's or the PNG/JPEG header's width and height).

    Raises:
        imaging.ImageTooLarge: the frame (or the network input) is over ``budget``; the reason
            names the parameter.
        imaging.ImageError: (a ValueError) the message cannot be decoded; the reason in words.
    """
    budget.check_network()
    limit = budget.frame_limit()
    try:
        if isinstance(msg, CompressedImage):
            return imaging.decode_compressed(msg.format, msg.data, max_pixels=limit)
        return imaging.decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                    bool(msg.is_bigendian), max_pixels=limit)
    except ImageTooLarge as exc:
        if exc.width * exc.height <= limit:  # over imaging.MAX_DIMENSION per side: as it is
            raise
        raise budget.refusal(exc) from None


def image_message(header: Any, pixels: np.ndarray, encoding: str) -> Image:
    """A sensor_msgs/Image of ``pixels`` ((H, W) or (H, W, C) uint8) with ``header`` copied.

    The bytes are copied once into an ``array.array('B')``, which every distribution's
    generated setter accepts without checking element by element (Humble checks ``bytes``).
    """
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    data = array.array("B")
    data.frombytes(pixels.data.cast("B"))
    msg.data = data
    return msg


def label_info_message(stamp: Any, model_name: str, checkpoint_id: str, memory_length: int,
                       classes: ClassSet, output_delay_frames: int = 0) -> Any:
    """lmanet_ros/LabelInfo: ids 0..K-1 with names and colours; ``memory_length`` the T in force
    (0 for a single-frame model); ``output_delay_frames`` how many frames late labels come (1
    for the delayed STF forms). Requires the built messages (:data:`LabelInfo` not None)."""
    msg = LabelInfo()
    msg.header.stamp = stamp
    msg.model_name = model_name
    msg.checkpoint_id = checkpoint_id
    msg.memory_length = memory_length
    msg.output_delay_frames = output_delay_frames
    msg.classes = [ClassInfo(id=index, name=name, r=int(rgb[0]), g=int(rgb[1]), b=int(rgb[2]))
                   for index, (name, rgb) in enumerate(zip(classes.names, classes.colors))]
    return msg


def vision_label_info_message(stamp: Any, classes: ClassSet) -> Any:
    """vision_msgs/LabelInfo of the class names (requires :data:`VisionLabelInfo` not None)."""
    msg = VisionLabelInfo()
    msg.header.stamp = stamp
    msg.class_map = [VisionClass(class_id=index, class_name=name)
                     for index, name in enumerate(classes.names)]
    return msg
