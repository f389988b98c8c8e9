"""The node's /diagnostics statuses, built from the pipeline and camera snapshots (no node needed).

:func:`model_status`: one status for the model (weights, device, memory length and input size in
force, output delay in frames, read from the pipeline that holds them). :func:`camera_status`: one
per camera from a :class:`~lmanet_ros.node.stats.CameraSnapshot` (latency counted from the
arrival of the frame the labels belong to); its level is ERROR when frames failed in the
period, WARN for bad inputs, for a matched publisher whose images do not arrive
(:mod:`lmanet_ros.node.delivery`) or no input for :data:`NO_INPUT_WARN_S`, else OK.
"""
from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from lmanet_ros.node.delivery import Delivery
from lmanet_ros.node.stats import CameraSnapshot
from lmanet_ros.sizes import format_size

__all__ = ["NO_INPUT_WARN_S", "backend_text", "camera_status", "model_status",
           "size_text", "weights_text"]

#: Seconds without any input after which a camera's diagnostics turn WARN.
NO_INPUT_WARN_S = 5.0


def size_text(size: tuple[int, int]) -> str:
    """A network input (height, width) in words: ``'128x256'``, or (0, 0) ``each frame's size``."""
    return format_size(size) if size[0] else "each frame's size"


def backend_text(pipeline: Any) -> str:
    """The inference backend that runs the network and its version: ``'onnxruntime 1.32.0'``."""
    return f"{pipeline.backend} {pipeline.backend_version}"


def weights_text(pipeline: Any) -> str:
    """The weights in words: a packaged tag and its file, a checkpoint file, or random."""
    weights = pipeline.weights
    if weights is not None:
        return f"{weights.tag} weights of {weights.model} ({weights.file})"
    if pipeline.checkpoint_path is not None:
        return str(pipeline.checkpoint_path)
    return "a state_dict" if pipeline.load_report is not None else "random weights"


def _values(values: dict[str, Any]) -> list[KeyValue]:
    """Diagnostics key-values, every value as text."""
    return [KeyValue(key=key, value=str(value)) for key, value in values.items()]


def _mean_text(values: tuple[float, ...]) -> str:
    """The mean of milliseconds with one decimal ('' for none)."""
    return f"{sum(values) / len(values):.1f}" if values else ""


def _max_text(values: tuple[float, ...]) -> str:
    """The largest of milliseconds with one decimal ('' for none)."""
    return f"{max(values):.1f}" if values else ""


def model_status(name: str, pipeline: Any, *, checkpoint: str, processing_mode: str,
                 inferring_for_s: float | None, clock: str = "system") -> DiagnosticStatus:
    """The model's status ``'<name>: model'``; WARN while the weights are random.

    Args:
        name: the node's fully qualified name.
        pipeline: the :class:`~lmanet_ros.pipeline.SegmentationPipeline` (the values in force).
        checkpoint: the checkpoint parameter as given.
        processing_mode: ``latest`` or ``all``.
        inferring_for_s: seconds the inference in progress has run, None when idle.
        clock: the node's clock in words (``system``, ``sim time``, ``sim time, no /clock
            received``: then the status is WARN, as the stamps of the node's own messages are 0).
    """
    info = pipeline.info
    report = pipeline.load_report
    random = report is None  # nothing was loaded
    status = DiagnosticStatus(name=f"{name}: model", hardware_id=str(pipeline.device))
    status.level = DiagnosticStatus.WARN if random else DiagnosticStatus.OK
    status.message = "RANDOM WEIGHTS (no checkpoint)" if random else f"{info.name} ready"
    if "no /clock" in clock:
        status.level = DiagnosticStatus.WARN
        status.message += f"; {clock}"
    status.values = _values({
        "model": info.name, "checkpoint": checkpoint or "(none)",
        "checkpoint_id": pipeline.checkpoint_id, "weights": weights_text(pipeline),
        "checkpoint_sha256": (report.sha256 or "") if report is not None else "",
        "device": str(pipeline.device), "precision": pipeline.precision,
        "backend": backend_text(pipeline),
        "classes": len(pipeline.classes), "memory_length": pipeline.memory_length,
        "output_delay_frames": pipeline.output_delay_frames,
        "memory_max_gap_s": pipeline.policy.max_gap, "memory_stride": pipeline.policy.stride,
        "processing_mode": processing_mode, "input_size": size_text(pipeline.input_size),
        "normalisation": ("none (RGB in [0, 1])" if info.mean is None else
                          f"mean {info.mean} std {info.std}"),
        "attention": pipeline.attention,
        "inferring_for_s": "" if inferring_for_s is None else f"{inferring_for_s:.2f}",
        "clock": clock,
    })
    return status


def camera_status(name: str, camera: str, topic: str, snap: CameraSnapshot, *, queued: int,
                  memory_length: int, period: float, waited_s: float,
                  delivery: Delivery | None = None) -> DiagnosticStatus:
    """One camera's status ``'<name>: camera <camera>'``.

    Args:
        name: the node's fully qualified name.
        camera: the camera's stream name (``image`` for the single camera).
        topic: the input topic (also the hardware id).
        snap: the camera's counters of the period (see :meth:`CameraStats.roll`).
        queued: frames of the camera waiting for the worker now.
        memory_length: the memory length T in force (the pipeline's).
        period: the diagnostics period in seconds (for the rates).
        waited_s: seconds since the last input (or since the node was ready).
        delivery: whether a matched publisher's images arrive (None: not checked).
    """
    resets = snap.stream.resets
    values = {
        "topic": topic,
        "input_rate_hz": f"{snap.period_received / period:.2f}",
        "processed_rate_hz": f"{snap.period_processed / period:.2f}",
        "processing_ms_mean": _mean_text(snap.processing_ms),
        "processing_ms_max": _max_text(snap.processing_ms),
        "inference_ms_mean": _mean_text(snap.inference_ms),
        "latency_ms_mean": _mean_text(snap.latency_ms),
        "latency_ms_max": _max_text(snap.latency_ms),
        "input_delay_ms_mean": _mean_text(snap.input_delay_ms),
        "input_delay_ms_max": _max_text(snap.input_delay_ms),
        "frames_received": snap.received, "frames_processed": snap.processed,
        "drops": snap.dropped, "queued": queued,
        "bad_inputs": snap.bad_inputs, "last_bad_input": snap.last_bad_input,
        "frames_over_budget": snap.over_budget,
        "processing_errors": snap.errors, "last_error": snap.last_error,
        "duplicates": snap.stream.duplicates,
        "memory_fill": snap.stream.memory_fill,
        "memory_length": memory_length,
        "last_batch_size": snap.batch_size,
        "frames_batched": snap.batched,
        "frames_rendered": snap.rendered,
        "resets": sum(resets.values()),
        **{f"resets.{reason}": count for reason, count in sorted(resets.items())},
        "incompatible_qos_events": snap.incompatible_qos,
        "delivery": delivery.state if delivery is not None else "",
        "delivery_lost": delivery.lost if delivery is not None else "",
        "worker_cpu_s": "" if snap.worker_cpu_s is None else f"{snap.worker_cpu_s:.4f}",
    }
    status = DiagnosticStatus(name=f"{name}: camera {camera}", hardware_id=topic)
    status.values = _values(values)
    if snap.period_errors:
        status.level = DiagnosticStatus.ERROR
        status.message = f"{snap.period_errors} frame(s) failed: {snap.last_error}"
    elif snap.period_bad:
        status.level = DiagnosticStatus.WARN
        status.message = f"{snap.period_bad} bad input(s): {snap.last_bad_input}"
    elif delivery is not None and delivery.trouble:
        status.level = DiagnosticStatus.WARN
        status.message = f"{delivery.summary()} (DDS transport: see the log)"
    elif waited_s > NO_INPUT_WARN_S:
        status.level = DiagnosticStatus.WARN
        status.message = (f"no images on {topic} for {waited_s:.0f} s"
                          + (" (incompatible QoS: see the log)" if snap.incompatible_qos else ""))
    else:
        status.level = DiagnosticStatus.OK
        status.message = (f"{values['input_rate_hz']} Hz in, {values['processed_rate_hz']} Hz "
                          f"processed, memory {snap.stream.memory_fill}/{memory_length}")
    return status
