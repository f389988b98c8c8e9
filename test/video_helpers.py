"""Reading back the videos an evaluation writes: the decoded frames (OpenCV) and the stream's
codec, pixel format and size as the FFmpeg of imageio-ffmpeg probes it. Import as
``from video_helpers import`` (test/evaluation, test/tools)."""
from __future__ import annotations

import re
import subprocess

import cv2

from lmanet_ros.evaluation.h264 import ffmpeg_exe

_STREAM = re.compile(r"Stream #\S+: Video: (?P<codec>\w+)[^,]*, (?P<pix_fmt>\w+)"
                     r".*?, (?P<width>\d+)x(?P<height>\d+)")


def read_video(path):
    """Every frame of a video as (H, W, 3) uint8 RGB, and the frame rate it declares."""
    capture = cv2.VideoCapture(str(path))
    fps, frames = capture.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames, fps


def probe(path):
    """(codec, pixel format, width, height) of the first video stream, from ``ffmpeg -i``."""
    stderr = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                            text=True, timeout=60).stderr
    found = _STREAM.search(stderr)
    assert found, stderr
    return found["codec"], found["pix_fmt"], int(found["width"]), int(found["height"])
