"""QoS of the node's topics and the words for QoS events (no node needed).

Outputs are reliable and volatile with a few messages of history; class metadata is latched
(transient local); the input's reliability and depth are parameters (:func:`input_qos`).
"""
from __future__ import annotations

from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from lmanet_ros.node.params import Settings

try:  # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

__all__ = ["LATCHED_QOS", "OUTPUT_QOS", "SERVICE_QOS", "PublisherEventCallbacks",
           "SubscriptionEventCallbacks",
           "incompatible_input_hint", "input_qos", "policy_name", "qos_text"]

#: Output QoS: reliable, a few messages of history for late or slow readers.
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
#: Class metadata: reliable and transient local (latched), so late subscribers get it.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         history=HistoryPolicy.KEEP_LAST)

#: Service requests (``~/reset_memory``...): reliable and keep-all, so a burst of requests is
#: queued, never overwritten in the reader's history (the ROS default keeps the last 10 only:
#: 100 requests sent at once got 10 answers).
SERVICE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_ALL)


def input_qos(settings: Settings) -> QoSProfile:
    """The input subscription's QoS: ``input.reliability``, ``input.depth`` (0 = keep all),
    volatile."""
    keep_all = settings.input_depth == 0
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST,
        depth=max(settings.input_depth, 1),
        reliability=(ReliabilityPolicy.RELIABLE if settings.input_reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.VOLATILE)


def qos_text(profile: QoSProfile) -> str:
    """A profile's reliability and history in words: 'best_effort, depth 1', 'reliable, keep
    all'."""
    history = "keep all" if profile.history == HistoryPolicy.KEEP_ALL else f"depth {profile.depth}"
    return f"{profile.reliability.name.lower()}, {history}"


def policy_name(kind: Any) -> str:
    """The name of a QoS policy kind (RELIABILITY, DURABILITY...) of a QoS event."""
    try:
        from rclpy.qos import QoSPolicyKind
        return QoSPolicyKind(kind).name
    except (ImportError, ValueError, TypeError):
        return str(getattr(kind, "name", kind))


def incompatible_input_hint(policy: str) -> str:
    """What to change when a publisher's QoS cannot feed the input subscription ('' if unknown)."""
    if "RELIABILITY" in policy:
        return (" The subscription is reliable and the publisher best effort: set "
                "input.reliability to best_effort.")
    if "DURABILITY" in policy:
        return " The publisher is volatile: subscriptions here are volatile too (check it)."
    return ""
