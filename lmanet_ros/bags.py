"""Camera images in rosbag2 files, read and written through the `rosbags` library (no ROS runtime).

Both rosbag2 storages are supported: ``mcap`` (the default since ROS 2 Iron) and ``sqlite3``.
Messages are (de)serialised with one type store, the ROS 2 Jazzy store of `rosbags`
(:func:`typestore`; the definitions of ``sensor_msgs/msg/Image`` and
``sensor_msgs/msg/CompressedImage`` are the same from Humble on, so it reads bags of any of them).
Bags are written in rosbag2 format version 8; images through one CDR serialiser
(:func:`image_cdr`), which is also the fast path of the evaluation's output bags.

Order: readers yield messages in recorded order, which is the order of their log (receive) times
in the bag, across all requested topics, as ``ros2 bag play`` replays them; messages with equal log
times keep their storage order. Header stamps play no part in the order: a camera whose clock
jumps back is read in the order it was recorded.

Pixels: colour images come back as RGB ``(H, W, 3)`` uint8 (any encoding that
:func:`lmanet_ros.imaging.decode_image` knows; JPEG / PNG through
:func:`~lmanet_ros.imaging.decode_compressed`). Single-channel 8-bit images (``mono8``, ``8UC1``,
and compressed images whose format starts with one of them) come back as ``(H, W)`` uint8 with
the stored values untouched, because such streams carry class-id masks (trainIds, 255 void) as
well as grey camera images; ``np.repeat(a[..., None], 3, 2)`` makes a grey one RGB. Arrays may be
read-only views of the message buffer: copy before writing into them.

Bad messages: a message that cannot be deserialised or whose image cannot be decoded (data too
short, corrupt JPEG, unknown encoding...) is reported with a :class:`BadMessageWarning` naming
its topic, log time and reason, counted in an optional :class:`ReadStats`, and skipped; the
iteration goes on.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from lmanet_ros.imaging import (ImageError, decode_compressed, decode_image, encode_compressed,
                                encode_image)
from lmanet_ros.stamps import NS_PER_S, split_ns, stamp_ns

__all__ = [
    "BadMessageWarning", "BagError", "BagReader", "BagWriter", "COMPRESSED_IMAGE",
    "DIAGNOSTIC_ARRAY", "IMAGE", "IMAGE_TYPES", "ImageRecord", "MONO_ENCODINGS", "ReadStats",
    "STORAGES", "iter_images", "list_image_topics", "pair_images_and_labels", "typestore",
    "decode_message", "decode_label", "header_of", "image_cdr", "image_message",
    "compressed_message", "read_labels", "warn_bad_message",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES: tuple[str, ...] = (IMAGE, COMPRESSED_IMAGE)
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
DIAGNOSTIC_STATUS = "diagnostic_msgs/msg/DiagnosticStatus"
#: Encodings decoded to (H, W) arrays of the stored values instead of RGB.
MONO_ENCODINGS: tuple[str, ...] = ("mono8", "8UC1")
#: Storage plugins, the first one the default.
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_BAG_VERSION = 8
_MAX_PROBLEMS = 100


class BagError(Exception):
    """A bag cannot be opened, read or written as asked (missing, unreadable, wrong topic)."""


class BadMessageWarning(UserWarning):
    """One message of a bag could not be decoded and was skipped."""


@functools.lru_cache(maxsize=1)
def typestore():
    """The ROS 2 type store used to (de)serialise messages (Jazzy definitions)."""
    return get_typestore(Stores.ROS2_JAZZY)


@dataclasses.dataclass
class ReadStats:
    """Counts of one read: image messages decoded, messages skipped (total and per topic).

    ``problems`` keeps the first 100 skip reasons as ``"topic @ log_time_ns: reason"``.
    """

    decoded: int = 0
    skipped: int = 0
    skipped_by_topic: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)
    problems: list[str] = dataclasses.field(default_factory=list)

    def skip(self, topic: str, log_time_ns: int, reason: str) -> None:
        """Count one skipped message of ``topic`` and keep its reason."""
        self.skipped += 1
        self.skipped_by_topic[topic] += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(f"{topic} @ {log_time_ns}: {reason}")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One decoded image message.

    ``log_time_ns`` is the bag's receive time, ``stamp_ns`` the header stamp (both int ns).
    ``encoding`` is the Image encoding or the CompressedImage format string. ``image`` is RGB
    ``(H, W, 3)`` uint8, or ``(H, W)`` uint8 for single-channel 8-bit streams (see the module
    docstring).
    """

    topic: str
    log_time_ns: int
    stamp_ns: int
    frame_id: str
    encoding: str
    image: np.ndarray

    @property
    def is_mono(self) -> bool:
        """True for a single-channel (H, W) image (label masks, grey cameras)."""
        return self.image.ndim == 2


# ------------------------------------------------------------------------------ messages
def _header(stamp_ns: int, frame_id: str):
    store = typestore()
    sec, nanosec = split_ns(_non_negative(stamp_ns, "stamp_ns"))
    time_type = store.types["builtin_interfaces/msg/Time"]
    header_type = store.types["std_msgs/msg/Header"]
    return header_type(stamp=time_type(sec=sec, nanosec=nanosec), frame_id=str(frame_id))


def _non_negative(value: int, name: str) -> int:
    value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _is_mono(encoding: str) -> bool:
    return encoding.strip() in MONO_ENCODINGS


def _is_mono_format(fmt: str) -> bool:
    """True for CompressedImage formats of single-channel 8-bit images ("mono8; png ...")."""
    first = fmt.split(";", 1)[0].strip()
    return first in MONO_ENCODINGS


def image_message(stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str = "rgb8"):
    """A ``sensor_msgs/msg/Image`` of ``array`` (RGB (H, W, 3), or (H, W) for mono encodings).

    Any encoding :func:`lmanet_ros.imaging.encode_image` supports; a ``(H, W)`` array with
    ``mono8`` / ``8UC1`` is stored as it is (class-id masks).
    """
    array = np.asarray(array)
    step, data = encode_image(array, encoding)
    image_type = typestore().types[IMAGE]
    return image_type(header=_header(stamp_ns, frame_id), height=int(array.shape[0]),
                      width=int(array.shape[1]), encoding=encoding, is_bigendian=0,
                      step=int(step), data=np.frombuffer(data, np.uint8))


def compressed_message(stamp_ns: int, frame_id: str, array: np.ndarray, fmt: str = "jpeg", *,
                       jpeg_quality: int = 90):
    """A ``sensor_msgs/msg/CompressedImage`` of ``array`` compressed as ``fmt`` (jpeg / png).

    A ``(H, W)`` array is compressed as a grey image; give it a format such as
    ``"mono8; png compressed mono8"`` so that readers return it as ``(H, W)``.
    """
    data = encode_compressed(np.asarray(array), fmt, jpeg_quality=jpeg_quality)
    compressed_type = typestore().types[COMPRESSED_IMAGE]
    return compressed_type(header=_header(stamp_ns, frame_id), format=fmt,
                           data=np.frombuffer(data, np.uint8))


def _cdr_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return len(raw).to_bytes(4, "little") + raw


def image_cdr(stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str = "rgb8") -> bytes:
    """A little-endian CDR ``sensor_msgs/msg/Image`` of ``array``, built without a message object.

    The same bytes as ``typestore().serialize_cdr(image_message(...))`` (any encoding of
    :func:`lmanet_ros.imaging.encode_image`), at a fraction of the cost: the one serialiser of
    image messages written to bags.
    """
    array = np.asarray(array)
    height, width = array.shape[:2]
    step, data = encode_image(array, encoding)
    sec, nanosec = split_ns(_non_negative(stamp_ns, "stamp_ns"))
    out = bytearray(b"\x00\x01\x00\x00")
    out += sec.to_bytes(4, "little", signed=True) + nanosec.to_bytes(4, "little")
    out += _cdr_string(str(frame_id))
    out += b"\0" * (-(len(out) - 4) % 4)
    out += int(height).to_bytes(4, "little") + int(width).to_bytes(4, "little")
    out += _cdr_string(encoding)
    out += b"\0"  # is_bigendian
    out += b"\0" * (-(len(out) - 4) % 4)
    out += int(step).to_bytes(4, "little") + len(data).to_bytes(4, "little")
    out += data
    return bytes(out)


def header_of(data: bytes | memoryview, msgtype: str) -> tuple[int | None, str]:
    """(header stamp in int ns, frame_id) of a CDR-serialised message that starts with a
    std_msgs/Header; ``(None, "")`` when it has none or is too short.

    Image and CompressedImage are read straight from the bytes (no pixels touched); other types
    are deserialised with the type store.
    """
    view = memoryview(data)
    if msgtype in IMAGE_TYPES:
        if len(view) < 16:
            return None, ""
        order = "<" if view[1] & 1 else ">"
        sec, nanosec, length = np.frombuffer(view[4:16], dtype=np.dtype(order + "u4")).tolist()
        sec = sec - (1 << 32) if sec >= 1 << 31 else sec  # int32 seconds
        frame_id = bytes(view[16:16 + max(length - 1, 0)]).decode("utf-8", "replace")
        return sec * NS_PER_S + nanosec, frame_id
    try:
        header = typestore().deserialize_cdr(bytes(view), msgtype).header
    except Exception:  # noqa: BLE001 - any type without a (known) header, or byte soup
        return None, ""
    return stamp_ns(header), str(header.frame_id)


def decode_label(msgtype: str, msg) -> np.ndarray:
    """The ``(H, W)`` uint8 class ids of a deserialised label image (mono8 / 8UC1, plain or
    compressed).

    Raises:
        ImageError: the image cannot be decoded.
        ValueError: it is not a single-channel 8-bit image.
    """
    pixels, encoding = decode_message(msgtype, msg)
    if pixels.ndim != 2:
        raise ValueError(f"a label image must be mono8 (class ids), got '{encoding}'")
    return pixels


def _decode_mono(msg) -> np.ndarray:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"{msg.encoding} image of {width}x{height} pixels")
    if step < width:
        raise ImageError(f"{msg.encoding} step {step} is shorter than the width {width}")
    data = np.asarray(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise ImageError(f"image data too short: {data.size} bytes, {msg.encoding} "
                         f"{width}x{height} with step {step} needs {step * height}")
    return data[:step * height].reshape(height, step)[:, :width]


def decode_message(msgtype: str, msg) -> tuple[np.ndarray, str]:
    """The pixels and encoding (or format) of a deserialised Image or CompressedImage.

    Raises:
        ImageError: the image cannot be decoded.
        ValueError: ``msgtype`` is not an image type.
    """
    if msgtype == IMAGE:
        if _is_mono(msg.encoding):
            return _decode_mono(msg), msg.encoding
        return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                            bool(msg.is_bigendian)), msg.encoding
    if msgtype == COMPRESSED_IMAGE:
        rgb = decode_compressed(msg.format, msg.data)
        if _is_mono_format(msg.format):
            return np.ascontiguousarray(rgb[:, :, 0]), msg.format
        return rgb, msg.format
    raise ValueError(f"not an image message type: {msgtype}")


# ------------------------------------------------------------------------------ writing
class _BagFile:
    """What a bag reader and a bag writer share: the path, the open rosbags handle, the context
    manager protocol and a close that is safe to call twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None  # the rosbags Reader or Writer while open

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the bag (a writer writes its index and metadata); safe to call twice."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def _opened(self):
        if self._handle is None:
            raise BagError(f"{self.path}: not open (use `with {type(self).__name__}(...)` or "
                           f"open())")
        return self._handle


class BagWriter(_BagFile):
    """Write a new rosbag2 (context manager).

    ``BagWriter(path, storage="mcap")`` creates the bag directory ``path``, which must not exist.
    Topics are added with :meth:`add_topic` or on first use by :meth:`write_image` /
    :meth:`write_compressed`. Log times default to the header stamp. Leaving the ``with`` block
    closes the bag, also on an exception, so what was written stays readable.
    """

    def __init__(self, path: str | Path, *, storage: str = STORAGES[0]) -> None:
        if storage not in _PLUGINS:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        super().__init__(Path(path))
        self.storage = storage
        self._connections: dict[str, tuple[str, object]] = {}
        self.counts: collections.Counter = collections.Counter()

    def open(self) -> None:
        """Create the bag; raises :class:`BagError` when ``path`` exists or cannot be created."""
        if self._handle is not None:
            raise BagError(f"{self.path}: already open")
        if self.path.exists():
            raise BagError(f"{self.path} exists already; rosbag2 writers only create new bags")
        writer = Writer(self.path, version=_BAG_VERSION, storage_plugin=_PLUGINS[self.storage])
        try:
            writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"cannot create bag {self.path}: {exc}") from exc
        self._handle = writer

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` with message type ``msgtype`` (e.g. ``sensor_msgs/msg/Image``).

        Declaring a topic again with the same type does nothing; with another type it raises
        ValueError, as does a type the ROS 2 type store does not know.
        """
        writer = self._opened()
        if not isinstance(topic, str) or not topic.startswith("/"):
            raise ValueError(f"topic must be an absolute name such as /camera/image, "
                             f"got {topic!r}")
        known = self._connections.get(topic)
        if known is not None:
            if known[0] != msgtype:
                raise ValueError(f"topic {topic} is already declared as {known[0]}, "
                                 f"not {msgtype}")
            return
        store = typestore()
        if msgtype not in store.types:
            raise ValueError(f"unknown message type {msgtype!r} (not in the ROS 2 type store)")
        self._connections[topic] = (msgtype, writer.add_connection(topic, msgtype,
                                                                   typestore=store))

    def write_raw(self, topic: str, log_time_ns: int, data: bytes) -> None:
        """Write already CDR-serialised ``data`` on a declared ``topic`` at ``log_time_ns``."""
        writer = self._opened()
        if topic not in self._connections:
            raise ValueError(f"topic {topic} is not declared: call add_topic first")
        writer.write(self._connections[topic][1], _non_negative(log_time_ns, "log_time_ns"), data)
        self.counts[topic] += 1

    def write(self, topic: str, log_time_ns: int, message) -> None:
        """Serialise and write any type-store ``message`` on ``topic`` (declared on first use)."""
        msgtype = getattr(message, "__msgtype__", None)
        if msgtype is None:
            raise ValueError(f"not a rosbags message object: {type(message).__name__}")
        self.add_topic(topic, msgtype)
        self.write_raw(topic, log_time_ns, typestore().serialize_cdr(message, msgtype))

    def write_image(self, topic: str, stamp_ns: int, frame_id: str, array: np.ndarray,
                    encoding: str = "rgb8", *, log_time_ns: int | None = None) -> None:
        """Write ``array`` as a ``sensor_msgs/msg/Image`` (see :func:`image_message`), serialised
        by :func:`image_cdr` (the fast path)."""
        self.add_topic(topic, IMAGE)
        self.write_raw(topic, stamp_ns if log_time_ns is None else log_time_ns,
                       image_cdr(stamp_ns, frame_id, array, encoding))

    def write_status(self, topic: str, stamp_ns: int, frame_id: str, *, name: str, message: str,
                     hardware_id: str = "", log_time_ns: int | None = None) -> None:
        """Write a ``diagnostic_msgs/msg/DiagnosticArray`` of one OK-level DiagnosticStatus
        (``name``, ``message``, ``hardware_id``, no values) stamped ``stamp_ns``."""
        store = typestore()
        status = store.types[DIAGNOSTIC_STATUS](level=0, name=name, message=message,
                                                hardware_id=hardware_id, values=[])
        msg = store.types[DIAGNOSTIC_ARRAY](header=_header(stamp_ns, frame_id), status=[status])
        self.write(topic, stamp_ns if log_time_ns is None else log_time_ns, msg)

    def write_compressed(self, topic: str, stamp_ns: int, frame_id: str, array: np.ndarray,
                         fmt: str = "jpeg", *, log_time_ns: int | None = None,
                         jpeg_quality: int = 90) -> None:
        """Write ``array`` as a ``sensor_msgs/msg/CompressedImage`` (see
        :func:`compressed_message`)."""
        msg = compressed_message(stamp_ns, frame_id, array, fmt, jpeg_quality=jpeg_quality)
        self.write(topic, stamp_ns if log_time_ns is None else log_time_ns, msg)


# ------------------------------------------------------------------------------ reading
class BagReader(_BagFile):
    """Read a rosbag2 of either storage (context manager).

    ``path`` is the bag directory, or a file inside it (``*.mcap`` / ``*.db3``). ``topics`` maps
    every topic to ``(msgtype, message count)``; :meth:`images` decodes image messages in
    recorded order, :meth:`messages` deserialises any, :meth:`raw` gives the serialised bytes.
    An open reader can be read any number of times (one reader serves a whole evaluation).
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        super().__init__(path.parent if path.is_file() else path)

    def open(self) -> None:
        """Open the bag; raises :class:`BagError` when it is missing or unreadable."""
        if self._handle is not None:
            return
        if not self.path.exists():
            raise BagError(f"no bag at {self.path}")
        try:
            reader = Reader(self.path)
            reader.open()
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            raise BagError(f"cannot read bag {self.path}: {exc}") from exc
        self._handle = reader

    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        """Every topic of the bag: ``{topic: (msgtype, message count)}``, sorted by topic."""
        reader = self._opened()
        return {name: (info.msgtype or "", int(info.msgcount))
                for name, info in sorted(reader.topics.items())}

    def image_topics(self) -> dict[str, tuple[str, int]]:
        """The topics of Image or CompressedImage messages, as :attr:`topics`."""
        return {name: value for name, value in self.topics.items() if value[0] in IMAGE_TYPES}

    def image_topics_in_bag_order(self) -> list[str]:
        """The image topics in the order their connections were declared in the bag."""
        return list(dict.fromkeys(c.topic for c in self._opened().connections
                                  if c.msgtype in IMAGE_TYPES))

    @property
    def storage(self) -> str:
        """The storage plugin of the bag: ``mcap``, ``sqlite3`` or ``unknown`` (from its files)."""
        for name, suffix in (("mcap", "mcap"), ("sqlite3", "db3")):
            if any(self.path.glob(f"*.{suffix}")) or any(self.path.glob(f"*.{suffix}.zstd")):
                return name
        text = (self.path / "metadata.yaml").read_text(encoding="utf-8", errors="replace")
        return next((name for name in STORAGES if f"storage_identifier: {name}" in text),
                    "unknown")

    def _connections(self, topics: Iterable[str] | None, image_only: bool) -> list:
        reader = self._opened()
        available = self.image_topics() if image_only else self.topics
        if topics is None:
            wanted = set(available)
        else:
            wanted = {topics} if isinstance(topics, str) else set(topics)
            for topic in sorted(wanted):
                if topic not in available:
                    kind = "image topic" if image_only else "topic"
                    what = (f"it carries {self.topics[topic][0]}" if topic in self.topics
                            else "no such topic")
                    raise BagError(f"{self.path}: {topic} is not an {kind} ({what}); "
                                   f"{kind}s: {', '.join(available) or 'none'}")
        return [c for c in reader.connections if c.topic in wanted]

    def messages(self, topics: Iterable[str] | str | None = None, *,
                 stats: ReadStats | None = None) -> Iterator[tuple[str, str, int, object]]:
        """Deserialised messages ``(topic, msgtype, log_time_ns, message)`` in recorded order.

        Messages that cannot be deserialised are warned about, counted and skipped.
        """
        store = typestore()
        for connection, log_time, data in self.raw(topics):
            try:
                msg = store.deserialize_cdr(data, connection.msgtype)
            except Exception as exc:  # noqa: BLE001 - any byte soup may fail in any way
                warn_bad_message(stats, connection.topic, log_time, f"cannot deserialise: {exc!r}")
                continue
            yield connection.topic, connection.msgtype, int(log_time), msg

    def images(self, topics: Iterable[str] | str | None = None, *,
               stats: ReadStats | None = None) -> Iterator[ImageRecord]:
        """Decoded images of ``topics`` (default: every image topic) in recorded order."""
        for topic, msgtype, log_time, msg in self.messages(
                self._image_topic_names(topics), stats=stats):
            record = _record(topic, msgtype, log_time, msg, stats)
            if record is not None:
                yield record

    def raw(self, topics: Iterable[str] | str | None = None) -> Iterator[tuple]:
        """Serialised messages ``(connection, log_time_ns, data)`` in recorded order; the
        connection has ``topic`` and ``msgtype``. Unknown topics raise :class:`BagError`."""
        reader = self._opened()
        connections = self._connections(topics, image_only=False)
        if connections:  # rosbags reads every topic when given none
            yield from reader.messages(connections=connections)

    def _image_topic_names(self, topics: Iterable[str] | str | None) -> list[str]:
        return [c.topic for c in self._connections(topics, image_only=True)]


def warn_bad_message(stats: ReadStats | None, topic: str, log_time_ns: int,
                     reason: str) -> None:
    """Report one skipped message: a :class:`BadMessageWarning`, and a count in ``stats``."""
    warnings.warn(f"skipping message on {topic} at log time {log_time_ns} ns: {reason}",
                  BadMessageWarning, stacklevel=3)
    if stats is not None:
        stats.skip(topic, int(log_time_ns), reason)


def _record(topic: str, msgtype: str, log_time: int, msg, stats: ReadStats | None,
            report: bool = True) -> ImageRecord | None:
    try:
        pixels, encoding = decode_message(msgtype, msg)
        stamp, frame_id = stamp_ns(msg.header), str(msg.header.frame_id)
    except (ImageError, ValueError, AttributeError) as exc:
        if report:
            warn_bad_message(stats, topic, log_time, f"cannot decode image: {exc}")
        return None
    if stats is not None:
        stats.decoded += 1
    return ImageRecord(topic=topic, log_time_ns=log_time, stamp_ns=stamp, frame_id=frame_id,
                       encoding=encoding, image=pixels)


def list_image_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """The image topics of the bag at ``path``: ``{topic: (msgtype, message count)}``."""
    with BagReader(path) as reader:
        return reader.image_topics()


def iter_images(path: str | Path, topics: Iterable[str] | str | None = None, *,
                stats: ReadStats | None = None) -> Iterator[ImageRecord]:
    """Decoded images of ``topics`` (default: all image topics) of the bag at ``path``, in
    recorded order; bad messages are warned about, counted in ``stats`` and skipped."""
    with BagReader(path) as reader:
        yield from reader.images(topics, stats=stats)


@contextlib.contextmanager
def _reading(bag: str | Path | BagReader) -> Iterator[BagReader]:
    """An open reader: ``bag`` itself when it is one (left open), else one opened here."""
    if isinstance(bag, BagReader):
        bag.open()
        yield bag
    else:
        with BagReader(bag) as reader:
            yield reader


def read_labels(bag: str | Path | BagReader, topic: str, *,
                stats: ReadStats | None = None) -> dict[int, np.ndarray]:
    """Every label image of ``topic`` of ``bag`` (a path, or an open reader: left open) as
    ``{header stamp ns: (H, W) uint8}`` (the last one of a repeated stamp); undecodable ones are
    warned about, counted and skipped.

    Raises:
        BagError: no such image topic, or it carries colour images.
    """
    labels: dict[int, np.ndarray] = {}
    with _reading(bag) as reader:
        for record in reader.images([topic], stats=stats):
            if not record.is_mono:
                raise BagError(f"{topic} carries {record.encoding} images, not mono8 class ids")
            labels[record.stamp_ns] = np.ascontiguousarray(record.image)
    return labels


def _label_matches(reader: BagReader, image_topic: str, label_topic: str) -> dict[int, int]:
    """Per stamp: how many images of ``image_topic`` get a label (min of images and decodable
    labels of that stamp). Reads image headers only; warnings are left to the pairing pass."""
    images: collections.Counter = collections.Counter()
    labels: collections.Counter = collections.Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadMessageWarning)
        for connection, _, data in reader.raw([image_topic]):
            stamp = header_of(data, connection.msgtype)[0]
            if stamp is not None:
                images[stamp] += 1
        for topic, msgtype, log_time, msg in reader.messages([label_topic]):
            if _record(topic, msgtype, log_time, msg, None, report=False) is not None:
                labels[stamp_ns(msg.header)] += 1
    return {s: min(n, labels[s]) for s, n in images.items() if s in labels}


def pair_images_and_labels(bag: str | Path | BagReader, image_topics: str | Sequence[str],
                           label_topic: str | None = None, *, stride: int = 1,
                           stats: ReadStats | None = None
                           ) -> Iterator[tuple[ImageRecord, np.ndarray | None]]:
    """Images of ``image_topics`` in recorded order, each with the label of ``label_topic``
    whose header stamp equals the image's exactly, or None when there is none.

    Args:
        bag: a bag path, or an open :class:`BagReader` (read again, left open).
        image_topics: one camera topic or several; labels belong to the first one.
        label_topic: the ground truth topic, or None (every image comes with None).
        stride: yield every ``stride``-th image of each topic (the others are not decoded; the
            label of a left-out image is dropped, not given to another).
        stats: counts of decoded and skipped messages.

    Labels may be recorded before or after their image. The bag is read twice: first the stamps
    of the images (from the serialised headers) and of the decodable labels, then to pair. Only
    images waiting for a label recorded later, and labels waiting for their image, are held in
    memory. With repeated stamps, the n-th image of a stamp gets the n-th label of that stamp.
    The label array is what the reader decodes (``(H, W)`` for mono8 masks). Bad messages are
    warned about and counted (in ``stats``) once.
    """
    topics = [image_topics] if isinstance(image_topics, str) else list(image_topics)
    if label_topic is not None and label_topic in topics:
        raise ValueError("image_topic and label_topic must differ")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    wanted = topics + ([label_topic] if label_topic is not None else [])
    with _reading(bag) as reader:
        reader._connections(wanted, image_only=True)  # all must exist
        labelled = topics[0] if label_topic is not None else None
        # Matches per stamp, spent separately by images (claims) and labels (keeps).
        claims = _label_matches(reader, labelled, label_topic) if labelled else {}
        keeps = dict(claims)
        drops: collections.Counter = collections.Counter()  # labels of left-out images
        seen = dict.fromkeys(topics, 0)
        waiting: collections.deque[tuple[ImageRecord, bool]] = collections.deque()
        labels: dict[int, collections.deque] = {}
        for topic, msgtype, log_time, msg in reader.messages(wanted, stats=stats):
            if topic == label_topic:
                record = _record(topic, msgtype, log_time, msg, stats)
                if record is not None and keeps.get(record.stamp_ns, 0) > 0:
                    keeps[record.stamp_ns] -= 1
                    if drops[record.stamp_ns]:
                        drops[record.stamp_ns] -= 1
                    else:
                        labels.setdefault(record.stamp_ns, collections.deque()).append(
                            record.image)
            else:
                stamp = stamp_ns(msg.header)
                claim = topic == labelled and claims.get(stamp, 0) > 0
                if claim:
                    claims[stamp] -= 1
                seen[topic] += 1
                record = None if (seen[topic] - 1) % stride else \
                    _record(topic, msgtype, log_time, msg, stats)
                if record is not None:
                    waiting.append((record, claim))
                elif claim:  # left out or undecodable: drop its label (now or when it comes)
                    if labels.get(stamp):
                        _take(labels, stamp)
                    else:
                        drops[stamp] += 1
            while waiting:  # release images from the front of the queue, in order
                head, head_claims = waiting[0]
                if head_claims and not labels.get(head.stamp_ns):
                    break
                waiting.popleft()
                yield head, _take(labels, head.stamp_ns) if head_claims else None
        while waiting:
            head, head_claims = waiting.popleft()
            yield head, (_take(labels, head.stamp_ns) if head_claims and labels.get(head.stamp_ns)
                         else None)


def _take(labels: dict[int, collections.deque], stamp: int) -> np.ndarray:
    """The first label waiting for ``stamp``; forgets the stamp once none is left."""
    queue = labels[stamp]
    label = queue.popleft()
    if not queue:
        del labels[stamp]
    return label
