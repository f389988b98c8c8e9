"""The node's start-up of the model: cheap checks first, then one
:meth:`SegmentationPipeline.from_pretrained`, the classes in force, the warm-up.

Every failure is a :class:`StartupError` with a one-line reason fit for the user (the node logs
it and exits 1). Torch is imported on first use, so a malformed command line fails fast.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from lmanet_ros.classes import ClassSet
from lmanet_ros.node.diagnostics import backend_text, size_text, weights_text
from lmanet_ros.node.params import Settings, is_default_classes, validate
from lmanet_ros.streams import MemoryPolicy
from lmanet_ros.threads import cpu_threads_warning

if TYPE_CHECKING:
    from lmanet_ros.pipeline import SegmentationPipeline

__all__ = ["StartupError", "WARMUP_SIZE", "load_pipeline", "memory_policy", "one_line",
           "resolve_classes", "warm_up"]

#: Warm-up size when the network input size is not fixed (first-call costs do not depend much
#: on the size; a small one keeps start-up short on a CPU).
WARMUP_SIZE = (64, 128)


class StartupError(RuntimeError):
    """The node cannot start as configured; the message is one line, fit for the user."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def memory_policy(settings: Settings) -> MemoryPolicy:
    """The gap and stride rules of ``memory.max_gap`` (seconds) and ``memory.stride``."""
    return MemoryPolicy(max_gap=settings.memory_max_gap, stride=settings.memory_stride)


def _checkpoint_argument(settings: Settings) -> str | None:
    """The checkpoint parameter for the loader: None (random), a weights tag, or the path of a
    readable regular file (``~`` expanded; a directory, ``/dev/zero``, a FIFO, an empty or
    unreadable file is refused saying what it is: :func:`~lmanet_ros.models.checkpoint.
    checkpoint_file`)."""
    from lmanet_ros.models.checkpoint import CheckpointError, checkpoint_file
    from lmanet_ros.models.weights import weights_tags

    value = settings.checkpoint.strip()
    if not value or value in weights_tags():
        return value or None
    try:
        return str(checkpoint_file(value))
    except FileNotFoundError:
        raise StartupError(f"checkpoint not found: '{os.path.expanduser(value)}' "
                           f"(parameter checkpoint)") from None
    except CheckpointError as exc:
        raise StartupError(f"{one_line(exc)} (parameter checkpoint)") from None


def load_pipeline(settings: Settings, log: Any) -> "SegmentationPipeline":
    """Check model, device and checkpoint file, load the pipeline, log what is in force.

    ``memory.length`` 0 means "not given" and an unset input size is passed as None: the
    pipeline takes the checkpoint metadata's values, else the model's own T and each frame's own
    size. ``backend`` onnxruntime or openvino runs the exported graphs (exported on the first
    start with a checkpoint, input size and memory length, then cached: see
    :meth:`SegmentationPipeline.from_pretrained`); its missing package is a StartupError.

    Args:
        settings: the parameters.
        log: the node's logger (``info``, ``warning``).

    Raises:
        StartupError: unknown model, absent device, missing checkpoint, a load failure, a
        backend that cannot run (package missing, not the CPU, not fp32, no input size).
    """
    from lmanet_ros.devices import DeviceError, resolve_device
    from lmanet_ros.models import list_models
    from lmanet_ros.pipeline import SegmentationPipeline

    if settings.model not in list_models():
        raise StartupError(f"unknown model '{settings.model}'; known models: "
                           f"{', '.join(list_models())}")
    try:  # an absent device fails before anything is loaded (a graph backend's: the pipeline's)
        if settings.backend in ("torch", "auto"):
            resolve_device(settings.device)
    except DeviceError as exc:
        raise StartupError(one_line(exc)) from None
    checkpoint = _checkpoint_argument(settings)
    start = time.monotonic()
    try:
        pipeline = SegmentationPipeline.from_pretrained(
            settings.model, checkpoint, device=settings.device, precision=settings.precision,
            num_threads=settings.num_threads, input_size=settings.pipeline_input_size,
            memory_length=settings.memory_length, policy=memory_policy(settings),
            backend=settings.backend)
    except FileNotFoundError as exc:  # a weights tag the model does not have
        raise StartupError(f"{one_line(exc)} (parameter checkpoint)") from None
    except Exception as exc:  # the loader's errors name the problem; no traceback
        # ValueError (CheckpointError), RuntimeError (PipelineError), OSError speak for
        # themselves; anything else (a pickle failing on a file that is no checkpoint) gets
        # its type named.
        known = isinstance(exc, (ValueError, RuntimeError, OSError))
        raise StartupError(f"cannot load {settings.model}"
                           + (f" from '{checkpoint}'" if checkpoint else "") + ": "
                           + ("" if known else f"{type(exc).__name__}: ") + one_line(exc)
                           ) from None
    height, width = pipeline.input_size
    if height * width > settings.max_network_pixels:  # a trained size from the metadata
        raise StartupError(f"network input {height}x{width} (the checkpoint's trained size) = "
                           f"{height * width} pixels is over max_network_pixels "
                           f"{settings.max_network_pixels}: set input_height/input_width or "
                           f"raise max_network_pixels")
    _log_loaded(pipeline, settings, log, time.monotonic() - start)
    return pipeline


def _log_loaded(pipeline: "SegmentationPipeline", settings: Settings, log: Any,
                seconds: float) -> None:
    """Say which backend, weights, input size and memory length are in force, and where each
    came from."""
    info, report = pipeline.info, pipeline.load_report
    origin = pipeline.memory_length_origin.replace("explicit", "memory.length")
    memory = (f"memory {pipeline.memory_length} frames ({origin}), memory attention "
              f"{pipeline.attention}") if info.temporal else "single frame"
    size = size_text(pipeline.input_size) + (
        " (input_height/input_width)" if settings.input_size[0] else
        " (trained size, checkpoint metadata)" if pipeline.input_size[0] else "")
    chosen = f"; {pipeline.backend_reason}" if pipeline.backend_reason else ""
    log.info(f"loaded {info.name} on {pipeline.device} ({settings.precision}, backend "
             f"{backend_text(pipeline)}{chosen}) in {seconds:.1f} s: "
             f"{weights_text(pipeline)}, checkpoint id {pipeline.checkpoint_id}, "
             f"{info.num_classes} outputs, network input {size}, {memory}, "
             f"{torch_threads()} CPU thread(s)")
    clamped = cpu_threads_warning(settings.num_threads)
    if clamped:
        log.warning(clamped)
    graphs = getattr(pipeline.model, "graphs", None)  # a graph backend's (runtime.CachedGraphs)
    if graphs is not None:
        how = (f"{len(graphs.exported)} exported now" if graphs.exported else
               "all from the graph cache")
        what = ("one per memory fill level" if graphs.layout == "fill" else
                "split around the memory attention")
        log.info(f"{pipeline.backend} runs {len(graphs.paths)} graph(s), {what} ({how}): "
                 f"{graphs.folder}")
    _log_training(pipeline, log)
    if pipeline.output_delay_frames:
        log.info(f"{info.name} labels each frame {pipeline.output_delay_frames} frame(s) late: "
                 "the labels are published with the header of the frame they belong to, "
                 "latency one frame period + compute")
    if report is None:
        log.warning("checkpoint is empty: the network runs with RANDOM WEIGHTS and its labels "
                    "are noise. Set the checkpoint parameter (e.g. checkpoint:="
                    "/path/lmanet_erf_best.pth, or checkpoint:=demo) for real use.")
        return
    log.info(f"checkpoint: {report.summary()}")
    for what in ("initialised", "missing", "unexpected", "ignored"):
        keys = getattr(report, what)
        if keys:
            log.warning(f"checkpoint: {len(keys)} {what} "
                        f"{'part' if what == 'initialised' else 'key'}(s): "
                        f"{', '.join(list(keys)[:6])}{' ...' if len(keys) > 6 else ''}")


def torch_threads() -> int:
    """PyTorch's intra-op CPU threads now."""
    import torch

    return torch.get_num_threads()


def _log_training(pipeline: "SegmentationPipeline", log: Any) -> None:
    """Say what the weights were trained on, and warn where the input size in force is not it."""
    from lmanet_ros.models.weights import training_summary

    if pipeline.load_report is None:
        return
    record = pipeline.weights
    trained = pipeline.trained_size or (record.input_size if record is not None else None)
    about = f"{record.description}; " if record is not None and record.description else ""
    log.info(f"weights: {about}trained on {training_summary(pipeline.metadata, record)}")
    if record is not None and record.tag == "demo":
        log.info("demo weights know synthetic streets only: on a real camera expect road, sky "
                 "and vegetation roughly right and little else; train on your own data for use")
    if trained is None:
        log.warning("the checkpoint does not say the input size it was trained at: each frame "
                    "runs at its own size; set input_height/input_width to the training size "
                    "(labels are often wrong at another scale)")
    elif pipeline.input_size[0] and tuple(pipeline.input_size) != tuple(trained):
        log.warning(f"network input {size_text(pipeline.input_size)} (input_height/"
                    f"input_width) differs from the {size_text(trained)} the weights were "
                    "trained at: labels are often wrong at another scale; set both to 0 to use "
                    "the trained size")


def resolve_classes(pipeline: "SegmentationPipeline", settings: Settings, log: Any) -> ClassSet:
    """Set the pipeline's classes: explicit parameters > checkpoint metadata > Cityscapes.

    Returns:
        the classes in force (the node shows them as its class_names/palette parameters).

    Raises:
        StartupError: explicit classes that do not fit the model.
    """
    from_checkpoint = pipeline.classes  # the checkpoint's, or the Cityscapes default
    outputs = pipeline.info.num_classes
    if is_default_classes(settings.class_names, settings.palette):
        classes = from_checkpoint
        if classes != ClassSet.cityscapes():
            log.info(f"classes from the checkpoint's metadata: {len(classes)} classes "
                     f"({', '.join(classes.names[:4])}, ...)")
    else:
        reason = validate({"class_names": list(settings.class_names)}, settings.as_dict(),
                          num_classes=outputs)
        if reason:
            raise StartupError(f"invalid parameters: {reason}")
        classes = ClassSet.from_flat(settings.class_names, settings.palette)
        if from_checkpoint not in (classes, ClassSet.cityscapes()):
            log.warning("class_names/palette parameters differ from the class metadata stored "
                        "in the checkpoint; the parameters win")
    if len(classes) > outputs:
        raise StartupError(f"{len(classes)} classes but {pipeline.info.name} has {outputs} "
                           f"outputs")
    pipeline.set_classes(classes)
    return classes


def warm_up(pipeline: "SegmentationPipeline", log: Any) -> None:
    """Run the network once at the input size in force (:data:`WARMUP_SIZE` when it is each
    frame's own), so that the first camera frame does not pay the first-call costs."""
    height, width = pipeline.input_size if pipeline.input_size[0] else WARMUP_SIZE
    start = time.monotonic()
    try:
        pipeline.warmup(height, width)
    except Exception as exc:
        raise StartupError(f"warm-up of {pipeline.info.name} at {height}x{width} failed: "
                           f"{one_line(exc)}") from None
    log.info(f"warmed up at {height}x{width} in {time.monotonic() - start:.1f} s")
