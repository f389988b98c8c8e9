"""Tests of the ``lmanet bag`` command (lmanet_ros.tools.bag): videos and image folders (with
label PNGs) written into rosbag2s, read back with the package's reader."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lmanet_ros.bags import BagReader, pair_images_and_labels
from lmanet_ros.tools import bag as bag_tool
from lmanet_ros.tools import cli

H, W = 64, 128
T0 = 1_700_000_000_000_000_000
N_IMAGES = 12
VIDEO_FPS = 12.5
#: The video's one colour, BGR as OpenCV writes it: pure blue.
VIDEO_BGR = (255, 0, 0)


def _image(i: int) -> np.ndarray:
    """RGB frame ``i`` of the folder: left half red, right half green, pixel (0, 0) encodes i."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : W // 2, 0] = 200
    rgb[:, W // 2:, 1] = 150
    rgb[0, 0] = (10 * i, 0, 0)
    return rgb


def _label(i: int) -> np.ndarray:
    """Class ids of frame ``i``: road (0) left, sky (10) right, a row of i at the top."""
    label = np.zeros((H, W), np.uint8)
    label[:, W // 2:] = 10
    label[0] = i
    return label


@pytest.fixture()
def folder(tmp_path) -> tuple[Path, Path]:
    """(images, labels): frames f0.png..f11.png (natural order differs from name order) and
    their labels, frame 5 without one."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(N_IMAGES):
        cv2.imwrite(str(images / f"f{i}.png"), cv2.cvtColor(_image(i), cv2.COLOR_RGB2BGR))
        if i != 5:
            cv2.imwrite(str(labels / f"f{i}.png"), _label(i))
    (images / "notes.txt").write_text("not an image")
    return images, labels


@pytest.fixture()
def video(tmp_path) -> Path:
    """A 15-frame mp4 (mp4v) of one colour at 12.5 fps."""
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (W, H))
    for _ in range(15):
        writer.write(np.full((H, W, 3), VIDEO_BGR, np.uint8))
    writer.release()
    return path


def _bag(*argv: str | Path) -> int:
    return cli.main(["bag", *map(str, argv)])


def _images(bag: Path, topic: str = "/camera/image"):
    with BagReader(bag) as reader:
        return list(reader.images([topic]))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_folder_and_labels_round_trip(tmp_path, folder, storage, capsys):
    images, labels = folder
    out = tmp_path / "out_bag"
    assert _bag(images, "--labels", labels, "-o", out, "--rate", "20", "--storage", storage) == 0
    captured = capsys.readouterr()
    assert "1 of 12 images" in captured.err and "f5.png" in captured.err
    (summary,) = captured.out.splitlines()
    assert f"wrote {out} ({storage}" in summary and "12 frames (64x128)" in summary
    assert "11 labels on /camera/labels" in summary and "0.550 s of stamps" in summary

    with BagReader(out) as reader:
        assert reader.storage == storage
        assert reader.topics == {"/camera/image": ("sensor_msgs/msg/Image", N_IMAGES),
                                 "/camera/labels": ("sensor_msgs/msg/Image", N_IMAGES - 1)}
        pairs = list(pair_images_and_labels(reader, "/camera/image", "/camera/labels"))
    assert [r.stamp_ns for r, _ in pairs] == [T0 + i * 50_000_000 for i in range(N_IMAGES)]
    for i, (record, label) in enumerate(pairs):  # natural order: f2 before f10
        assert record.encoding == "rgb8" and record.frame_id == "camera"
        assert record.log_time_ns == record.stamp_ns
        np.testing.assert_array_equal(record.image, _image(i))
        if i == 5:
            assert label is None
        else:
            np.testing.assert_array_equal(label, _label(i))


@pytest.mark.parametrize("encoding", ["bgr8", "mono8"])
def test_encodings(tmp_path, folder, encoding):
    out = tmp_path / "b"
    assert _bag(folder[0], "-o", out, "--encoding", encoding, "--max-frames", "2",
                "--frame-id", "cam0", "--topic", "/front/image_raw") == 0
    with BagReader(out) as reader:
        (_, _, _, msg), _ = reader.messages(["/front/image_raw"])
    assert msg.encoding == encoding and msg.header.frame_id == "cam0"
    records = _images(out, "/front/image_raw")
    assert len(records) == 2
    red = _image(0)[5, 5]
    if encoding == "bgr8":  # bytes in B, G, R order; read back as RGB
        offset = (5 * W + 5) * 3
        assert list(msg.data[offset:offset + 3]) == [0, 0, 200]
        np.testing.assert_array_equal(records[1].image, _image(1))
    else:
        grey = cv2.cvtColor(red[None, None], cv2.COLOR_RGB2GRAY)[0, 0]
        assert records[0].image.shape == (H, W) and records[0].image[5, 5] == grey


def test_video_rate_stride_and_max_frames(tmp_path, video):
    out = tmp_path / "b"
    assert _bag(video, "-o", out, "--stride", "2", "--max-frames", "4") == 0
    records = _images(out)
    assert len(records) == 4
    step = round(2 * 1e9 / VIDEO_FPS)  # the video's own rate, every 2nd frame
    assert [r.stamp_ns for r in records] == [T0 + k * step for k in range(4)]
    assert records[0].image.shape == (H, W, 3)
    np.testing.assert_allclose(records[0].image[H // 2, W // 2], VIDEO_BGR[::-1], atol=12)


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_compressed_images_on_topic_compressed(tmp_path, folder, codec, capsys):
    images, labels = folder
    out = tmp_path / "b"
    assert _bag(images, "--labels", labels, "-o", out, "--compression", codec,
                "--jpeg-quality", "95", "--max-frames", "3") == 0
    assert "/camera/image/compressed (CompressedImage" in capsys.readouterr().out
    with BagReader(out) as reader:
        assert reader.topics["/camera/image/compressed"] == ("sensor_msgs/msg/CompressedImage", 3)
        pairs = list(pair_images_and_labels(reader, "/camera/image/compressed",
                                            "/camera/labels"))
    assert len(pairs) == 3 and all(label is not None for _, label in pairs)
    record = pairs[1][0]
    assert record.encoding == f"rgb8; {codec} compressed bgr8"
    if codec == "png":
        np.testing.assert_array_equal(record.image, _image(1))
    else:
        np.testing.assert_allclose(record.image[10, 10], (200, 0, 0), atol=8)
        np.testing.assert_allclose(record.image[10, W - 10], (0, 150, 0), atol=8)


def test_resize_scales_images_and_labels(tmp_path, folder):
    images, labels = folder
    out = tmp_path / "b"
    assert _bag(images, "--labels", labels, "-o", out, "--resize", "32x64",
                "--max-frames", "1") == 0
    ((record, label),) = pair_images_and_labels(out, "/camera/image", "/camera/labels")
    assert record.image.shape == (32, 64, 3) and label.shape == (32, 64)
    assert set(np.unique(label)) <= {0, 10}  # nearest neighbour: no blended class ids
    np.testing.assert_array_equal(record.image[16, 10], (200, 0, 0))


def test_inputs_follow_one_another_with_a_gap(tmp_path, video, folder):
    out = tmp_path / "b"
    assert _bag(video, folder[0], "-o", out, "--rate", "10", "--gap", "3",
                "--start-time", "1000.5") == 0
    stamps = [r.stamp_ns for r in _images(out)]
    start = 1000_500_000_000
    assert len(stamps) == 15 + N_IMAGES
    assert stamps[:15] == [start + k * 100_000_000 for k in range(15)]
    second = stamps[14] + 3_000_000_000
    assert stamps[15:] == [second + k * 100_000_000 for k in range(N_IMAGES)]


class InterruptingBar:
    """A stand-in for the progress bar that presses Ctrl-C (SIGINT) at the third frame."""

    def __init__(self, *args, **kwargs) -> None:
        self.n = 0

    def __enter__(self) -> InterruptingBar:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def update(self, n: int) -> None:
        self.n += n
        if self.n == 3:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_leaves_a_valid_bag_of_the_frames_written(tmp_path, folder, monkeypatch, capsys):
    monkeypatch.setattr(bag_tool, "progress", InterruptingBar)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where pytest runs in the background
    out = tmp_path / "b"
    assert _bag(folder[0], "-o", out) == 130
    assert capsys.readouterr().out.startswith("interrupted: wrote")
    assert len(_images(out)) == 3
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler back


def test_missing_input_exits_2_with_one_line(tmp_path):
    lmanet = Path(sys.executable).with_name("lmanet")  # the installed entry point
    proc = subprocess.run([str(lmanet), "bag", str(tmp_path / "nope.mp4"), "-o",
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"lmanet bag: error: {tmp_path / 'nope.mp4'}: no such file " \
                                  "or folder"
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("setup, argv, message", [
    (lambda p: (p / "bad.mp4").write_text("x"), ["bad.mp4"], "cannot read it as a video"),
    (lambda p: (p / "empty").mkdir(), ["empty"], "no images"),
    (None, ["images", "--labels", "nowhere"], "no such label folder"),
    (lambda p: (p / "other").mkdir(), ["images", "--labels", "other"], "no label PNG matches"),
    (None, ["clip.mp4", "--labels", "labels"], "go with a folder of images"),
    (None, ["images", "images", "--labels", "labels"], "1 --labels folder(s) for 2 input(s)"),
    (None, ["images", "--labels", "labels", "--label-topic", "/camera/image"], "share the topic"),
    (lambda p: cv2.imwrite(str(p / "labels" / "f0.png"), np.zeros((H, 3), np.uint8)),
     ["images", "--labels", "labels"], "the label is 64x3, its image 64x128"),
    (lambda p: cv2.imwrite(str(p / "labels" / "f1.png"), np.zeros((H, W, 3), np.uint8)),
     ["images", "--labels", "labels"], "single-channel 8-bit"),
])
def test_input_errors_exit_2_and_leave_no_bag(tmp_path, folder, video, capsys, monkeypatch,
                                              setup, argv, message):
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        setup(tmp_path)
    assert _bag(*argv, "-o", "b") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lmanet bag: error: ") and message in err[-1]
    assert not (tmp_path / "b").exists()


def test_existing_output_is_refused_unless_force(tmp_path, folder, capsys):
    out = tmp_path / "b"
    assert _bag(folder[0], "-o", out, "--max-frames", "2") == 0
    assert _bag(folder[0], "-o", out) == 2
    assert "exists already (--force replaces a rosbag2)" in capsys.readouterr().err
    assert len(_images(out)) == 2
    assert _bag(folder[0], "-o", out, "--force", "--storage", "sqlite3") == 0
    assert len(_images(out)) == N_IMAGES
    assert _bag(folder[0], "-o", folder[1], "--force") == 2  # a folder that is not a bag
    assert "is not a rosbag2" in capsys.readouterr().err
    assert len(list(folder[1].iterdir())) == N_IMAGES - 1


def test_lmanet_eval_scores_a_converted_folder(tmp_path, folder, capsys):
    images, labels = folder
    out = tmp_path / "b"
    assert _bag(images, "--labels", labels, "-o", out, "--max-frames", "4") == 0
    assert cli.main(["eval", str(out), "--label-topic", "/camera/labels", "--model", "erfnet",
                     "--checkpoint", "demo", "--no-video", "--no-plots",
                     "--out", str(tmp_path / "eval")]) == 0
    (model,) = json.loads((tmp_path / "eval" / "metrics.json").read_text())["models"]
    assert model["frames"] == 4 and model["accuracy"]["miou"] is not None
