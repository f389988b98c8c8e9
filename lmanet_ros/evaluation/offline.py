"""Offline evaluation: every frame of a bag through the pipeline, scored, reported.

The bag is read with :mod:`lmanet_ros.bags` (one reader for the whole run: checked, planned,
then paired with :func:`lmanet_ros.bags.pair_images_and_labels`) and every image frame of the
chosen topics goes, in recorded order, through :class:`lmanet_ros.pipeline.SegmentationPipeline`
with the node's memory rules (one memory per camera topic, reset on time going back, gaps, size
or frame_id changes). Each image is decoded once and shared by every model of the comparison.
The memory length and input size in force are the pipeline's (given, else from the checkpoint's
metadata, else the model's own) and are reported as such, as is the backend that ran the networks
(``EvalOptions.backend``: ``parameters.backend`` and each model's ``backend`` in metrics.json).

Everything per frame (scores, corruption groups, output bag, videos) goes by the frame the labels
belong to (:mod:`.alignment`): a delayed model (``output_delay_frames`` 1 in metrics.json) is
scored against the ground truth of the frame its labels are for, one frame before the frame
processed; the last frame before each reset, and the bag's last, get no labels from it (its
``frames`` count is lower). The corruption groups and the comparison video take the frames every
model labelled.

Writes to ``options.out``: ``metrics.json``, ``report.md``, ``report.html``, the plots and
``overlay.mp4`` (input | overlay, first model; one H.264 video per camera topic); with several
models also ``comparison.mp4`` (input | each model's overlay, captioned, hit frames tagged with
their corruption kinds when the bag has a corruption log; one per camera topic;
``EvalOptions.comparison_video``);
``output_bag`` adds a rosbag2 with labels (mono8), colour and overlay (rgb8) topics per image
topic and model, with the input's header stamps and recording times. Ctrl-C stops after the
current frame and writes everything for the frames done, flagged ``"partial": true``.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmanet_ros.bags import BagError, BagReader, ImageRecord, ReadStats, pair_images_and_labels
from lmanet_ros.classes import LABEL_ID_TO_TRAIN_ID
from lmanet_ros.imaging import colorize, overlay
from lmanet_ros.metrics import RunScore
from lmanet_ros.pipeline import Frame, Result, SegmentationPipeline
from lmanet_ros.progress import progress
from lmanet_ros.streams import MemoryPolicy

from .alignment import LabelledFrame, ResultAligner
from .corruption import (CorruptionScorer, baseline_index, camera_topics, read_clean_images,
                         read_corruption_log, resolve_topics)
from .host import HostLoad
from .options import EvalError, EvalOptions, ModelSpec
from .outputs import OVERLAY_ALPHA, OutputBag, OutputWorker, safe_name
from .report import METRICS_FILE, build_metrics, write_json, write_report
from .scoring import SCENE_CUTS
from .video import COMPARISON_FILE, ComparisonVideo, recorded_fps

__all__ = ["BagPlan", "EvalOutcome", "evaluate", "plan_bag"]

#: Log times per topic from which the recorded frame rate is taken.
_FPS_PROBE = 32


@dataclass
class BagPlan:
    """What is in the bag and what will be read."""

    storage: str
    topics: list[str]
    label_topic: str | None
    counts: dict[str, int]
    fps: dict[str, float]

    @property
    def frames_in_bag(self) -> int:
        """Image frames of the chosen topics."""
        return sum(self.counts.values())


@dataclass
class EvalOutcome:
    """What an offline evaluation produced: the metrics.json payload and the files written."""

    payload: dict
    files: list[Path] = field(default_factory=list)
    interrupted: bool = False


def sibling_label_topic(available: Mapping[str, Any], topics: list[str] | None) -> str | None:
    """The label topic a bag of one camera implies: ``<ns>/labels`` beside its ``<ns>/image``
    (what ``lmanet synth`` and ``lmanet bag`` write), when the camera is the only other image
    topic or the one chosen; None otherwise."""
    cameras = list(topics) if topics else camera_topics(available)
    if not topics and len(cameras) != 2:
        return None
    siblings = {f"{topic.rsplit('/', 1)[0]}/labels" for topic in cameras}
    found = {label for label in siblings if label in available and label not in (topics or [])
             and any(camera != label and camera.rsplit('/', 1)[0] == label.rsplit('/', 1)[0]
                     for camera in cameras)}
    return found.pop() if len(found) == 1 else None


def plan_bag(reader: BagReader, topics: list[str] | None, label_topic: str | None) -> BagPlan:
    """Check topics and types of an open bag; count frames; take each camera's recorded rate
    from its first log times (no pixels decoded). Without a label topic, the camera's sibling
    ``<ns>/labels`` is taken when the bag has one (:func:`sibling_label_topic`)."""
    available = reader.image_topics()
    bag = reader.path
    if label_topic is None:
        label_topic = sibling_label_topic(available, topics)
    if label_topic is not None and label_topic not in available:
        raise EvalError(f"label topic '{label_topic}' is not an image topic of {bag} "
                        f"(image topics: {sorted(available)})")
    if topics:
        for topic in topics:
            if topic not in available:
                raise EvalError(f"'{topic}' is not an image topic of {bag} (image "
                                f"topics: {sorted(available)})")
    else:
        topics = [t for t in camera_topics(available) if t != label_topic]
        if len(topics) != 1:
            raise EvalError(f"{len(topics)} candidate image topics in {bag} "
                            f"({sorted(topics)}): choose with --image-topic")
    if label_topic in topics:
        raise EvalError(f"'{label_topic}' is both an image topic and the label topic")
    fps = {topic: recorded_fps([log_ns for _, log_ns, _ in
                                itertools.islice(reader.raw([topic]), _FPS_PROBE)])
           for topic in topics}
    return BagPlan(reader.storage, list(topics), label_topic,
                   {t: available[t][1] for t in topics}, fps)


def _frames(reader: BagReader, plan: BagPlan, options: EvalOptions, stats: ReadStats,
            timing: dict) -> Iterator[tuple[ImageRecord, np.ndarray | None]]:
    """RGB frames and their trainIds (or None), in recorded order; the time spent reading and
    decoding is added to ``timing["decode_s"]``."""
    pairs = pair_images_and_labels(reader, plan.topics, plan.label_topic, stride=options.stride,
                                   stats=stats)
    if options.max_frames:
        pairs = itertools.islice(pairs, options.max_frames)
    while True:
        start = time.perf_counter()
        try:
            record, gt = next(pairs)
        except StopIteration:
            timing["decode_s"] += time.perf_counter() - start
            return
        if gt is not None:
            if gt.ndim != 2:
                raise EvalError(f"label topic {plan.label_topic} is not single-channel "
                                "(mono8 trainIds needed)")
            if options.label_ids:
                gt = LABEL_ID_TO_TRAIN_ID[gt]
        if record.is_mono:  # a grey camera
            record = dataclasses.replace(record, image=np.repeat(record.image[..., None], 3, 2))
        timing["decode_s"] += time.perf_counter() - start
        yield record, gt


def _pipeline(options: EvalOptions, spec: ModelSpec) -> SegmentationPipeline:
    """The pipeline of one model with the run's settings."""
    return SegmentationPipeline.from_pretrained(
        spec.name, spec.checkpoint, device=options.device, precision=options.precision,
        num_threads=options.num_threads, input_size=options.input_size,
        memory_length=options.memory_length,
        policy=MemoryPolicy(max_gap=options.max_gap, stride=options.memory_stride),
        backend=options.backend)


def _corruption_scorer(reader: BagReader, plan: BagPlan, options: EvalOptions,
                       pipelines: list[SegmentationPipeline]) -> CorruptionScorer | None:
    """The corruption scoring of the first camera when the bag has its log (else None): the
    clean versions of its hit frames read, the memory check of each temporal model (run on a
    stream of its own in the model's pipeline: the weights are loaded once)."""
    camera = plan.topics[0]
    clean_topic, log_topic = resolve_topics(reader, camera, options.clean_topic,
                                            options.corruption_topic)
    if log_topic is None:
        return None
    log = read_corruption_log(reader, log_topic)
    images = read_clean_images(reader, clean_topic, log.hit_stamps()) if clean_topic else None
    baseline = baseline_index(pipelines)
    checks = {index: pipeline for index, pipeline in enumerate(pipelines)
              if options.memory_check and pipeline.info.temporal and index != baseline}
    return CorruptionScorer(log, camera=camera, clean_topic=clean_topic,
                            labels=[spec.label for spec in options.specs], pipelines=pipelines,
                            clean_images=images, checks=checks)


def _write_comparison(videos: dict[str, ComparisonVideo], out: Path, fps: float,
                      labels: list[str], palette: np.ndarray, record: ImageRecord,
                      results: list[Result], tag: str) -> None:
    """Append one frame to its camera's comparison video (opened on the camera's first frame:
    ``comparison.mp4`` for the first camera, ``comparison_<topic>.mp4`` for the others)."""
    video = videos.get(record.topic)
    if video is None:
        name = COMPARISON_FILE if not videos else f"comparison_{safe_name(record.topic)}.mp4"
        video = videos[record.topic] = ComparisonVideo(out / name, fps, labels)
    video.write(record.image, [overlay(record.image, colorize(result.labels, palette),
                                       OVERLAY_ALPHA) for result in results], tag)


def evaluate(options: EvalOptions) -> EvalOutcome:
    """Run the offline evaluation described by ``options`` (see the module doc).

    Raises:
        EvalError: bad topics or outputs; the pipeline's errors for unknown models or
        checkpoints (ValueError, FileNotFoundError, PipelineError).
    """
    wall_start = time.perf_counter()
    host = HostLoad()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with BagReader(options.bag) as reader:
            plan = plan_bag(reader, list(options.image_topics or []), options.label_topic)
            return _evaluate(reader, plan, options, out, wall_start, host)
    except BagError as exc:
        raise EvalError(str(exc)) from exc


def _evaluate(reader: BagReader, plan: BagPlan, options: EvalOptions, out: Path,
              wall_start: float, host: HostLoad) -> EvalOutcome:
    timing = {"setup_s": 0.0, "decode_s": 0.0, "model_s": 0.0, "metrics_s": 0.0,
              "output_bag_s": 0.0, "video_s": 0.0, "outputs_drain_s": 0.0, "report_s": 0.0,
              "corruption_s": 0.0, "comparison_video_s": 0.0}
    specs = options.specs
    pipelines = [_pipeline(options, spec) for spec in specs]
    scorer = _corruption_scorer(reader, plan, options, pipelines)
    palette = np.asarray(pipelines[0].classes.colors, dtype=np.uint8)
    runs = [RunScore(spec.label, list(p.classes.names)) for spec, p in zip(specs, pipelines)]
    plotting = threading.Thread(target=_import_plotting, daemon=True)
    if options.plots:  # import matplotlib (about a second) while the network works
        plotting.start()
    bag_out = OutputBag(Path(options.output_bag), options.output_storage or plan.storage) \
        if options.output_bag else None
    worker = OutputWorker(bag_out, out, {t: f / options.stride for t, f in plan.fps.items()},
                          palette)
    expected = sum(-(-n // options.stride) for n in plan.counts.values())
    if options.max_frames:
        expected = min(expected, options.max_frames)
    comparisons: dict[str, ComparisonVideo] = {}
    labels = [spec.label for spec in specs]
    warmed: set[tuple[int, int]] = set()
    model_s = [0.0] * len(pipelines)
    aligner = ResultAligner(len(pipelines))

    def use(labelled: LabelledFrame) -> None:
        """Score, write and compare one frame with every model's labels of it."""
        record, gt = labelled.record, labelled.gt
        for index, (spec, result, run) in enumerate(zip(specs, labelled.results, runs)):
            if result is None:
                continue
            start = time.perf_counter()
            _score(run, record, gt, result, labelled.duplicate)
            timing["metrics_s"] += time.perf_counter() - start
            worker.submit(record, spec.label, result.labels, bag=bag_out is not None,
                          video=index == 0 and options.video)
        if not labelled.complete:
            return
        if scorer is not None and record.topic == scorer.camera:
            start = time.perf_counter()
            scorer.add(labelled.frame, gt, labelled.results)
            timing["corruption_s"] += time.perf_counter() - start
        if options.writes_comparison_video:
            start = time.perf_counter()
            kinds = scorer.log.kinds.get(record.stamp_ns) \
                if scorer is not None and record.topic == scorer.camera else None
            _write_comparison(comparisons, out, plan.fps[record.topic] / options.stride,
                              labels, palette, record, labelled.results, ",".join(kinds or ()))
            timing["comparison_video_s"] += time.perf_counter() - start

    stats = ReadStats()
    interrupted = False
    frames_done = 0
    timing["setup_s"] = time.perf_counter() - wall_start
    loop_start = time.perf_counter()
    bar = progress(expected, "eval")
    try:
        for record, gt in _frames(reader, plan, options, stats, timing):
            size = record.image.shape[:2]
            if size not in warmed:  # first frame of a size: not timed as part of the run
                start = time.perf_counter()
                for pipeline in pipelines:
                    pipeline.warmup(*size)
                warmed.add(size)
                timing["setup_s"] += time.perf_counter() - start
                loop_start += time.perf_counter() - start
            item = Frame(record.topic, record.image, record.stamp_ns, record.frame_id)
            results = []
            for index, pipeline in enumerate(pipelines):  # all models first: Ctrl-C drops it
                start = time.perf_counter()
                results.append(pipeline.process([item])[0])
                elapsed = time.perf_counter() - start
                model_s[index] += elapsed
                timing["model_s"] += elapsed
            for labelled in aligner.add(record, gt, item, results):
                use(labelled)
            frames_done += 1
            bar.update(1)
        for labelled in aligner.flush():  # the frames a delayed model never labelled
            use(labelled)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        for video in comparisons.values():
            video.close()
        for run, seconds in zip(runs, model_s):  # throughput of each model alone
            run.wall_s = seconds
        start = time.perf_counter()
        worker.close()
        timing["outputs_drain_s"] = time.perf_counter() - start
        timing.update(worker.timing)
    timing["loop_s"] = time.perf_counter() - loop_start
    source = {"bag": str(options.bag), "storage": plan.storage, "image_topics": plan.topics,
              "label_topic": plan.label_topic, "label_ids": bool(options.label_ids),
              "frames_in_bag": plan.frames_in_bag, "frames_evaluated": frames_done,
              "frames_expected": expected, "stride": options.stride,
              "max_frames": options.max_frames or None, "labels_for_topic": plan.topics[0]
              if plan.label_topic else None, "messages_skipped": stats.skipped,
              "skip_reasons": stats.problems[:10],
              "output_bag": str(options.output_bag) if options.output_bag else None}
    first = pipelines[0]
    parameters = {"device": str(first.device), "precision": options.precision,
                  "backend": f"{first.backend} {first.backend_version}",
                  "input_size": list(first.input_size), "memory_length": first.memory_length,
                  "memory_length_origin": first.memory_length_origin,
                  "max_gap": options.max_gap, "memory_stride": options.memory_stride}
    models = [_model_entry(spec.label, spec.name, spec.checkpoint, pipeline)
              for spec, pipeline in zip(specs, pipelines)]
    timing["total_s"] = time.perf_counter() - wall_start
    payload = build_metrics(runs, models, source=source, parameters=parameters,
                            partial=interrupted, timing=timing,
                            host=host.section(torch_threads=_threads()))
    if scorer is not None:
        scorer.annotate(payload)
    if plotting.is_alive():  # two threads importing matplotlib at once may see half a module
        plotting.join()
    start = time.perf_counter()
    files = write_report(out, payload, runs, plots=options.plots)
    timing["report_s"] = time.perf_counter() - start  # metrics.json only (report.md has run)
    write_json(out / METRICS_FILE, payload)
    files += [video.path for video in [*worker.videos.values(), *comparisons.values()]]
    if bag_out is not None:
        files.append(bag_out.path)
    return EvalOutcome(payload, files, interrupted)


def _score(run: RunScore, record: ImageRecord, gt: np.ndarray | None, result: Result,
           duplicate: bool) -> None:
    """Add one model's labels of one frame (``record``, its ground truth ``gt``, whether it
    repeated its topic's previous stamp) to its scores; the latency is the compute time of the
    call that gave them (for a delayed model one frame period comes on top)."""
    t = result.timings
    run.add(record.topic, result.labels, gt, stamp_ns=record.stamp_ns, latency_ms=t.total_ms,
            stages_ms={"preprocess": t.preprocess_ms, "inference": t.inference_ms,
                       "postprocess": t.postprocess_ms},
            reset_reason=result.reset_reason, continuous=result.reset_reason not in SCENE_CUTS,
            duplicate=duplicate)


def _model_entry(label: str, name: str, checkpoint: str | None,
                 pipeline: SegmentationPipeline) -> dict:
    """A model's description in metrics.json, with the memory length and input size in force."""
    info = pipeline.info
    return {"label": label, "model": name, "checkpoint": checkpoint,
            "checkpoint_id": pipeline.checkpoint_id, "memory_length": pipeline.memory_length,
            "memory_length_origin": pipeline.memory_length_origin,
            "input_size": list(pipeline.input_size),
            "output_delay_frames": pipeline.output_delay_frames,
            "backend": pipeline.backend, "backend_version": pipeline.backend_version,
            "backend_reason": pipeline.backend_reason, "attention": pipeline.attention,
            "info": {"num_classes": info.num_classes, "temporal": info.temporal,
                     "memory_length": info.memory_length, "output_stride": info.output_stride}}


def _import_plotting() -> None:
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def _threads() -> int:
    """The CPU threads PyTorch uses (intra-op), now."""
    import torch

    return torch.get_num_threads()
