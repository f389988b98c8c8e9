"""``lmanet bag``: turn videos or folders of images (and their label PNGs) into a rosbag2.

Examples::

    lmanet bag drive.mp4 -o drive_bag
    lmanet bag frames/ --labels labels/ --rate 15 -o labelled_bag --storage sqlite3
    lmanet bag a.mp4 b.mp4 --compression jpeg --jpeg-quality 80 --resize 256x512 -o ab_bag

Inputs are written one after the other on one camera topic, in the order given. A video is
read by OpenCV (FFmpeg); a folder's images (png, jpg, jpeg, bmp) are taken in natural order of
their names. ``--labels DIR`` (once per input, in the same order; folders only) gives mono8
class-id PNGs (Cityscapes trainIds, 255 void) matched to the images by file stem (Cityscapes'
``_leftImg8bit`` / ``_gtFine_labelTrainIds`` endings are dropped first); they go to
``--label-topic`` as sensor_msgs/msg/Image mono8 with the same header stamps as their images,
which is how ``lmanet eval BAG --label-topic /camera/labels`` scores them. An image without a
label is written without one (a warning counts them); a label that is not single-channel 8-bit
or not the size of its image stops the conversion (exit 2, no bag left).

Images are sensor_msgs/msg/Image on ``--topic`` (``--encoding`` rgb8, bgr8 or mono8), or with
``--compression jpeg|png`` sensor_msgs/msg/CompressedImage on ``TOPIC/compressed`` (format
``"<encoding>; <codec> compressed bgr8|mono8"``, as image_transport writes it; a node subscribed
to TOPIC with ``input.transport: compressed`` reads them). ``--resize HxW`` scales images (area
interpolation) and labels (nearest neighbour).

Stamps: the header stamp of the input's frame k is ``start + k / rate``, ``rate`` being
``--rate`` or the video's own frame rate (10 Hz for folders, and for videos that give none);
``--stride N`` keeps every N-th frame with its stamp, so the bag runs at rate / N. The first
input starts at ``--start-time`` (seconds since the epoch; default 1700000000, the epoch of
``lmanet synth``, so bags are reproducible; ``now`` for the current time), each further one
``--gap`` seconds after the last frame of the one before (default 5, beyond the node's
``memory.max_gap``, so the memory resets between inputs). The log (receive) time of every message
is its header stamp; no /clock is written (``lmanet replay`` and ``ros2 bag play --clock`` make
one from the bag).

The output must not exist; ``--force`` replaces an existing rosbag2 (a folder with a
metadata.yaml, or an empty one), never anything else. Ctrl-C stops after the current frame and
closes the bag: it is valid and holds the frames written (exit 130). Errors in the inputs exit 2
with one line ``lmanet bag: error: ...``; failures to write exit 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from lmanet_ros.bags import COMPRESSED_IMAGE, IMAGE, STORAGES, BagError, BagWriter
from lmanet_ros.progress import progress
from lmanet_ros.sizes import format_size
from lmanet_ros.stamps import NS_PER_S, ns_to_seconds, seconds_to_ns
from lmanet_ros.synthetic import FRAME_ID, IMAGE_TOPIC, LABEL_TOPIC, SEQUENCE_GAP_S, START_TIME_NS
from lmanet_ros.tools.bag_inputs import FolderInput, InputError, VideoInput, open_input
from lmanet_ros.tools.common import float_in, int_at_least, parse_size, positive_float, \
    positive_int

__all__ = ["add_parser", "run"]

#: Frame rate of inputs that have none (image folders, videos without one), in Hz.
DEFAULT_RATE_HZ = 10.0
ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "mono8")
COMPRESSIONS: tuple[str, ...] = ("jpeg", "png")
#: Largest start time: header stamps hold int32 seconds.
_MAX_START_S = float(2 ** 31 - 1)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `lmanet bag`."""
    parser = subparsers.add_parser(
        "bag", help="write videos or folders of images (and label PNGs) into a rosbag2",
        description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="video file or folder of images; several are written one after "
                        "the other")
    parser.add_argument("-o", "--out", type=Path, required=True,
                        help="the rosbag2 directory to create")
    parser.add_argument("--force", action="store_true",
                        help="replace OUT when it is a rosbag2 already")
    images = parser.add_argument_group("images")
    images.add_argument("--labels", type=Path, action="append", metavar="DIR",
                        help="folder of mono8 class-id PNGs matched to an input folder's images "
                        "by file stem; once per input, in the same order")
    images.add_argument("--topic", default=IMAGE_TOPIC,
                        help="camera topic (default: %(default)s; with --compression the "
                        "messages go to TOPIC/compressed)")
    images.add_argument("--label-topic", default=LABEL_TOPIC,
                        help="topic of the labels (default: %(default)s)")
    images.add_argument("--frame-id", default=FRAME_ID,
                        help="header.frame_id of every message (default: %(default)s)")
    images.add_argument("--encoding", choices=ENCODINGS, default=ENCODINGS[0],
                        help="pixel encoding of the images (default: %(default)s)")
    images.add_argument("--compression", choices=COMPRESSIONS,
                        help="write sensor_msgs/CompressedImage instead of Image")
    images.add_argument("--jpeg-quality", type=int_at_least(0, maximum=100), default=90,
                        metavar="Q",
                        help="JPEG quality 0..100 with --compression jpeg (default: 90)")
    images.add_argument("--resize", type=parse_size, metavar="HxW",
                        help="scale images (and labels) to this size in pixels")
    timing = parser.add_argument_group("frames and stamps")
    timing.add_argument("--rate", type=float_in(0.0, 1000.0), metavar="HZ",
                        help="frame rate of the inputs (default: the video's own, "
                        f"{DEFAULT_RATE_HZ:g} Hz for folders)")
    timing.add_argument("--start-time", type=_start_time, default=START_TIME_NS / NS_PER_S,
                        metavar="SEC", help="stamp of the first frame, seconds since the epoch, "
                        "or 'now' (default: %(default).0f)")
    timing.add_argument("--gap", type=positive_float, default=SEQUENCE_GAP_S, metavar="SEC",
                        help="seconds from one input's last frame to the next input's first "
                        "(default: %(default)g)")
    timing.add_argument("--stride", type=positive_int, default=1, metavar="N",
                        help="keep every N-th frame of each input (default: 1)")
    timing.add_argument("--max-frames", type=positive_int, metavar="N",
                        help="stop after N frames written (all inputs together)")
    parser.add_argument("--storage", choices=STORAGES, default=STORAGES[0],
                        help="rosbag2 storage plugin (default: %(default)s)")
    parser.set_defaults(handler=run)
    return parser


def _start_time(text: str) -> float:
    """An argparse type: seconds since the epoch in [0, 2**31 - 1], or ``now``."""
    if text.strip().lower() == "now":
        return time.time()
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'now', got '{text}'") from None
    if not 0.0 <= value <= _MAX_START_S:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds in 0..{_MAX_START_S:.0f}, "
                                         f"got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class ImageFormat:
    """How frames become messages: the camera ``topic`` (``TOPIC/compressed`` with a
    ``compression``), ``encoding``, JPEG quality, ``resize`` (height, width) or None, and the
    header ``frame_id``."""

    topic: str
    encoding: str
    compression: str | None
    jpeg_quality: int
    resize: tuple[int, int] | None
    frame_id: str

    @property
    def image_topic(self) -> str:
        """The topic the images are written on."""
        return self.topic.rstrip("/") + "/compressed" if self.compression else self.topic

    @property
    def msgtype(self) -> str:
        """The message type of the images."""
        return COMPRESSED_IMAGE if self.compression else IMAGE

    @property
    def description(self) -> str:
        """E.g. ``Image rgb8`` or ``CompressedImage rgb8; jpeg compressed bgr8``, for the
        summary."""
        return f"{self.msgtype.rsplit('/', 1)[-1]} {self._format or self.encoding}"

    @property
    def _format(self) -> str | None:
        """The CompressedImage format string, image_transport's way, or None (raw)."""
        if self.compression is None:
            return None
        target = "mono8" if self.encoding == "mono8" else "bgr8"
        return f"{self.encoding}; {self.compression} compressed {target}"

    def scaled(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        """``array`` (H, W[, C]) at the ``resize`` size (itself without one)."""
        if self.resize is None or array.shape[:2] == self.resize:
            return array
        height, width = self.resize
        return cv2.resize(array, (width, height), interpolation=interpolation)

    def write(self, writer: BagWriter, stamp_ns: int, rgb: np.ndarray) -> tuple[int, int]:
        """Write the RGB (H, W, 3) uint8 frame ``rgb`` stamped ``stamp_ns``; its written
        (height, width) in pixels."""
        pixels = self.scaled(rgb, cv2.INTER_AREA)
        if self.encoding == "mono8":
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        if self.compression:
            writer.write_compressed(self.image_topic, stamp_ns, self.frame_id, pixels,
                                    self._format, jpeg_quality=self.jpeg_quality)
        else:
            writer.write_image(self.image_topic, stamp_ns, self.frame_id, pixels, self.encoding)
        return pixels.shape[0], pixels.shape[1]


@dataclasses.dataclass
class Written:
    """What a conversion wrote: frames and labels, first and last stamps (int ns), the frame
    sizes (height, width) seen, and whether Ctrl-C stopped it."""

    frames: int = 0
    labels: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    sizes: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    interrupted: bool = False


Input = VideoInput | FolderInput


def run(args: argparse.Namespace) -> int:
    """Convert as ``args`` say and print one summary line. 0 when done, 130 when interrupted
    (the bag holds the frames written), 2 on a bad input or argument, 1 when writing fails."""
    image_format = ImageFormat(args.topic, args.encoding, args.compression, args.jpeg_quality,
                               args.resize, args.frame_id)
    try:
        inputs = _open_inputs(args.inputs, args.labels)
        labelled = any(source.labelled for source in inputs)
        if labelled and args.label_topic == image_format.image_topic:
            raise InputError(f"the images and the labels would share the topic {args.label_topic}")
        _clear_output(args.out, args.force)
    except InputError as exc:
        return _error(exc, 2)
    for source in inputs:
        if source.labelled and source.unlabelled:
            print(f"lmanet bag: warning: {len(source.unlabelled)} of {source.count} images of "
                  f"{source.path} have no label (first: {source.unlabelled[0]}); they are "
                  "written without one", file=sys.stderr)
    written = Written()
    try:
        _write(args, inputs, image_format, labelled, written)
    except (InputError, ValueError) as exc:
        return _error(exc, 2)
    except (BagError, OSError) as exc:
        return _error(exc, 1)
    print(_summary(args, image_format, written))
    return 130 if written.interrupted else 0


def _error(exc: Exception, code: int) -> int:
    print(f"lmanet bag: error: {exc}", file=sys.stderr)
    return code


def _open_inputs(paths: Sequence[Path], labels: Sequence[Path] | None) -> list[Input]:
    """Every input, checked; ``labels`` (one per input) or None."""
    if labels is not None and len(labels) != len(paths):
        raise InputError(f"{len(labels)} --labels folder(s) for {len(paths)} input(s): give "
                         "one per input, in the same order")
    return [open_input(path, None if labels is None else labels[k])
            for k, path in enumerate(paths)]


def _clear_output(out: Path, force: bool) -> None:
    """Make room for the bag at ``out``: nothing to do when it does not exist; with ``force``, an
    existing rosbag2 (or empty folder) is removed; anything else is an InputError."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise InputError(f"{out} exists already (--force replaces a rosbag2)")
    if out.is_dir() and not out.is_symlink() and (
            (out / "metadata.yaml").is_file() or not any(out.iterdir())):
        shutil.rmtree(out)
        return
    raise InputError(f"{out} is not a rosbag2 (a folder with a metadata.yaml): not replacing it")


def _write(args: argparse.Namespace, inputs: Sequence[Input], image_format: ImageFormat,
           labelled: bool, written: Written) -> None:
    """Write the bag; Ctrl-C closes it with the frames so far (``written.interrupted``), an
    error removes it and is raised."""
    writer = BagWriter(args.out, storage=args.storage)
    writer.open()
    try:
        try:
            writer.add_topic(image_format.image_topic, image_format.msgtype)
            if labelled:
                writer.add_topic(args.label_topic, IMAGE)
            with progress(_total(inputs, args.stride, args.max_frames), "bag") as bar, \
                    StopRequest() as stop:
                _convert(writer, args, inputs, image_format, written, bar, stop)
        except KeyboardInterrupt:  # a second Ctrl-C, in the middle of a frame
            written.interrupted = True
        finally:
            writer.close()
    except (InputError, ValueError, BagError, OSError):
        shutil.rmtree(args.out, ignore_errors=True)
        raise


class StopRequest:
    """Ctrl-C while converting, as a context manager: the first SIGINT sets ``requested`` (the
    conversion stops after the current frame), a second one raises KeyboardInterrupt. Outside
    the main thread (no signal handlers there) it never fires and Ctrl-C acts as usual."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None
                          else signal.default_int_handler)
            self._installed = False

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _convert(writer: BagWriter, args: argparse.Namespace, inputs: Sequence[Input],
             image_format: ImageFormat, written: Written, bar, stop: StopRequest) -> None:
    """Write the frames of ``inputs`` in turn (stamps as the module docstring says), counting
    them in ``written`` and on ``bar``, until the last, ``--max-frames`` or a ``stop``."""
    start_ns = seconds_to_ns(args.start_time)
    for source in inputs:
        rate = args.rate or source.fps or DEFAULT_RATE_HZ
        for index, frame in source.frames(args.stride):
            stamp = start_ns + round(index * NS_PER_S / rate)
            written.sizes.add(image_format.write(writer, stamp, frame.rgb))
            if frame.label is not None:
                label = image_format.scaled(frame.label, cv2.INTER_NEAREST)
                writer.write_image(args.label_topic, stamp, image_format.frame_id, label,
                                   "mono8")
                written.labels += 1
            written.frames += 1
            written.first_ns = stamp if written.first_ns is None else written.first_ns
            written.last_ns = stamp
            bar.update(1)
            if stop.requested:
                written.interrupted = True
                return
            if written.frames == args.max_frames:
                return
        start_ns = (start_ns if written.last_ns is None else written.last_ns) + \
            seconds_to_ns(args.gap)


def _total(inputs: Sequence[Input], stride: int, max_frames: int | None) -> int | None:
    """Frames to write, for the progress bar (None when a video does not say its length)."""
    counts = [source.count for source in inputs]
    total = None if None in counts else sum(math.ceil(n / stride) for n in counts)
    if max_frames is None:
        return total
    return max_frames if total is None else min(total, max_frames)


def _summary(args: argparse.Namespace, image_format: ImageFormat, written: Written) -> str:
    """One line: the bag, its storage and size, frames, topics, sizes and the stamps' span."""
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    sizes = ", ".join(format_size(s) for s in sorted(written.sizes)) or "no frames"
    labels = f", {written.labels} labels on {args.label_topic}" if written.labels else ""
    span = (f"; {ns_to_seconds(written.last_ns - written.first_ns):.3f} s of stamps from "
            f"{ns_to_seconds(written.first_ns):.3f}" if written.frames else "")
    return (f"{'interrupted: ' if written.interrupted else ''}wrote {args.out} ({args.storage}, "
            f"{size / 2 ** 20:.2f} MiB): {written.frames} frames ({sizes}) on "
            f"{image_format.image_topic} ({image_format.description}){labels}{span}")
