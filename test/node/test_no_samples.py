"""A publisher matched on the input topic whose images do not arrive: lmanet_ros.node.delivery's
states and warning (no ROS), and lmanet_node's warning and diagnostics over real DDS."""
from __future__ import annotations

import pytest

from lmanet_ros.node.delivery import SILENT_AFTER_S, WARN_EVERY_S, Delivery, DeliveryWatch, advice


def test_no_publisher_then_matched_without_samples():
    watch = DeliveryWatch()
    assert watch.update(0.0, 0).state == "no_publisher"
    assert watch.update(1.0, 1).state == "ok"  # matched just now
    silent = watch.update(1.0 + SILENT_AFTER_S, 1)
    assert (silent.state, silent.warn, silent.trouble) == ("no_samples", True, True)
    assert "matched for 5 s but no image arrived" in silent.summary()
    again = watch.update(2.0 + SILENT_AFTER_S, 1)
    assert again.state == "no_samples" and not again.warn  # once per episode


def test_samples_end_the_episode_and_warnings_are_throttled():
    watch = DeliveryWatch()
    watch.update(0.0, 1)
    assert watch.update(SILENT_AFTER_S, 1).warn
    watch.on_sample(1)
    assert watch.update(SILENT_AFTER_S + 1, 1).state == "ok"
    watch.update(SILENT_AFTER_S + 2, 0)  # the publisher left
    watch.update(SILENT_AFTER_S + 3, 1)  # a new match, silent again
    soon = watch.update(2 * SILENT_AFTER_S + 3, 1)
    assert soon.state == "no_samples" and not soon.warn  # within WARN_EVERY_S of the last
    watch.update(WARN_EVERY_S + 20, 0)
    watch.update(WARN_EVERY_S + 21, 1)
    assert watch.update(WARN_EVERY_S + 21 + SILENT_AFTER_S, 1).warn


def test_sequence_gaps_mean_losing():
    watch = DeliveryWatch()
    watch.update(0.0, 1)
    for sequence in (1, 2, 3, 4, 5):
        watch.on_sample(sequence)
    assert watch.update(1.0, 1).state == "ok"
    for sequence in (9, 14, 15):  # 3 + 4 skipped, 3 received
        watch.on_sample(sequence)
    losing = watch.update(2.0, 1)
    assert (losing.state, losing.warn, losing.lost, losing.received) == ("losing", True, 7, 8)
    assert "7 skipped, 8 received" in losing.summary()
    for sequence in (16, 17, 18, 19, 20):
        watch.on_sample(sequence)
    assert watch.update(3.0, 1).state == "ok"


def test_sequence_numbers_of_several_publishers_are_not_gaps():
    watch = DeliveryWatch()
    watch.update(0.0, 2)
    for sequence in (1, 500, 2, 501, 3, 502):
        watch.on_sample(sequence)
    assert watch.update(1.0, 2).state == "ok"
    for sequence in (1, 2, 3):  # no sequence number (Humble): no gaps either
        watch.on_sample(None)
    assert watch.update(2.0, 1).state == "ok"


def test_advice_says_what_to_do():
    text = advice("/camera/image_raw", Delivery("no_samples", 1, 0, 0, 6.0),
                  "/opt/share/lmanet_ros/config/fastdds_shm_udp.xml")
    assert text.startswith("/camera/image_raw: 1 publisher(s) matched for 6 s")
    for words in ("FASTDDS_DEFAULT_PROFILES_FILE=/opt/share/lmanet_ros/config/fastdds_shm_udp.xml",
                  "camera driver", "input.transport compressed", "sysctl net.core.rmem_max"):
        assert words in text


def test_camera_status_warns_on_trouble():
    from diagnostic_msgs.msg import DiagnosticStatus

    from lmanet_ros.node.diagnostics import camera_status
    from lmanet_ros.node.stats import CameraStats
    snap = CameraStats().roll()
    status = camera_status("/lmanet", "image", "/image", snap, queued=0, memory_length=4,
                           period=1.0, waited_s=8.0,
                           delivery=Delivery("no_samples", 1, 0, 0, 8.0))
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.WARN and values["delivery"] == "no_samples"
    assert "no image arrived (DDS transport: see the log)" in status.message


@pytest.mark.ros
def test_node_warns_when_a_matched_publisher_sends_nothing(ros, node_factory):
    """A publisher matched on the input topic that never publishes: deterministic 'no samples'
    (what large best-effort images over Fast DDS's defaults look like to the node)."""
    from ros_helpers import Rig
    node = node_factory(params={"diagnostics_period": 0.5})
    rig = Rig(ros, node, outputs=())
    try:
        log = node.wait_log("no image arrived", timeout=SILENT_AFTER_S + 15.0)
        assert "FASTDDS_DEFAULT_PROFILES_FILE=" in log and "fastdds_shm_udp.xml" in log
        assert "input.transport compressed" in log and "net.core.rmem_max" in log
        status, values = rig.status(lambda v: v["delivery"] == "no_samples")
        assert "no image arrived" in status.message
        assert node.log().count("no image arrived") == 1  # once
    finally:
        ros.node.destroy_publisher(rig.pub)
        ros.unsubscribe(rig.diagnostics)
