"""H.264 MP4 files that browsers play, encoded by the FFmpeg binary of the ``imageio-ffmpeg``
wheel (libx264, yuv420p, ``+faststart``), fed raw RGB frames through a pipe.

OpenCV's MP4 codec (mp4v, MPEG-4 part 2) is not played by browsers, and the FFmpeg inside the
OpenCV wheels has no H.264 encoder. yuv420p halves the chroma resolution, so frames of odd width or
height are padded by one edge pixel to even sizes.
"""
from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["ENCODER", "H264Writer", "ffmpeg_exe", "pad_even"]

#: The FFmpeg encoder used (H.264 by x264).
ENCODER = "libx264"
#: How much of FFmpeg's error output an exception quotes (characters, the end).
_ERROR_TAIL = 2000


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The FFmpeg binary of ``imageio-ffmpeg``, checked to have :data:`ENCODER`.

    Raises:
        OSError: the wheel is not installed, or its FFmpeg has no libx264.
    """
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise OSError("writing MP4 video needs the imageio-ffmpeg wheel (its FFmpeg encodes "
                      "H.264): pip install imageio-ffmpeg") from exc
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    listed = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                            timeout=60, check=False).stdout
    if not any(line.split()[1:2] == [ENCODER] for line in listed.splitlines()):
        raise OSError(f"the FFmpeg of imageio-ffmpeg ({exe}) has no {ENCODER} encoder: "
                      "H.264 video cannot be written")
    return exe


def pad_even(frame: np.ndarray) -> np.ndarray:
    """``frame`` ((H, W, 3) uint8) with its last row / column repeated where H / W is odd."""
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


class H264Writer:
    """One H.264 MP4 file written frame by frame by an FFmpeg child process.

    The first frame fixes the size (made even by :func:`pad_even`); every frame must have the
    first one's size. The child runs in a session of its own, so a Ctrl-C meant for the
    evaluation does not end the video before the frames already queued are written.
    """

    def __init__(self, path: str | Path, fps: float, preset: str = "veryfast") -> None:
        """Prepare ``path`` at ``fps`` frames per second; FFmpeg starts on the first frame."""
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.preset = preset
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._process: subprocess.Popen | None = None
        self._errors: IO[bytes] | None = None

    def _command(self, width: int, height: int) -> list[str]:
        """The FFmpeg command line of an even (``width``, ``height``) in pixels."""
        return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                "-r", f"{self.fps:.6g}", "-i", "-",
                "-an", "-c:v", ENCODER, "-preset", self.preset, "-threads", "1",
                "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(self.path)]

    def _start(self, width: int, height: int) -> subprocess.Popen:
        self._errors = tempfile.TemporaryFile()
        self.size = (width, height)
        return subprocess.Popen(self._command(width, height), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=self._errors,
                                start_new_session=True)

    def _failure(self, what: str) -> OSError:
        """The error of a failed FFmpeg, quoting the end of its error output."""
        self._errors.seek(0)
        text = self._errors.read().decode("utf-8", "replace").strip()[-_ERROR_TAIL:]
        return OSError(f"FFmpeg {what} writing {self.path}: {text or 'no message'}")

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (the first frame's H and W, before padding).

        Raises:
            ValueError: a frame of another size or layout than the first.
            OSError: FFmpeg is missing, has no libx264, or failed.
        """
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        frame = pad_even(frame)
        if self._process is None:
            self._process = self._start(frame.shape[1], frame.shape[0])
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"frame of {frame.shape[1]}x{frame.shape[0]} in a video of "
                             f"{self.size[0]}x{self.size[1]}")
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            error = self._end(self._stopped(), timeout=None)
            raise error or OSError(f"FFmpeg stopped reading frames for {self.path}") from None
        self.frames += 1

    def _stopped(self) -> subprocess.Popen:
        """The FFmpeg process, forgotten (it is finished once, by :meth:`_end`)."""
        process, self._process = self._process, None
        return process

    def _end(self, process: subprocess.Popen, timeout: float | None) -> OSError | None:
        """Close FFmpeg's input and wait for it (killed after ``timeout`` seconds); the error
        of a failure, None for success."""
        try:
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
            try:
                status = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return self._failure(f"did not finish within {timeout:g} s")
            return self._failure(f"failed (exit status {status})") if status else None
        finally:
            self._errors.close()

    def close(self, timeout: float = 120.0) -> None:
        """Finish the file (the encoder flushed, the index moved to the front) and wait for
        FFmpeg, at most ``timeout`` seconds; nothing to do before the first frame or twice.

        Raises:
            OSError: FFmpeg failed or did not finish in time.
        """
        if self._process is None:
            return
        error = self._end(self._stopped(), timeout)
        if error is not None:
            raise error
