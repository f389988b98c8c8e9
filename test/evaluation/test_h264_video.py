"""The overlay videos are H.264 in MP4, yuv420p (what browsers play), encoded by the FFmpeg of
imageio-ffmpeg (lmanet_ros.evaluation.h264): the stream as that FFmpeg probes it, odd sizes
padded to even, the frames read back with OpenCV, and the errors of a missing wheel, an FFmpeg
without libx264 and a failing encoder."""
import sys

import numpy as np
import pytest

from eval_helpers import identity  # noqa: F401 (a fixture, see usefixtures)
from eval_helpers import IMAGE, LABELS, H, W, write_scene_bag
from lmanet_ros.evaluation import EvalOptions, OverlayVideo, evaluate
from lmanet_ros.evaluation.h264 import H264Writer, ffmpeg_exe, pad_even
from lmanet_ros.evaluation.video import VIDEO_FILE
from video_helpers import probe, read_video


@pytest.fixture
def fresh_ffmpeg():
    """ffmpeg_exe() looked up anew in the test, and again after it."""
    ffmpeg_exe.cache_clear()
    yield
    ffmpeg_exe.cache_clear()


def test_pad_even():
    frame = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    padded = pad_even(frame)
    assert padded.shape == (4, 6, 3)
    assert np.array_equal(padded[:3, :5], frame)
    assert np.array_equal(padded[3, :5], frame[2]) and np.array_equal(padded[:3, 5], frame[:, 4])
    even = frame[:2, :4]
    assert pad_even(even) is even


def test_overlay_video_is_h264_yuv420p_and_odd_sizes_are_padded(tmp_path):
    path = tmp_path / VIDEO_FILE
    inputs = [np.full((33, 63, 3), 20 * i, np.uint8) for i in range(8)]
    with OverlayVideo(path, 17.0) as video:
        for image in inputs:
            video.write(image, 255 - image)
    assert video.frames == 8
    assert probe(path) == ("h264", "yuv420p", 126, 34)
    frames, fps = read_video(path)
    assert fps == pytest.approx(17.0, abs=0.1) and len(frames) == 8
    for rgb, image in zip(frames, inputs):  # left: the input, right: the overlay
        assert abs(float(rgb[:33, :63].mean()) - image.mean()) < 4
        assert abs(float(rgb[:33, 63:126].mean()) - (255 - image.mean())) < 4


@pytest.mark.usefixtures("identity")
def test_evaluate_writes_h264(tmp_path):
    bag = write_scene_bag(tmp_path / "bag", n=4)
    evaluate(EvalOptions(bag=bag, out=tmp_path / "out", model="lmanet_erfnet", device="cpu",
                         image_topics=[IMAGE], label_topic=LABELS, plots=False))
    assert probe(tmp_path / "out" / VIDEO_FILE) == ("h264", "yuv420p", 2 * W, H)


def test_writer_refuses_other_sizes(tmp_path):
    writer = H264Writer(tmp_path / "v.mp4", 10.0)
    writer.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="frame of 18x16 in a video of 16x16"):
        writer.write(np.zeros((16, 18, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        writer.write(np.zeros((16, 16), np.uint8))
    writer.close()
    assert writer.frames == 1 and (tmp_path / "v.mp4").stat().st_size > 0
    with pytest.raises(ValueError, match="fps must be positive"):
        H264Writer(tmp_path / "w.mp4", 0.0)


@pytest.mark.usefixtures("fresh_ffmpeg")
def test_missing_wheel_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    with pytest.raises(OSError, match="pip install imageio-ffmpeg"):
        OverlayVideo(tmp_path / "v.mp4", 17.0).write_row(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.usefixtures("fresh_ffmpeg")
def test_ffmpeg_without_libx264_is_a_clear_error(tmp_path, monkeypatch):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho ' V....D mpeg4                MPEG-4 part 2'\n")
    fake.chmod(0o755)
    import imageio_ffmpeg
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(fake))
    with pytest.raises(OSError, match="has no libx264 encoder"):
        H264Writer(tmp_path / "v.mp4", 17.0).write(np.zeros((8, 8, 3), np.uint8))


def test_encoder_failure_is_reported(tmp_path):
    """FFmpeg cannot open the output: the write (a broken pipe) or the close says so, quoting
    FFmpeg's message."""
    writer = H264Writer(tmp_path / "missing_dir" / "v.mp4", 17.0)
    with pytest.raises(OSError, match="FFmpeg (stopped|failed) .*missing_dir.*No such file"):
        for _ in range(50):  # more than a pipe's buffer: FFmpeg's end shows in a write
            writer.write(np.zeros((64, 64, 3), np.uint8))
        writer.close()
    writer.close()  # finished once: nothing left to do
