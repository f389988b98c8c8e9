"""`lmanet eval`: score the node's pipeline on a rosbag2, offline (or a running node, ``--live``).

Offline, the bag is read with rosbags (sqlite3 or mcap, no ROS runtime) and every image frame of
the chosen topics goes, in recorded order, through :class:`lmanet_ros.pipeline.
SegmentationPipeline` with the node's memory rules (one memory per camera topic, reset on time
going back, gaps, size or frame_id changes). Ground truth comes from a mono8 label topic matched
by header stamp. Each image is decoded once and shared by every model of ``--compare``.

Writes to ``--out``: ``metrics.json``, ``report.md``, ``class_iou.png``, ``latency_hist.png``,
``flip_rate.png`` and ``overlay.mp4`` (input | overlay, first model; one video per camera topic);
``--output-bag`` adds a rosbag2 with labels (mono8), colour and overlay (rgb8) topics per image
topic and model, with the input's header stamps and recording times. Ctrl-C stops after the
current frame and writes everything for the frames done, flagged ``"partial": true``.

``--live`` scores a running ``lmanet_node`` instead: the bag is replayed in lock-step (next frame
once the node's labels of the previous one arrived) and the labels it publishes are scored the
same way (see :mod:`lmanet_ros.tools.replay`).
"""
from __future__ import annotations

import argparse
import itertools
import queue
import sys
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmanet_ros.bags import BadMessageWarning, BagError, BagReader, ReadStats, decode_message
from lmanet_ros.classes import LABEL_ID_TO_TRAIN_ID
from lmanet_ros.imaging import ImageError
from lmanet_ros.metrics import RunScore
from lmanet_ros.models.registry import model_entry
from lmanet_ros.report import (METRICS_FILE, VIDEO_FILE, OverlayVideo, build_metrics, progress,
                               recorded_fps, safe_name, write_json, write_report)
from lmanet_ros.streams import MemoryPolicy
from lmanet_ros.tools.common import int_at_least, parse_size
from lmanet_ros.tools.replay import (SCENE_CUTS, ReplayError, ReplayOptions, _typestore,
                                     add_replay_arguments, bag_storage, open_reader,
                                     parse_remaps, replay_bag, report_outcome)

#: Weight of the colour mask in the overlay images and video.
OVERLAY_ALPHA = 0.5
OUTPUT_KINDS = ("labels", "color", "overlay")


class EvalError(RuntimeError):
    """The evaluation cannot run as asked (topics, models, output paths)."""


@dataclass
class EvalFrame:
    """One decoded image frame of the bag with its ground truth (if any)."""

    topic: str
    log_ns: int
    stamp_ns: int
    frame_id: str
    image: np.ndarray
    gt: np.ndarray | None


@dataclass
class BagPlan:
    """What is in the bag and what will be read."""

    storage: str
    topics: list[str]
    label_topic: str | None
    counts: dict[str, int]
    label_stamps: Counter
    fps: dict[str, float]

    @property
    def frames_in_bag(self) -> int:
        """Image frames of the chosen topics."""
        return sum(self.counts.values())


def plan_bag(bag: Path, topics: list[str] | None, label_topic: str | None) -> BagPlan:
    """Check topics and types; count the label stamps (headers only, no pixels decoded)."""
    try:
        with BagReader(bag) as reader, warnings.catch_warnings():
            warnings.simplefilter("ignore", BadMessageWarning)  # reported when read for real
            available = reader.image_topics()
            if label_topic is not None and label_topic not in available:
                raise EvalError(f"label topic '{label_topic}' is not an image topic of {bag} "
                                f"(image topics: {sorted(available)})")
            if topics:
                for topic in topics:
                    if topic not in available:
                        raise EvalError(f"'{topic}' is not an image topic of {bag} (image "
                                        f"topics: {sorted(available)})")
            else:
                topics = [t for t in available if t != label_topic]
                if len(topics) != 1:
                    raise EvalError(f"{len(topics)} candidate image topics in {bag} "
                                    f"({sorted(topics)}): choose with --image-topic")
            if label_topic in topics:
                raise EvalError(f"'{label_topic}' is both an image topic and the label topic")
            label_stamps: Counter = Counter()
            if label_topic is not None:
                for _, _, _, msg in reader.messages([label_topic]):
                    label_stamps[msg.header.stamp.sec * 1_000_000_000
                                 + msg.header.stamp.nanosec] += 1
            counts = {t: available[t][1] for t in topics}
    except BagError as exc:
        raise EvalError(str(exc)) from exc
    fps = {}
    with open_reader(bag) as raw:
        storage = bag_storage(raw)
        for topic in topics:  # the recorded rate, from the first log times (gaps excluded)
            connections = [c for c in raw.connections if c.topic == topic]
            times = list(itertools.islice((log_ns for _, log_ns, _ in
                                           raw.messages(connections=connections)), 32))
            fps[topic] = recorded_fps(times)
    return BagPlan(storage, list(topics), label_topic, counts, label_stamps, fps)


def iter_frames(bag: Path, plan: BagPlan, *, stride: int = 1, max_frames: int = 0,
                label_ids: bool = False, timing: dict | None = None,
                stats=None) -> Iterator[EvalFrame]:
    """Decoded frames of ``plan.topics`` in recorded order, every ``stride``-th per topic.

    Labels belong to the first topic: its n-th frame of a stamp gets the n-th label of that
    stamp. One pass: a frame whose label is recorded later waits (with the frames behind it)
    until that label is read, so the order is kept and little is buffered. Messages that cannot
    be decoded are warned about, counted in ``stats`` (a :class:`lmanet_ros.bags.ReadStats`)
    and skipped, as :mod:`lmanet_ros.bags` does.
    """
    timing = timing if timing is not None else {}
    timing.setdefault("decode_s", 0.0)
    labelled_topic = plan.topics[0] if plan.label_topic else None
    seen = dict.fromkeys(plan.topics, 0)
    claims = Counter(plan.label_stamps)   # labels still to be given to frames, per stamp
    drop = Counter()                      # labels of frames left out by the stride
    labels: dict[int, deque] = {}
    queue: deque[tuple[EvalFrame, bool]] = deque()
    emitted = 0
    wanted = plan.topics + ([plan.label_topic] if plan.label_topic else [])
    with BagReader(bag) as reader:
        start = time.perf_counter()
        for topic, msgtype, log_ns, msg in reader.messages(wanted, stats=stats):
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if topic == plan.label_topic:
                if drop[stamp]:
                    drop[stamp] -= 1
                else:
                    try:
                        mask, _ = decode_message(msgtype, msg)
                    except (ImageError, ValueError) as exc:
                        _skip(stats, topic, log_ns, f"cannot decode label: {exc}")
                        claims[stamp] = max(claims[stamp] - 1, 0)
                        mask = None
                    if mask is not None:
                        if mask.ndim != 2:
                            raise EvalError(f"label topic {topic} is not single-channel "
                                            f"(mono8 trainIds needed, got {msg.encoding})")
                        labels.setdefault(stamp, deque()).append(
                            LABEL_ID_TO_TRAIN_ID[mask] if label_ids else mask)
            else:
                index = seen[topic]
                seen[topic] += 1
                claim = topic == labelled_topic and claims[stamp] > 0
                if claim:
                    claims[stamp] -= 1
                if index % stride:
                    if claim:  # its label is not needed: drop it (now or when it comes)
                        if labels.get(stamp):
                            labels[stamp].popleft()
                        else:
                            drop[stamp] += 1
                    continue
                try:
                    image, _ = decode_message(msgtype, msg)
                except (ImageError, ValueError) as exc:
                    _skip(stats, topic, log_ns, f"cannot decode image: {exc}")
                    continue
                if image.ndim == 2:  # a grey camera
                    image = np.repeat(image[..., None], 3, axis=2)
                frame = EvalFrame(topic, log_ns, stamp, str(msg.header.frame_id), image, None)
                queue.append((frame, claim))
            while queue and (not queue[0][1] or labels.get(queue[0][0].stamp_ns)):
                frame, claim = queue.popleft()
                if claim:
                    frame.gt = labels[frame.stamp_ns].popleft()
                timing["decode_s"] += time.perf_counter() - start
                yield frame
                start = time.perf_counter()
                emitted += 1
                if max_frames and emitted >= max_frames:
                    return
        timing["decode_s"] += time.perf_counter() - start
    for frame, _ in queue:  # a label that could not be decoded: the frame goes without
        yield frame
        emitted += 1
        if max_frames and emitted >= max_frames:
            return


def _skip(stats: ReadStats | None, topic: str, log_ns: int, reason: str) -> None:
    """Warn about a message that cannot be used and count it, as lmanet_ros.bags does."""
    warnings.warn(f"skipping message on {topic} at log time {log_ns} ns: {reason}",
                  BadMessageWarning, stacklevel=3)
    if stats is not None:
        stats.skipped += 1
        stats.skipped_by_topic[topic] += 1
        if len(stats.problems) < 100:
            stats.problems.append(f"{topic} @ {log_ns}: {reason}")


# --------------------------------------------------------------------------------- the models
@dataclass
class ModelSpec:
    """One model to evaluate: registry name, checkpoint (None = random weights), label."""

    name: str
    checkpoint: str | None
    label: str = ""


def parse_compare(items: list[str] | None) -> list[ModelSpec]:
    """``MODEL[:CKPT]`` strings to model specs."""
    specs = []
    for item in items or []:
        name, _, checkpoint = item.partition(":")
        if not name:
            raise EvalError(f"--compare entry '{item}' has no model name (MODEL[:CKPT])")
        specs.append(ModelSpec(name, checkpoint or None))
    return specs


def label_models(specs: list[ModelSpec]) -> list[ModelSpec]:
    """Give each model a unique label: its name, or name:checkpoint-stem when names repeat."""
    names = [s.name for s in specs]
    used: set[str] = set()
    for spec in specs:
        label = spec.name
        if names.count(spec.name) > 1:
            label = f"{spec.name}:{Path(spec.checkpoint).stem if spec.checkpoint else 'random'}"
        base, n = label, 2
        while label in used:
            label, n = f"{base}#{n}", n + 1
        used.add(label)
        spec.label = label
    return specs


# -------------------------------------------------------------------------------- output bag
class OutputBag:
    """Labels (mono8), colour and overlay (rgb8) images per image topic and model, as a rosbag2.

    Topics: ``<image topic>/<model label>/labels|color|overlay``; header and recording time are
    the input frame's. Messages are serialized straight to CDR (one buffer per message).
    """

    def __init__(self, path: Path, storage: str, kinds: tuple[str, ...] = OUTPUT_KINDS) -> None:
        """Create the bag at ``path`` (must not exist)."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        if path.exists():
            raise EvalError(f"output bag {path} exists; remove it or choose another path")
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
        if plugin is None:
            raise EvalError(f"output bag storage must be mcap or sqlite3, got '{storage}'")
        self.path = path
        self.kinds = kinds
        self._typestore = _typestore()
        self._writer = Writer(path, version=8, storage_plugin=plugin)  # as lmanet_ros.bags
        self._opened = False   # opened by the thread that writes (sqlite3 is per thread)
        self._connections: dict[str, object] = {}
        self.messages = 0

    def topic(self, image_topic: str, model_label: str, kind: str) -> str:
        """Output topic name of ``kind`` for a camera topic and a model."""
        return f"{image_topic.rstrip('/')}/{safe_name(model_label)}/{kind}"

    def write(self, frame: EvalFrame, model_label: str, images: dict[str, np.ndarray]) -> None:
        """Write the images (``kind`` -> array) of one frame."""
        if not self._opened:
            self._writer.open()
            self._opened = True
        for kind in self.kinds:
            array = images[kind]
            topic = self.topic(frame.topic, model_label, kind)
            connection = self._connections.get(topic)
            if connection is None:
                connection = self._connections[topic] = self._writer.add_connection(
                    topic, "sensor_msgs/msg/Image", typestore=self._typestore)
            encoding = "mono8" if array.ndim == 2 else "rgb8"
            self._writer.write(connection, frame.log_ns,
                               image_cdr(frame.stamp_ns, frame.frame_id, encoding, array))
            self.messages += 1

    def close(self) -> None:
        """Finish the bag (metadata written; readable afterwards), also an empty one."""
        if self._writer is not None:
            if not self._opened:
                self._writer.open()
            self._writer.close()
            self._writer = None


def _cdr_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return len(raw).to_bytes(4, "little") + raw


def image_cdr(stamp_ns: int, frame_id: str, encoding: str, array: np.ndarray) -> bytes:
    """A little-endian CDR ``sensor_msgs/msg/Image`` of a (H, W) or (H, W, 3) uint8 array."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    step = width * (array.shape[2] if array.ndim == 3 else 1)
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    out = bytearray(b"\x00\x01\x00\x00")
    out += sec.to_bytes(4, "little", signed=True) + nanosec.to_bytes(4, "little")
    out += _cdr_string(frame_id)
    out += b"\0" * (-(len(out) - 4) % 4)
    out += height.to_bytes(4, "little") + width.to_bytes(4, "little")
    out += _cdr_string(encoding)
    out += b"\0"  # is_bigendian
    out += b"\0" * (-(len(out) - 4) % 4)
    out += step.to_bytes(4, "little") + array.nbytes.to_bytes(4, "little")
    out += array.data
    return bytes(out)


# ------------------------------------------------------------------------------- evaluation
@dataclass
class EvalOutcome:
    """What an offline evaluation produced."""

    payload: dict
    files: list[Path] = field(default_factory=list)
    interrupted: bool = False


def evaluate(args: argparse.Namespace) -> EvalOutcome:
    """Run the offline evaluation described by parsed ``lmanet eval`` arguments."""
    from lmanet_ros.pipeline import Frame, SegmentationPipeline

    wall_start = time.perf_counter()
    if args.stride < 1:
        raise EvalError(f"--stride must be >= 1, got {args.stride}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_bag(args.bag, args.image_topic, args.label_topic)
    specs = label_models([ModelSpec(args.model, args.checkpoint)] + parse_compare(args.compare))

    def policy_for(name: str) -> MemoryPolicy:  # --memory-length, else the model's own T
        return MemoryPolicy(max_gap=args.max_gap, stride=args.memory_stride,
                            memory_length=model_entry(name).default_memory_length
                            if args.memory_length is None else args.memory_length)
    timing = {"setup_s": 0.0, "decode_s": 0.0, "model_s": 0.0, "metrics_s": 0.0,
              "output_bag_s": 0.0, "video_s": 0.0, "outputs_drain_s": 0.0, "report_s": 0.0}
    pipelines = []
    for spec in specs:
        pipeline = SegmentationPipeline.from_pretrained(
            spec.name, spec.checkpoint, device=args.device, precision=args.precision,
            num_threads=args.num_threads, input_size=args.input_size or (0, 0),
            policy=policy_for(spec.name))
        pipelines.append(pipeline)
    classes = pipelines[0].classes
    palette = np.asarray(classes.colors, dtype=np.uint8)
    runs = [RunScore(spec.label, list(p.classes.names)) for spec, p in zip(specs, pipelines)]
    if not args.no_plots:  # import matplotlib (about a second) while the network works
        threading.Thread(target=_import_plotting, daemon=True).start()
    bag_out = OutputBag(Path(args.output_bag), args.output_storage or plan.storage) \
        if args.output_bag else None
    worker = OutputWorker(bag_out, out, {t: f / args.stride for t, f in plan.fps.items()},
                          palette)
    expected = sum(-(-n // args.stride) for n in plan.counts.values())
    if args.max_frames:
        expected = min(expected, args.max_frames)
    warmed: set[tuple[int, int]] = set()
    model_s = [0.0] * len(pipelines)
    stats = ReadStats()
    interrupted = False
    frames_done = 0
    timing["setup_s"] = time.perf_counter() - wall_start
    loop_start = time.perf_counter()
    bar = progress(expected, "eval")
    try:
        for frame in iter_frames(args.bag, plan, stride=args.stride, max_frames=args.max_frames,
                                 label_ids=args.label_ids, timing=timing, stats=stats):
            size = frame.image.shape[:2]
            if size not in warmed:  # first frame of a size: not timed as part of the run
                start = time.perf_counter()
                for pipeline in pipelines:
                    pipeline.warmup(*size)
                warmed.add(size)
                timing["setup_s"] += time.perf_counter() - start
                loop_start += time.perf_counter() - start
            item = Frame(frame.topic, frame.image, frame.stamp_ns * 1e-9, frame.frame_id)
            results = []
            for index, pipeline in enumerate(pipelines):  # all models first: Ctrl-C drops it
                start = time.perf_counter()
                results.append(pipeline.process([item])[0])
                elapsed = time.perf_counter() - start
                model_s[index] += elapsed
                timing["model_s"] += elapsed
            for index, (spec, result, run) in enumerate(zip(specs, results, runs)):
                start = time.perf_counter()
                t = result.timings
                run.add(frame.topic, result.labels, frame.gt, stamp=frame.stamp_ns * 1e-9,
                        latency_ms=t.total_ms,
                        stages_ms={"preprocess": t.preprocess_ms, "inference": t.inference_ms,
                                   "postprocess": t.postprocess_ms},
                        reset_reason=result.reset_reason,
                        continuous=result.reset_reason not in SCENE_CUTS,
                        duplicate=result.duplicate)
                timing["metrics_s"] += time.perf_counter() - start
                worker.submit(frame, spec.label, result.labels, bag=bag_out is not None,
                              video=index == 0 and not args.no_video)
            frames_done += 1
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        for run, seconds in zip(runs, model_s):  # throughput of each model alone
            run.wall_s = seconds
        start = time.perf_counter()
        worker.close()
        timing["outputs_drain_s"] = time.perf_counter() - start
        timing.update(worker.timing)
    loop_s = time.perf_counter() - loop_start
    timing["loop_s"] = loop_s
    source = {"bag": str(args.bag), "storage": plan.storage, "image_topics": plan.topics,
              "label_topic": plan.label_topic, "label_ids": bool(args.label_ids),
              "frames_in_bag": plan.frames_in_bag, "frames_evaluated": frames_done,
              "frames_expected": expected, "stride": args.stride,
              "max_frames": args.max_frames or None, "labels_for_topic": plan.topics[0]
              if plan.label_topic else None, "messages_skipped": stats.skipped,
              "skip_reasons": stats.problems[:10],
              "output_bag": str(args.output_bag) if args.output_bag else None}
    parameters = {"device": str(pipelines[0].device), "precision": args.precision,
                  "input_size": list(args.input_size or (0, 0)),
                  "memory_length": args.memory_length, "max_gap": args.max_gap,
                  "memory_stride": args.memory_stride, "num_threads": _threads()}
    models = []
    for spec, pipeline in zip(specs, pipelines):
        info = pipeline.info
        models.append({"label": spec.label, "model": spec.name, "checkpoint": spec.checkpoint,
                       "checkpoint_id": pipeline.checkpoint_id,
                       "info": {"num_classes": info.num_classes, "temporal": info.temporal,
                                "memory_length": info.memory_length,
                                "output_stride": info.output_stride}})
    timing["total_s"] = time.perf_counter() - wall_start
    payload = build_metrics(runs, models, source=source, parameters=parameters,
                            partial=interrupted, timing=timing)
    start = time.perf_counter()
    files = write_report(out, payload, runs, plots=not args.no_plots)
    timing["report_s"] = time.perf_counter() - start  # metrics.json only (report.md has run)
    write_json(out / METRICS_FILE, payload)
    files += [video.path for video in worker.videos.values()]
    if bag_out is not None:
        files.append(bag_out.path)
    return EvalOutcome(payload, files, interrupted)


class OutputWorker:
    """Renders colour masks and overlays and writes the output bag and videos on a thread of its
    own, so disk and encoding time overlap the network (a bounded queue keeps memory flat)."""

    def __init__(self, bag_out: OutputBag | None, out: Path, fps: dict[str, float],
                 palette: np.ndarray, depth: int = 8) -> None:
        """Start the thread; ``fps`` gives each camera topic's video frame rate."""
        self.bag_out = bag_out
        self.videos: dict[str, OverlayVideo] = {}
        self.timing = {"output_bag_s": 0.0, "video_s": 0.0}
        self._out, self._fps, self._palette = out, fps, palette
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="eval-outputs", daemon=True)
        self._thread.start()

    def submit(self, frame: EvalFrame, model_label: str, labels: np.ndarray, *,
               bag: bool, video: bool) -> None:
        """Queue one result (blocks while the queue is full); raises the worker's error."""
        if self._error is not None:
            raise self._error
        if bag or video:
            self._queue.put((frame, model_label, labels, bag, video))

    def _work(self) -> None:
        from lmanet_ros.imaging import colorize, overlay

        while True:
            item = self._queue.get()
            if item is None:
                self._finish()
                return
            if self._error is not None:
                continue
            frame, model_label, labels, bag, video = item
            try:
                start = time.perf_counter()
                color = colorize(labels, self._palette)
                blended = overlay(frame.image, color, OVERLAY_ALPHA)
                render_s = time.perf_counter() - start
                if bag and self.bag_out is not None:
                    start = time.perf_counter()
                    self.bag_out.write(frame, model_label,
                                       {"labels": labels, "color": color, "overlay": blended})
                    self.timing["output_bag_s"] += time.perf_counter() - start + render_s
                    render_s = 0.0
                if video:
                    start = time.perf_counter()
                    writer = self.videos.get(frame.topic)
                    if writer is None:
                        name = VIDEO_FILE if not self.videos else \
                            f"overlay_{safe_name(frame.topic)}.mp4"
                        writer = self.videos[frame.topic] = OverlayVideo(
                            self._out / name, self._fps[frame.topic])
                    writer.write(frame.image, blended)
                    self.timing["video_s"] += time.perf_counter() - start + render_s
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self._error = exc

    def _finish(self) -> None:
        """On the worker thread: finalise the videos and the bag."""
        try:
            start = time.perf_counter()
            for writer in self.videos.values():
                writer.close()
            self.timing["video_s"] += time.perf_counter() - start
            if self.bag_out is not None:
                start = time.perf_counter()
                self.bag_out.close()
                self.timing["output_bag_s"] += time.perf_counter() - start
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._error = self._error or exc

    def close(self) -> None:
        """Finish the queued work, finalise videos and bag; raise the worker's error if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _import_plotting() -> None:
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------------------ command line
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lmanet eval``."""
    parser = subparsers.add_parser(
        "eval", allow_abbrev=False, help="score the pipeline on a rosbag2 (or a live node)",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path, help="rosbag2 directory (sqlite3 or mcap)")
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for metrics.json, report.md, plots and video")
    data = parser.add_argument_group("data")
    data.add_argument("--image-topic", nargs="+", metavar="TOPIC",
                      help="camera topic(s) (sensor_msgs/Image or CompressedImage); default: "
                      "the bag's only image topic besides the label topic")
    data.add_argument("--label-topic", help="ground truth: mono8 Cityscapes trainIds (255 void), "
                      "matched to the images by header stamp")
    data.add_argument("--label-ids", action="store_true",
                      help="the label topic holds Cityscapes labelIds: map them to trainIds")
    data.add_argument("--stride", type=int, default=1,
                      help="use every N-th frame of each camera (a slower processing rate)")
    data.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = all)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="registered model name (lmanet_erfnet, erfnet, "
                       "lmanet_pspnet101, pspnet101, ...)")
    model.add_argument("--checkpoint", help="weights file (default: random weights, tests only)")
    model.add_argument("--compare", nargs="+", metavar="MODEL[:CKPT]",
                       help="more models to run on the same frames (one table, one plot)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    model.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                       help="arithmetic precision")
    model.add_argument("--num-threads", type=int, default=0,
                       help="CPU threads for PyTorch (0 = its default)")
    model.add_argument("--input-size", type=parse_size, metavar="HxW",
                       help="network input size (default: each frame's size), as the node's "
                       "input_height/input_width")
    memory = parser.add_argument_group("memory rules (as the node's memory.* parameters)")
    memory.add_argument("--memory-length", type=int_at_least(1), default=None,
                        help="frames in the memory (default: the model's, 4 for lmanet_erfnet, "
                             "3 for lmanet_pspnet*)")
    memory.add_argument("--max-gap", type=float, default=1.0,
                        help="seconds between frames beyond which the memory is cleared (0: off)")
    memory.add_argument("--memory-stride", type=int, default=1,
                        help="store every k-th processed frame in the memory")
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--no-video", action="store_true", help="skip overlay.mp4")
    outputs.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    outputs.add_argument("--output-bag", type=Path, metavar="PATH",
                         help="write a rosbag2 with labels, colour and overlay topics")
    outputs.add_argument("--output-storage", choices=("mcap", "sqlite3"),
                         help="storage of --output-bag (default: the input's)")
    live = parser.add_argument_group("live (score a running lmanet_node instead)")
    live.add_argument("--live", action="store_true",
                      help="replay the bag in lock-step to a running node and score its labels")
    live.add_argument("--node", default="/lmanet",
                      help="the node's fully qualified name (labels on <node>/labels)")
    add_replay_arguments(parser, for_eval=True)
    parser.set_defaults(handler=run)
    return parser


def _run_live(args: argparse.Namespace) -> int:
    topics = args.image_topic
    if topics is not None and len(topics) != 1:
        print("lmanet eval: error: --live scores one camera topic", file=sys.stderr)
        return 2
    options = ReplayOptions(
        bag=args.bag, topics=topics, remap=parse_remaps(args.remap), rate=args.rate,
        lockstep=True, labels_topics=[args.node.rstrip("/") + "/labels"], timeout=args.timeout,
        startup_timeout=args.startup_timeout, reliable=not args.best_effort, depth=args.depth,
        clock=not args.no_clock, max_frames=args.max_frames, score_out=args.out,
        label_topic=args.label_topic, label_ids=args.label_ids, max_gap=args.max_gap,
        video=not args.no_video)
    try:
        outcome = replay_bag(options)
    except ReplayError as exc:
        print(f"lmanet eval: error: {exc}", file=sys.stderr)
        return 2
    return report_outcome(outcome, options)


def run(args: argparse.Namespace) -> int:
    """Run ``lmanet eval``."""
    if args.live:
        return _run_live(args)
    if not args.model:
        print("lmanet eval: error: --model is required (except with --live)", file=sys.stderr)
        return 2
    try:
        outcome = evaluate(args)
    except (EvalError, ReplayError, ValueError, FileNotFoundError) as exc:
        print(f"lmanet eval: error: {exc}", file=sys.stderr)
        return 2
    payload = outcome.payload
    for model in payload["models"]:
        acc = model["accuracy"]
        miou = f"mIoU {100 * acc['miou']:.1f} %" if acc and acc["miou"] is not None else "no labels"
        tc = model["temporal_consistency"]["flip_rate"]
        print(f"{model['label']}: {miou}, flip rate "
              f"{'-' if tc is None else f'{100 * tc:.2f} %'}, p50 "
              f"{model['latency_ms']['p50'] or 0:.1f} ms, {model['frames']} frames",
              file=sys.stderr)
    print(f"wrote {len(outcome.files)} files to {args.out}"
          + (" (partial: interrupted)" if outcome.interrupted else ""), file=sys.stderr)
    return 130 if outcome.interrupted else 0
