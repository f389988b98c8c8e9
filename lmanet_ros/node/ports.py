"""The ROS side of one camera: its input subscription, output publishers, reset service, counters.

A :class:`CameraPort` creates and destroys its endpoints on the node it is given and publishes a
frame's outputs (labels first, then confidence, then colour and overlay, rendered only while
somebody subscribes). Which ports exist, and the callbacks they call, are the node's business.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from lmanet_ros import imaging
from lmanet_ros.node import qos
from lmanet_ros.node.messages import image_message
from lmanet_ros.node.params import Settings
from lmanet_ros.node.stats import CameraStats

__all__ = ["OUTPUTS", "CameraPort", "subscribed"]

#: The image outputs of every camera (parameters ``publish.<output>``).
OUTPUTS = ("labels", "color", "overlay", "confidence")


def subscribed(publisher: Any) -> bool:
    """Whether ``publisher`` exists and somebody subscribes to it."""
    return publisher is not None and publisher.get_subscription_count() > 0


@dataclass
class CameraPort:
    """One camera's endpoints and counters.

    Attributes:
        name: the camera name ('' for the single camera on ``image``).
        key: the pipeline stream name (the camera name, or 'image').
        stats: the node's counters of this camera.
        group: the callback group of the subscription (one callback at a time per camera); a
            new one with each subscription (see :meth:`subscribe`).
        publishers: output name -> publisher (replaced whole, so the worker reads it unlocked).
    """

    name: str
    key: str
    stats: CameraStats = field(default_factory=CameraStats)
    group: MutuallyExclusiveCallbackGroup = field(default_factory=MutuallyExclusiveCallbackGroup)
    subscription: Any = None
    publishers: dict[str, Any] = field(default_factory=dict)
    reset_service: Any = None

    @property
    def input_topic(self) -> str:
        """Relative input topic of raw images."""
        return f"{self.name}/image" if self.name else "image"

    @property
    def topic_name(self) -> str:
        """The resolved input topic while subscribed, else the relative one."""
        return self.subscription.topic_name if self.subscription is not None else self.input_topic

    def input_text(self) -> str:
        """The input subscription in words: '/ns/image (sensor_msgs/Image, best_effort, depth
        1)'; the relative topic when there is no subscription (a managed node not active)."""
        subscription = self.subscription
        if subscription is None:
            return f"{self.input_topic} (no subscription while not active)"
        kind = subscription.msg_type
        return (f"{subscription.topic_name} ({kind.__module__.split('.')[0]}/{kind.__name__}, "
                f"{qos.qos_text(subscription.qos_profile)})")

    def output_topic(self, output: str) -> str:
        """Private output topic, e.g. ``~/front/labels``."""
        return f"~/{self.name}/{output}" if self.name else f"~/{output}"

    def subscribe(self, node: Node, settings: Settings, callback: Callable,
                  on_incompatible_qos: Callable) -> None:
        """(Re-)create the input subscription with the input parameters; ``callback(port, msg,
        ...)`` and ``on_incompatible_qos(port, event)`` get this port first."""
        self.unsubscribe(node)
        # A fresh group: rclpy leaves a mutually exclusive group busy for good when taking from an
        # entity of it raises (its executor's handler calls ending_execution only after a
        # successful take), which a subscription destroyed between the wait and the take does;
        # the new subscription must not inherit that.
        self.group = MutuallyExclusiveCallbackGroup()
        compressed = settings.input_transport == "compressed"
        events = qos.SubscriptionEventCallbacks(
            incompatible_qos=functools.partial(on_incompatible_qos, self))
        self.subscription = node.create_subscription(
            CompressedImage if compressed else Image,
            self.input_topic + ("/compressed" if compressed else ""),
            functools.partial(callback, self), qos.input_qos(settings),
            callback_group=self.group, event_callbacks=events)

    def unsubscribe(self, node: Node) -> None:
        """Destroy the input subscription (if any): no more frames of this camera."""
        if self.subscription is not None:
            node.destroy_subscription(self.subscription)
            self.subscription = None

    def ensure_publishers(self, create: Callable[..., Any], settings: Settings,
                          on_incompatible_qos: Callable) -> None:
        """Create the publishers of enabled outputs (kept once created) with ``create``
        (``Node.create_publisher``'s signature); ``on_incompatible_qos(output, event)``."""
        publishers = dict(self.publishers)
        for output in OUTPUTS:
            if output not in publishers and getattr(settings, f"publish_{output}"):
                events = qos.PublisherEventCallbacks(
                    incompatible_qos=functools.partial(on_incompatible_qos, output))
                publishers[output] = create(
                    Image, self.output_topic(output), qos.OUTPUT_QOS, event_callbacks=events)
        self.publishers = publishers

    def close(self, node: Node) -> None:
        """Destroy the subscription, publishers and reset service."""
        self.unsubscribe(node)
        for publisher in self.publishers.values():
            node.destroy_publisher(publisher)
        if self.reset_service is not None:
            node.destroy_service(self.reset_service)

    def publish(self, header: Any, image: np.ndarray, result: Any, settings: Settings,
                colors: np.ndarray) -> None:
        """Publish the outputs of one labelled frame with ``header`` copied.

        Args:
            header: the header of the labelled frame's input message (``result.source``'s: the
                frame processed, or the previous one for a delayed model).
            image: that frame's decoded input, (H, W, 3) uint8 RGB (the overlay's background).
            result: the :class:`~lmanet_ros.pipeline.Result` (labels (H, W) uint8 ids; its
                ``color`` and ``overlay``, when the pipeline rendered them, are published as
                they are, else rendered here).
            settings: the parameters (which outputs, overlay alpha).
            colors: (K, 3) uint8 class colours.
        """
        publishers = self.publishers
        labels_pub = publishers.get("labels")
        if settings.publish_labels and labels_pub is not None:
            labels_pub.publish(image_message(header, result.labels, "mono8"))
        confidence_pub = publishers.get("confidence")
        if settings.publish_confidence and confidence_pub is not None and \
                result.confidence is not None:
            confidence_pub.publish(image_message(
                header, imaging.confidence_to_mono8(result.confidence), "mono8"))
        color_pub = publishers.get("color") if settings.publish_color else None
        overlay_pub = publishers.get("overlay") if settings.publish_overlay else None
        want_color, want_overlay = subscribed(color_pub), subscribed(overlay_pub)
        if want_color or want_overlay:
            self.stats.on_rendered()
            color, blended = result.color, result.overlay  # rendered by the pipeline if asked
            if color is None and (want_color or blended is None):
                color = imaging.colorize(result.labels, colors)
            if want_color:
                color_pub.publish(image_message(header, color, "rgb8"))
            if want_overlay:
                if blended is None:
                    blended = imaging.overlay(image, color, settings.overlay_alpha)
                overlay_pub.publish(image_message(header, blended, "rgb8"))
