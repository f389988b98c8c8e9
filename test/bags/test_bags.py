"""Tests of rosbag2 image reading and writing (lmanet_ros.bags) on real bags in tmp_path."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from lmanet_ros.bags import (COMPRESSED_IMAGE, IMAGE, STORAGES, BadMessageWarning, BagError,
                             BagReader, BagWriter, ReadStats, header_of, image_cdr, image_message,
                             iter_images, list_image_topics, pair_images_and_labels, typestore)
from lmanet_ros.stamps import stamp_ns

H, W = 64, 128
T0 = 1_700_000_000 * 10**9
PERIOD = 58_823_529  # 17 Hz


def _rgb(index: int, height: int = H, width: int = W) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _mask(index: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + index)
    mask = rng.integers(0, 19, (H, W), dtype=np.uint8)
    mask[:4] = 255
    return mask


@pytest.fixture(params=STORAGES)
def storage(request) -> str:
    return request.param


def test_round_trip_images_and_labels(tmp_path, storage):
    path = tmp_path / "bag"
    with BagWriter(path, storage=storage) as writer:
        writer.add_topic("/camera/image", IMAGE)
        for i in range(12):
            stamp = T0 + i * PERIOD
            writer.write_image("/camera/image", stamp, "camera", _rgb(i), "rgb8",
                               log_time_ns=stamp + 9_000_000)
            writer.write_image("/camera/labels", stamp, "camera", _mask(i), "mono8",
                               log_time_ns=stamp + 10_000_000)
        writer.write_image("/camera/bgr", T0, "other_frame", _rgb(99), "bgr8")
    assert writer.counts == {"/camera/image": 12, "/camera/labels": 12, "/camera/bgr": 1}
    assert list_image_topics(path) == {"/camera/bgr": (IMAGE, 1), "/camera/image": (IMAGE, 12),
                                       "/camera/labels": (IMAGE, 12)}

    stats = ReadStats()
    records = list(iter_images(path, ["/camera/image", "/camera/labels"], stats=stats))
    assert stats.decoded == 24 and stats.skipped == 0
    assert [r.topic for r in records] == ["/camera/image", "/camera/labels"] * 12
    for i in range(12):
        image, label = records[2 * i], records[2 * i + 1]
        assert image.stamp_ns == label.stamp_ns == T0 + i * PERIOD
        assert image.log_time_ns == T0 + i * PERIOD + 9_000_000
        assert image.frame_id == label.frame_id == "camera"
        assert image.encoding == "rgb8" and label.encoding == "mono8"
        assert not image.is_mono and label.is_mono
        np.testing.assert_array_equal(image.image, _rgb(i))
        np.testing.assert_array_equal(label.image, _mask(i))
        assert label.image.dtype == np.uint8 and label.image.shape == (H, W)

    (bgr,) = iter_images(path, "/camera/bgr")
    assert bgr.frame_id == "other_frame" and bgr.log_time_ns == T0  # log time = stamp
    np.testing.assert_array_equal(bgr.image, _rgb(99))


def test_two_camera_topics_are_read_in_recorded_order(tmp_path, storage):
    """Two cameras at different rates, their messages interleaved by receive time."""
    path = tmp_path / "bag"
    expected = []
    with BagWriter(path, storage=storage) as writer:
        # Written topic by topic: the reader must merge them by log time.
        for topic, period, offset in (("/left/image", 50_000_000, 0),
                                      ("/right/image", 70_000_000, 13_000_000)):
            for i in range(8):
                log = T0 + offset + i * period
                writer.write_image(topic, log - 5_000_000, topic, _rgb(i, 8, 8), "rgb8",
                                   log_time_ns=log)
                expected.append((log, topic, i))
    expected.sort()
    records = list(iter_images(path))
    assert [(r.log_time_ns, r.topic) for r in records] == [(t, topic) for t, topic, _ in expected]
    for record, (_, _, i) in zip(records, expected):
        np.testing.assert_array_equal(record.image, _rgb(i, 8, 8))
    only_right = list(iter_images(path, "/right/image"))
    assert [r.topic for r in only_right] == ["/right/image"] * 8


def test_stamps_jumping_back_are_read_in_recorded_order(tmp_path, storage):
    """The camera clock jumps back 10 s after frame 5; the bag's log times go on forward."""
    path = tmp_path / "bag"
    stamps = [T0 + i * PERIOD for i in range(6)] + [T0 - 10**10 + i * PERIOD for i in range(6)]
    with BagWriter(path, storage=storage) as writer:
        for i, stamp in enumerate(stamps):
            writer.write_image("/camera/image", stamp, "camera", _rgb(i, 8, 8), "rgb8",
                               log_time_ns=T0 + i * PERIOD + 1_000_000)
    records = list(iter_images(path))
    assert [r.stamp_ns for r in records] == stamps
    for i, record in enumerate(records):
        np.testing.assert_array_equal(record.image, _rgb(i, 8, 8))
    assert np.all(np.diff([r.log_time_ns for r in records]) > 0)


def _write_with_bad_messages(path, storage) -> None:
    store = typestore()
    with BagWriter(path, storage=storage) as writer:
        for i in range(6):
            writer.write_image("/camera/image", T0 + i * PERIOD, "camera", _rgb(i, 8, 8))
        # Data shorter than step * height: deserialises, does not decode.
        short = image_message(T0 + 10, "camera", _rgb(50, 8, 8))
        short.data = short.data[:40]
        writer.write("/camera/image", T0 + 2 * PERIOD + 1, short)
        # Unknown encoding.
        odd = image_message(T0 + 11, "camera", _rgb(51, 8, 8))
        odd.encoding = "holographic"
        writer.write("/camera/image", T0 + 3 * PERIOD + 1, odd)
        # Bytes that are no CDR message at all.
        writer.write_raw("/camera/image", T0 + 4 * PERIOD + 1, b"\x00\x01\x00\x00garbage")
        # A corrupt JPEG on a compressed topic, next to a good one.
        writer.write_compressed("/camera/compressed", T0, "camera", _rgb(52, 16, 16), "jpeg")
        broken = store.types[COMPRESSED_IMAGE](
            header=image_message(T0 + PERIOD, "camera", _rgb(0, 2, 2)).header, format="jpeg",
            data=np.frombuffer(b"\xff\xd8\xff\xe0" + b"\x00" * 30, np.uint8))
        writer.write("/camera/compressed", T0 + PERIOD, broken)


def test_bad_messages_are_warned_about_counted_and_skipped(tmp_path, storage):
    path = tmp_path / "bag"
    _write_with_bad_messages(path, storage)
    stats = ReadStats()
    with pytest.warns(BadMessageWarning) as caught:
        records = list(iter_images(path, stats=stats))
    assert len(caught) == 4
    messages = " ".join(str(w.message) for w in caught)
    assert "/camera/image" in messages and "/camera/compressed" in messages
    assert "too short" in messages and "holographic" in messages
    assert "deserialise" in messages and "jpeg" in messages.lower()
    assert stats.skipped == 4 and stats.decoded == 7
    assert stats.skipped_by_topic == {"/camera/image": 3, "/camera/compressed": 1}
    assert len(stats.problems) == 4
    good = [r for r in records if r.topic == "/camera/image"]
    assert [r.stamp_ns for r in good] == [T0 + i * PERIOD for i in range(6)]
    for i, record in enumerate(good):
        np.testing.assert_array_equal(record.image, _rgb(i, 8, 8))


def test_compressed_images(tmp_path, storage):
    path = tmp_path / "bag"
    smooth = np.zeros((H, W, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, W, dtype=np.uint8)[None, :]
    smooth[..., 1] = np.linspace(0, 255, H, dtype=np.uint8)[:, None]
    smooth[..., 2] = 90
    with BagWriter(path, storage=storage) as writer:
        for i in range(3):
            stamp = T0 + i * PERIOD
            writer.write_compressed("/camera/image/compressed", stamp, "camera", smooth, "jpeg",
                                    jpeg_quality=95)
            writer.write_compressed("/camera/png", stamp, "camera", _rgb(i),
                                    "rgb8; png compressed rgb8")
            writer.write_compressed("/camera/labels/compressed", stamp, "camera", _mask(i),
                                    "mono8; png compressed mono8")
    assert list_image_topics(path) == {
        "/camera/image/compressed": (COMPRESSED_IMAGE, 3),
        "/camera/labels/compressed": (COMPRESSED_IMAGE, 3), "/camera/png": (COMPRESSED_IMAGE, 3)}
    records = list(iter_images(path))
    assert len(records) == 9
    for record in records:
        i = (record.stamp_ns - T0) // PERIOD
        if record.topic == "/camera/image/compressed":
            assert record.image.shape == (H, W, 3) and record.encoding == "jpeg"
            assert np.abs(record.image.astype(int) - smooth).mean() < 3
        elif record.topic == "/camera/png":
            np.testing.assert_array_equal(record.image, _rgb(i))
        else:
            assert record.is_mono
            np.testing.assert_array_equal(record.image, _mask(i))
    pairs = list(pair_images_and_labels(path, "/camera/png", "/camera/labels/compressed"))
    assert len(pairs) == 3
    for record, label in pairs:
        np.testing.assert_array_equal(label, _mask((record.stamp_ns - T0) // PERIOD))


def test_pairing_by_exact_stamp(tmp_path, storage):
    """Labels before and after their image, a missing label, a label without image, a label
    whose stamp is off by 1 ns, a repeated stamp, and a corrupt label."""
    path = tmp_path / "bag"
    stamp = [T0 + i * PERIOD for i in range(8)]
    with BagWriter(path, storage=storage) as writer:
        log = T0

        def put(topic, stamp_ns, array, encoding):
            nonlocal log
            log += 1_000_000
            writer.write_image(topic, stamp_ns, "camera", array, encoding, log_time_ns=log)

        put("/labels", stamp[0], _mask(0), "mono8")     # label first
        put("/image", stamp[0], _rgb(0, 8, 8), "rgb8")
        put("/image", stamp[1], _rgb(1, 8, 8), "rgb8")  # label two messages later
        put("/image", stamp[2], _rgb(2, 8, 8), "rgb8")  # no label
        put("/labels", stamp[1], _mask(1), "mono8")
        put("/labels", stamp[3] + 1, _mask(3), "mono8")  # off by 1 ns: no match
        put("/image", stamp[3], _rgb(3, 8, 8), "rgb8")
        put("/labels", stamp[7], _mask(7), "mono8")     # never an image
        put("/image", stamp[4], _rgb(4, 8, 8), "rgb8")  # repeated stamp, two labels
        put("/image", stamp[4], _rgb(5, 8, 8), "rgb8")
        put("/labels", stamp[4], _mask(4), "mono8")
        put("/labels", stamp[4], _mask(5), "mono8")
        bad = image_message(stamp[6], "camera", _mask(6), "mono8")
        bad.data = bad.data[:10]
        log += 1_000_000
        writer.write("/labels", log, bad)                # corrupt label
        put("/image", stamp[6], _rgb(6, 8, 8), "rgb8")
    stats = ReadStats()
    with pytest.warns(BadMessageWarning, match="/labels"):
        pairs = list(pair_images_and_labels(path, "/image", "/labels", stats=stats))
    assert stats.skipped == 1
    got = [(int(np.argmax([np.array_equal(r.image, _rgb(i, 8, 8)) for i in range(7)])),
            None if label is None else next(i for i in range(8)
                                            if np.array_equal(label, _mask(i))))
           for r, label in pairs]
    assert got == [(0, 0), (1, 1), (2, None), (3, None), (4, 4), (5, 5), (6, None)]


def test_write_and_read_any_message(tmp_path, storage):
    store = typestore()
    string = store.types["std_msgs/msg/String"]
    path = tmp_path / "bag"
    with BagWriter(path, storage=storage) as writer:
        writer.write("/chatter", T0, string(data="hello"))
        writer.write("/chatter", T0 + 1, string(data="world"))
        writer.write_image("/camera/image", T0, "camera", _rgb(0, 4, 4))
    with BagReader(path) as reader:
        assert reader.topics == {"/camera/image": (IMAGE, 1),
                                 "/chatter": ("std_msgs/msg/String", 2)}
        assert reader.image_topics() == {"/camera/image": (IMAGE, 1)}
        said = [msg.data for _, _, _, msg in reader.messages("/chatter")]
    assert said == ["hello", "world"]


def test_writer_errors(tmp_path):
    path = tmp_path / "bag"
    with pytest.raises(ValueError, match="storage"):
        BagWriter(path, storage="rosbag1")
    with BagWriter(path) as writer:
        writer.add_topic("/camera/image", IMAGE)
        writer.add_topic("/camera/image", IMAGE)  # same type again: fine
        with pytest.raises(ValueError, match="already declared"):
            writer.add_topic("/camera/image", COMPRESSED_IMAGE)
        with pytest.raises(ValueError, match="unknown message type"):
            writer.add_topic("/x", "my_msgs/msg/Nothing")
        with pytest.raises(ValueError, match="absolute"):
            writer.add_topic("camera", IMAGE)
        with pytest.raises(ValueError, match="not declared"):
            writer.write_raw("/y", T0, b"")
        with pytest.raises(ValueError, match="stamp_ns"):
            writer.write_image("/camera/image", -1, "camera", _rgb(0, 4, 4))
        with pytest.raises(ValueError):
            writer.write_image("/camera/image", T0, "camera", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(BagError, match="exists already"):
        BagWriter(path).open()
    writer = BagWriter(tmp_path / "other")
    with pytest.raises(BagError, match="not open"):
        writer.add_topic("/camera/image", IMAGE)


def test_reader_errors(tmp_path):
    with pytest.raises(BagError, match="no bag"):
        list_image_topics(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="cannot read"):
        list_image_topics(tmp_path / "empty")
    path = tmp_path / "bag"
    with BagWriter(path) as writer:
        writer.write_image("/camera/image", T0, "camera", _rgb(0, 4, 4))
        writer.write("/chatter", T0, typestore().types["std_msgs/msg/String"](data="x"))
    with pytest.raises(BagError, match="no such topic"):
        list(iter_images(path, "/camera/missing"))
    with pytest.raises(BagError, match="std_msgs/msg/String"):
        list(iter_images(path, "/chatter"))
    with pytest.raises(ValueError, match="differ"):
        list(pair_images_and_labels(path, "/camera/image", "/camera/image"))


def test_a_bag_without_images_yields_nothing(tmp_path, storage):
    path = tmp_path / "bag"
    with BagWriter(path, storage=storage) as writer:
        writer.write("/chatter", T0, typestore().types["std_msgs/msg/String"](data="x"))
    assert list_image_topics(path) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(iter_images(path)) == []


def test_a_closed_writer_leaves_a_readable_bag_after_an_exception(tmp_path):
    path = tmp_path / "bag"
    with pytest.raises(RuntimeError):
        with BagWriter(path) as writer:
            writer.write_image("/camera/image", T0, "camera", _rgb(0, 4, 4))
            raise RuntimeError("recorder crashed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (record,) = iter_images(path)
    np.testing.assert_array_equal(record.image, _rgb(0, 4, 4))


@pytest.mark.parametrize("shape, encoding", [((5, 7), "mono8"), ((3, 6, 3), "rgb8")])
@pytest.mark.parametrize("frame_id", ["", "cam", "camera_optical"])
def test_image_cdr_matches_rosbags(shape, encoding, frame_id):
    array = np.random.default_rng(1).integers(0, 255, shape).astype(np.uint8)
    stamp = T0 + 123_456_789
    data = image_cdr(stamp, frame_id, array, encoding)
    store = typestore()
    msg = store.deserialize_cdr(data, "sensor_msgs/msg/Image")
    assert stamp_ns(msg.header) == stamp
    assert msg.header.frame_id == frame_id and msg.encoding == encoding
    assert msg.step * msg.height == array.nbytes
    np.testing.assert_array_equal(msg.data.reshape(shape), array)
    assert data == bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    assert data == bytes(store.serialize_cdr(image_message(stamp, frame_id, array, encoding),
                                             "sensor_msgs/msg/Image"))
    assert header_of(data, IMAGE) == (stamp, frame_id)
