"""Procedural street-scene video with exact Cityscapes trainId labels (no ROS, no bag layer).

A camera drives down a straight street; the background is ray-cast per pixel and the objects are
drawn as billboards with the same polygons into the image, the label map and the instance map,
so labels are exact. Modules, one job each: :mod:`~lmanet_ros.synthetic.scene` (the world and
camera built from a seed), :mod:`~lmanet_ros.synthetic.render` (rasterising a frame and the
sensor), :mod:`~lmanet_ros.synthetic.corruption` (the ``standard-v1`` and ``robot-v2`` recipes,
the per-frame corruption log), :mod:`~lmanet_ros.synthetic.sequence` (:class:`SynthSequence`:
frames on demand, seeds, stamps, names) and :mod:`~lmanet_ros.synthetic.output`
(:func:`generate`: the PNG folder, ``sequences.json`` and a bag through an injected writer).
"""
from lmanet_ros.synthetic.corruption import (CLEAN_LEAD_IN, CORRUPTION_KINDS, CORRUPTION_RECIPE,
                                             CORRUPTIONS)
from lmanet_ros.synthetic.output import (FRAME_ID, IMAGE_TOPIC, LABEL_TOPIC, ImageBagWriter,
                                         SynthError, SynthOutput, bag_path, generate)
from lmanet_ros.synthetic.scene import (BUILDING, CAR, PERSON, POLE, REQUIRED_CLASSES, ROAD,
                                        SIDEWALK, SKY, TERRAIN, TRAFFIC_LIGHT, TRAFFIC_SIGN,
                                        VEGETATION, VOID)
from lmanet_ros.synthetic.sequence import (DEFAULT_RATE_HZ, HELDOUT_SEEDS, SEQUENCE_GAP_S,
                                           STAMP_JITTER_S, START_TIME_NS, TRAIN_SEEDS,
                                           SynthFrame, SynthSequence, frame_stamps,
                                           sequence_name, split_for_seed)

__all__ = [
    "BUILDING", "CAR", "CLEAN_LEAD_IN", "CORRUPTIONS", "CORRUPTION_KINDS", "CORRUPTION_RECIPE",
    "DEFAULT_RATE_HZ", "FRAME_ID", "HELDOUT_SEEDS", "IMAGE_TOPIC", "ImageBagWriter", "LABEL_TOPIC",
    "PERSON", "POLE", "REQUIRED_CLASSES", "ROAD", "SEQUENCE_GAP_S", "SIDEWALK", "SKY",
    "STAMP_JITTER_S", "START_TIME_NS", "SynthError", "SynthFrame", "SynthOutput", "SynthSequence",
    "TERRAIN", "TRAFFIC_LIGHT", "TRAFFIC_SIGN", "TRAIN_SEEDS", "VEGETATION", "VOID", "bag_path",
    "frame_stamps", "generate", "sequence_name", "split_for_seed",
]
