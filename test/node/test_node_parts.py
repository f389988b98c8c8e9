"""The node's parts without a node: per-camera counters and their snapshot, the diagnostics
statuses built from snapshots and a pipeline, the log throttle."""
from __future__ import annotations

import dataclasses
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from lmanet_ros.node.diagnostics import (NO_INPUT_WARN_S, camera_status, model_status,
                                         size_text)
from lmanet_ros.node.stats import CameraSnapshot, CameraStats
from lmanet_ros.node.throttle import Throttle
from lmanet_ros.streams import StreamStats


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_camera_stats_snapshot_is_frozen_and_the_period_restarts():
    stats = CameraStats()
    stats.on_received(10.0, input_delay_ms=2.0)
    stats.on_received(10.1)
    stats.on_dropped(1)
    stats.on_bad_input("bad encoding")
    stream = StreamStats(processed=1, duplicates=1, stored=1, memory_fill=1,
                         resets={"gap": 2})
    stats.on_processed(batch_size=2, inference_ms=5.0, processing_ms=7.0, latency_ms=9.0,
                       stream=stream)
    stats.on_rendered()
    stats.on_incompatible_qos()
    snap = stats.roll()
    assert (snap.received, snap.dropped, snap.processed, snap.bad_inputs) == (2, 1, 1, 1)
    assert (snap.batch_size, snap.batched, snap.rendered, snap.incompatible_qos) == (2, 1, 1, 1)
    assert snap.last_received == 10.1 and snap.last_bad_input == "bad encoding"
    assert (snap.period_received, snap.period_processed, snap.period_bad) == (2, 1, 1)
    assert snap.input_delay_ms == (2.0,) and snap.latency_ms == (9.0,)
    assert snap.stream is stream  # duplicates, memory fill, resets: the pipeline's counters
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.received = 0
    again = stats.roll()
    assert again.received == 2 and again.period_received == 0 and again.latency_ms == ()
    assert again.stream is stream  # until the next processed frame
    assert CameraStats().roll().stream == StreamStats()


def _camera(snap: CameraSnapshot, waited_s: float = 0.0) -> DiagnosticStatus:
    return camera_status("/ns/lmanet", "front", "/ns/front/image", snap, queued=1,
                         memory_length=4, period=0.5, waited_s=waited_s)


def test_camera_status_values_come_from_the_snapshot():
    snap = CameraSnapshot(received=10, processed=8, dropped=2, period_received=5,
                          period_processed=4, processing_ms=(2.0, 4.0), latency_ms=(3.0,),
                          stream=StreamStats(duplicates=3, memory_fill=2,
                                             resets={"gap": 1, "request": 2}))
    status = _camera(snap)
    values = _values(status)
    assert status.name == "/ns/lmanet: camera front" and status.hardware_id == "/ns/front/image"
    assert values["input_rate_hz"] == "10.00" and values["processed_rate_hz"] == "8.00"
    assert values["processing_ms_mean"] == "3.0" and values["processing_ms_max"] == "4.0"
    assert values["inference_ms_mean"] == "" and values["queued"] == "1"
    assert (values["duplicates"], values["memory_fill"], values["memory_length"]) == \
        ("3", "2", "4")
    assert (values["resets"], values["resets.gap"], values["resets.request"]) == ("3", "1", "2")
    assert status.level == DiagnosticStatus.OK and "memory 2/4" in status.message


@pytest.mark.parametrize("snap, waited, level, words", [
    (CameraSnapshot(period_errors=1, last_error="RuntimeError: boom"), 0.0,
     DiagnosticStatus.ERROR, "1 frame(s) failed: RuntimeError: boom"),
    (CameraSnapshot(period_bad=2, last_bad_input="step too short"), 0.0,
     DiagnosticStatus.WARN, "2 bad input(s): step too short"),
    (CameraSnapshot(incompatible_qos=1), NO_INPUT_WARN_S + 1,
     DiagnosticStatus.WARN, "(incompatible QoS: see the log)"),
])
def test_camera_status_levels(snap, waited, level, words):
    status = _camera(snap, waited)
    assert status.level == level and words in status.message, status.message


def test_model_status_reads_the_pipeline():
    from lmanet_ros.models import build_model
    from lmanet_ros.pipeline import SegmentationPipeline

    pipeline = SegmentationPipeline(build_model("lmanet_erfnet"), device="cpu",
                                    input_size=(64, 128), memory_length=2)
    status = model_status("/lmanet", pipeline, checkpoint="", processing_mode="all",
                          inferring_for_s=1.234)
    values = _values(status)
    assert status.level == DiagnosticStatus.WARN and "RANDOM WEIGHTS" in status.message
    assert (values["memory_length"], values["input_size"]) == ("2", "64x128")
    assert (values["checkpoint"], values["checkpoint_id"]) == ("(none)", "random-init")
    assert values["processing_mode"] == "all" and values["inferring_for_s"] == "1.23"
    assert values["memory_max_gap_s"] == "1.0" and values["memory_stride"] == "1"
    assert size_text((0, 0)) == "each frame's size"


def test_throttle_holds_back_and_counts():
    throttle = Throttle(0.2)
    assert throttle.allow("a") == 0
    assert throttle.allow("a") is None and throttle.allow("a") is None
    assert throttle.allow("b") == 0  # keys are independent
    time.sleep(0.25)
    assert throttle.allow("a") == 2  # two held back since the last line
