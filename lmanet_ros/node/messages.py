"""The messages the node takes and publishes, to and from arrays and the pipeline (no node needed).

- :func:`decode`: an input Image or CompressedImage as an RGB array;
- :func:`image_message`: a sensor_msgs/Image of a uint8 array with the input header copied;
- :func:`label_info_message`: lmanet_ros/LabelInfo (model, checkpoint id, memory length in force,
  classes), where the package's messages are built (:data:`LabelInfo` is None otherwise);
- :func:`vision_label_info_message`: vision_msgs/LabelInfo where vision_msgs is installed
  (:data:`VisionLabelInfo` is None otherwise).
"""
from __future__ import annotations

import array
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from lmanet_ros import imaging
from lmanet_ros.classes import ClassSet

try:  # generated from msg/ by colcon; absent on a machine that only has the Python sources
    from lmanet_ros.msg import ClassInfo, LabelInfo
except ImportError:  # pragma: no cover - depends on the installation
    ClassInfo = LabelInfo = None

try:  # robots with vision_msgs installed
    from vision_msgs.msg import LabelInfo as VisionLabelInfo
    from vision_msgs.msg import VisionClass
except ImportError:
    VisionLabelInfo = VisionClass = None

__all__ = ["LabelInfo", "VisionLabelInfo", "decode", "image_message", "label_info_message",
           "vision_label_info_message"]


def decode(msg: Image | CompressedImage) -> np.ndarray:
    """An input message as (H, W, 3) uint8 RGB.

    Raises:
        imaging.ImageError: (a ValueError) the message cannot be decoded; the reason in words.
    """
    if isinstance(msg, CompressedImage):
        return imaging.decode_compressed(msg.format, msg.data)
    return imaging.decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                bool(msg.is_bigendian))


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
