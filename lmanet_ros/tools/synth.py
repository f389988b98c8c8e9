"""``lmanet synth``: procedural street videos with exact labels, as a rosbag2 and a training folder.

Examples::

    lmanet synth data/ --frames 300 --size 256x512 --sequences 20 --seed 0
    lmanet synth data/ --frames 300 --size 256x512 --sequences 16 --seed 10000 \\
        --corruption standard --storage sqlite3
    lmanet synth data/ --frames 60 --size 128x256 --sequences 8 --seed 10000 \\
        --corruption robot-v2 --no-bag

Sequence k of a run has seed ``--seed + k`` and lasts ``--frames`` frames at ``--rate`` Hz. The
bag ``OUT/bag_<first sequence>`` holds ``/camera/image`` (sensor_msgs/msg/Image rgb8) and
``/camera/labels`` (mono8 Cityscapes trainIds, 255 void) with the same header stamps and frame_id
``camera``; the sequences follow one another with a gap of several seconds, so a memory-gap
reset triggers between them. The folder follows the Cityscapes layout read by ``lmanet train``:
``OUT/leftImg8bit/<split>/<seq>/<seq>_<frame:06d>_leftImg8bit.png`` and
``OUT/gtFine/<split>/<seq>/<seq>_<frame:06d>_gtFine_labelTrainIds.png``, the split being ``val``
for the held-out seeds (lmanet_ros.synthetic.HELDOUT_SEEDS) and ``train`` otherwise.
``OUT/sequences.json`` describes every run written into OUT (seeds, size, rate, corruption recipe,
per-frame corruption log, scene parameters); several runs (e.g. training seeds, then held-out
seeds) may share one OUT as long as their sequences differ.
"""
from __future__ import annotations

import argparse
import functools
import sys

from lmanet_ros.bags import STORAGES, BagError, BagWriter
from lmanet_ros.synthetic import (CORRUPTIONS, DEFAULT_RATE_HZ, HELDOUT_SEEDS, IMAGE_TOPIC,
                                  LABEL_TOPIC, TRAIN_SEEDS, SynthError, generate)
from lmanet_ros.tools.common import float_in, non_negative_int, parse_size, positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `lmanet synth`."""
    parser = subparsers.add_parser(
        "synth", help="generate synthetic street videos with exact labels (bag and folder)",
        description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT", help="output directory (created if missing)")
    video = parser.add_argument_group("video")
    video.add_argument("--frames", type=positive_int, default=300,
                       help="frames per sequence (default: %(default)s)")
    video.add_argument("--size", type=parse_size, default=(256, 512),
                       help="frame size HxW in pixels, at least 32x32 (default: 256x512)")
    video.add_argument("--sequences", type=positive_int, default=1,
                       help="number of sequences; sequence k has seed SEED + k (default: 1)")
    video.add_argument("--seed", type=non_negative_int, default=0,
                       help=f"seed of the first sequence (default: 0); training seeds are "
                            f"{TRAIN_SEEDS.start}..{TRAIN_SEEDS.stop - 1}, held-out seeds "
                            f"{HELDOUT_SEEDS.start}..{HELDOUT_SEEDS.stop - 1}")
    video.add_argument("--corruption", choices=CORRUPTIONS, default="none",
                       help="per-frame image corruptions (labels stay clean): none, the fixed "
                            "'standard' recipe (standard-v1: occluders, noise bursts, exposure "
                            "flicker, motion blur, lost detail), or 'robot-v2' (camera failures "
                            "a memory can bridge: wiper, dropout, heavy noise, glare, night "
                            "blur; one at a time) (default: none)")
    video.add_argument("--rate", type=float_in(0.0, 1000.0), default=DEFAULT_RATE_HZ,
                       help="frame rate in Hz for the stamps and the motion (default: 17)")
    output = parser.add_argument_group("output")
    output.add_argument("--storage", choices=STORAGES, default=STORAGES[0],
                        help="rosbag2 storage plugin (default: %(default)s)")
    output.add_argument("--no-bag", action="store_true", help="do not write the rosbag2")
    output.add_argument("--no-folder", action="store_true",
                        help="do not write the Cityscapes-like PNG folder")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate as ``args`` say; print where things were written. 0 on success, 2 on a bad
    argument or an existing output, 1 when writing fails."""
    height, width = args.size
    if args.no_bag and args.no_folder:
        print("lmanet synth: error: --no-bag and --no-folder leave nothing to write",
              file=sys.stderr)
        return 2
    try:
        bag = None if args.no_bag else functools.partial(BagWriter, storage=args.storage)
        result = generate(args.out, frames=args.frames, height=height, width=width,
                          sequences=args.sequences, seed=args.seed, corruption=args.corruption,
                          rate=args.rate, bag=bag, folder=not args.no_folder)
    except (ValueError, SynthError) as exc:
        print(f"lmanet synth: error: {exc}", file=sys.stderr)
        return 2
    except (BagError, OSError) as exc:
        print(f"lmanet synth: error: {exc}", file=sys.stderr)
        return 1
    if result.bag is not None:
        print(f"bag: {result.bag} ({args.storage}; {IMAGE_TOPIC} rgb8, {LABEL_TOPIC} mono8 "
              f"trainIds; {args.sequences} x {args.frames} frames)")
    for image_dir, label_dir in zip(result.image_folders, result.label_folders):
        print(f"images: {image_dir}")
        print(f"labels: {label_dir}")
    if result.description is not None:
        print(f"description: {result.description}")
    per_frame = 1000.0 * result.render_s / max(result.frames, 1)
    print(f"{result.frames} frames {height}x{width} in {result.total_s:.1f} s "
          f"(rendering {per_frame:.1f} ms per frame)")
    return 0
