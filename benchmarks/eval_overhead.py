"""What `lmanet eval` costs beyond the network: total eval time / bare model time on one bag.

Three measurements on the same frames (default: a 300-frame 256x512 synthetic bag made with
``lmanet synth``):

1. bare: the pipeline alone (``SegmentationPipeline.process``, same memory rules) on frames
   already decoded in memory: build, warm-up, every frame in order.
2. eval: the offline evaluation in-process (``lmanet_ros.evaluation.evaluate``: build, warm-up,
   decode, metrics, output bag with labels, colour and overlay, metrics.json, report.md, plots;
   the video is measured apart with ``--video``), wall time of the whole call.
3. null: the same eval with the network replaced by a function that returns zeros, i.e. the
   pure overhead of the tool, independent of how fast the network is and of other load.

Prints a JSON summary; the figure is ``eval_s / bare_s`` (target <= 1.10). On a shared machine
the bare and eval runs see different load; ``eval_model_s`` (the network's time inside the eval
run) and ``null_s`` give a load-robust view: ``ratio_paired = eval_s / (eval_model_s + setup)``
and ``ratio_in_run = (eval_model_s + null_s) / eval_model_s``.

    python benchmarks/eval_overhead.py --frames 300 --size 256x512
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lmanet_ros.sizes import parse_size


def make_bag(directory: Path, frames: int, size: str) -> Path:
    """A synthetic labelled bag (``lmanet_ros.synthetic.generate``: held-out seed, standard
    corruption)."""
    from lmanet_ros.bags import BagWriter
    from lmanet_ros.synthetic import generate
    height, width = parse_size(size)
    return generate(directory, frames=frames, height=height, width=width, seed=10000,
                    corruption="standard", bag=BagWriter, folder=False, show_progress=False).bag


def eval_options(bag: Path, out: Path, model: str, device: str, threads: int, *, video: bool,
                 output_bag: bool):
    """The evaluation of ``bag`` into ``out`` (labels on /camera/labels)."""
    from lmanet_ros.evaluation import EvalOptions
    return EvalOptions(bag=bag, out=out, model=model, image_topics=["/camera/image"],
                       label_topic="/camera/labels", device=device, num_threads=threads,
                       output_bag=out / "labelled" if output_bag else None, video=video,
                       # the overhead of the evaluation loop itself, as measured before
                       # corruption scoring existed: no corruption log, no memory check
                       corruption_topic=None, clean_topic=None, memory_check=False)


def bare(bag: Path, model: str, device: str, threads: int) -> dict:
    """The pipeline alone on frames decoded beforehand (not timed)."""
    from lmanet_ros.bags import iter_images
    from lmanet_ros.pipeline import Frame, SegmentationPipeline
    frames = [Frame(r.topic, np.array(r.image), r.stamp_ns, r.frame_id)
              for r in iter_images(bag, "/camera/image")]
    start = time.perf_counter()
    pipeline = SegmentationPipeline.from_pretrained(model, device=device, num_threads=threads)
    pipeline.warmup(*frames[0].image.shape[:2])
    setup = time.perf_counter() - start
    for frame in frames:
        pipeline.process([frame])
    total = time.perf_counter() - start
    return {"bare_s": total, "bare_setup_s": setup, "bare_frames_s": total - setup,
            "frames": len(frames)}


def run_eval(options) -> tuple[float, dict]:
    """Wall seconds of one in-process evaluation and its timing dict (with the frame count)."""
    from lmanet_ros.evaluation import evaluate
    start = time.perf_counter()
    outcome = evaluate(options)
    seconds = time.perf_counter() - start
    return seconds, dict(outcome.payload["timing"],
                         frames=outcome.payload["source"]["frames_evaluated"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--bag", type=Path, help="labelled bag (default: made with lmanet synth)")
    parser.add_argument("--frames", type=int, default=300, help="frames of the synthetic bag")
    parser.add_argument("--size", default="256x512", help="HxW of the synthetic bag")
    parser.add_argument("--model", default="lmanet_erfnet", help="model name")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--num-threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--video", action="store_true", help="also time the overlay video")
    parser.add_argument("--null-only", action="store_true",
                        help="only the null run (the tool's own overhead)")
    options = parser.parse_args()

    from lmanet_ros.pipeline import Result, SegmentationPipeline, StageTimes

    work = Path(tempfile.mkdtemp(prefix="lmanet_eval_overhead_"))
    bag = options.bag or make_bag(work / "synth", options.frames, options.size)
    summary: dict = {"bag": str(bag), "model": options.model, "device": options.device}
    if not options.null_only:
        summary.update(bare(bag, options.model, options.device, options.num_threads))
        eval_s, timing = run_eval(eval_options(bag, work / "eval", options.model,
                                               options.device, options.num_threads,
                                               video=False, output_bag=True))
        summary.update(eval_s=eval_s, eval_timing=timing, eval_model_s=timing["model_s"])

    # the tool alone: a network that costs nothing
    def null_process(self, frames, *, want_confidence=False):
        out = []
        for frame in frames:
            admission = self._state(frame.stream).admit(frame.stamp_ns, frame.image.shape[:2],
                                                        frame.frame_id, self.policy)
            out.append(Result(frame.stream, np.zeros(frame.image.shape[:2], np.uint8), None,
                              admission.reset_reason, admission.duplicate, 0, 1,
                              StageTimes(0.0, 0.0, 0.0)))
        return out
    SegmentationPipeline.process = null_process
    SegmentationPipeline.warmup = lambda self, h, w: None
    null_s, null_timing = run_eval(eval_options(bag, work / "null", options.model,
                                                options.device, options.num_threads,
                                                video=False, output_bag=True))
    summary.update(null_s=null_s, null_timing=null_timing)
    if options.video:
        video_s, video_timing = run_eval(eval_options(bag, work / "video", options.model,
                                                      options.device, options.num_threads,
                                                      video=True, output_bag=False))
        summary.update(null_with_video_s=video_s, video_s=video_timing["video_s"])
    summary["null_ms_per_frame"] = 1e3 * null_s / max(1, null_timing["frames"])
    if not options.null_only:
        summary["ratio_eval_to_bare"] = summary["eval_s"] / summary["bare_s"]
        model_s = summary["eval_model_s"]
        summary["ratio_in_run"] = (model_s + null_s) / model_s
        # the same run's network time (+ build and warm-up) as the bare time: load-paired
        summary["ratio_paired"] = summary["eval_s"] / (model_s + timing["setup_s"])
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
