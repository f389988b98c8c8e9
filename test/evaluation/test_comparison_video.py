"""The side-by-side comparison video of an offline evaluation (lmanet_ros.evaluation.video:
``comparison.mp4``, input | every model's overlay, captioned, corrupted frames tagged): its
layout, captions and tags by pixel difference from an uncaptioned render, and the file that
``evaluate`` writes for a robot-v2 bag (seed 4: night blur at frames 4-5, a wiper at 12-15),
read back with OpenCV."""
import numpy as np
import pytest

from eval_helpers import identity  # noqa: F401 (a fixture, see usefixtures)
from eval_helpers import IMAGE, LABELS, H, W, write_scene_bag
from lmanet_ros.bags import BagWriter
from lmanet_ros.classes import CITYSCAPES_COLORS
from lmanet_ros.evaluation import EvalOptions, ModelSpec, evaluate
from lmanet_ros.evaluation.outputs import OVERLAY_ALPHA
from lmanet_ros.evaluation.video import (COMPARISON_FILE, VIDEO_FILE, ComparisonVideo,
                                         caption_height, comparison_row)
from lmanet_ros.imaging import colorize, overlay
from lmanet_ros.synthetic import SynthSequence, generate
from video_helpers import read_video

SEED, FRAMES, RH, RW = 4, 16, 64, 128
HIT = {4: "night_blur", 5: "night_blur", 12: "wiper", 13: "wiper", 14: "wiper", 15: "wiper"}
MODELS = ("erfnet", "lmanet_erfnet")


def diff(a, b):
    """Mean absolute difference of two uint8 images."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_comparison_row_layout_captions_and_tag():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (RH, RW, 3), dtype=np.uint8)
    overlays = [rng.integers(0, 256, (RH, RW, 3), dtype=np.uint8) for _ in range(2)]
    strip = caption_height(RH)
    row = comparison_row(rgb, overlays, ["input", *MODELS])
    assert row.shape == (RH + strip, 3 * RW, 3) and row.dtype == np.uint8
    for k, panel in enumerate([rgb, *overlays]):  # the panels themselves are untouched
        assert np.array_equal(row[strip:, k * RW:(k + 1) * RW], panel)
    blank = comparison_row(rgb, overlays, None)
    assert np.array_equal(blank[strip:], row[strip:])
    for k in range(3):  # every panel has its caption
        assert diff(row[:strip, k * RW:(k + 1) * RW], blank[:strip, k * RW:(k + 1) * RW]) > 5
    tagged = comparison_row(rgb, overlays, ["input", *MODELS], tag="wiper")
    assert np.array_equal(tagged[:, RW:], row[:, RW:])  # the tag is on the input panel only
    strip_rgb = tagged[:strip, :RW].reshape(-1, 3).mean(axis=0)
    assert strip_rgb[0] > 2 * strip_rgb[1] and diff(tagged[:strip, :RW], row[:strip, :RW]) > 20
    # a small overlay is resized to the input's size; the caption count must match the panels
    assert comparison_row(rgb, [overlays[0][::2, ::2]], None).shape == (RH + strip, 2 * RW, 3)
    with pytest.raises(ValueError, match="3 panels but 2 captions"):
        comparison_row(rgb, overlays, ["input", "erfnet"])
    with pytest.raises(ValueError, match="2 models but 1 overlays"):
        ComparisonVideo("/tmp/unused.mp4", 17.0, MODELS).write(rgb, overlays[:1])


@pytest.fixture(scope="module")
def robot_bag(tmp_path_factory):
    """One robot-v2 sequence of 16 frames at 64x128 (images, labels, clean images, log)."""
    return generate(tmp_path_factory.mktemp("robot"), frames=FRAMES, height=RH, width=RW,
                    sequences=1, seed=SEED, corruption="robot-v2", bag=BagWriter,
                    folder=False, show_progress=False).bag


@pytest.mark.usefixtures("identity")
def test_evaluate_writes_a_captioned_tagged_comparison_video(robot_bag, tmp_path):
    """Identity network (prediction = red channel): each decoded row is the captioned render of
    the synthetic frame, tagged with its kinds on the hit frames."""
    out = tmp_path / "out"
    outcome = evaluate(EvalOptions(bag=robot_bag, out=out, model=MODELS[0],
                                   compare=[ModelSpec(MODELS[1])], label_topic=LABELS,
                                   device="cpu", plots=False, memory_check=False))
    path = out / COMPARISON_FILE
    assert path in outcome.files and (out / VIDEO_FILE) in outcome.files
    assert outcome.payload["source"]["frames_evaluated"] == FRAMES
    assert outcome.payload["timing"]["comparison_video_s"] > 0
    decoded, _ = read_video(path)
    strip = caption_height(RH)
    assert len(decoded) == FRAMES
    assert decoded[0].shape == (RH + strip, 3 * RW, 3)
    assert [s for s, k in enumerate(SynthSequence(SEED, height=RH, width=RW, n_frames=FRAMES,
                                                  corruption="robot-v2").corruption_log) if k] \
        == sorted(HIT)
    palette = np.asarray(CITYSCAPES_COLORS, np.uint8)
    sequence = SynthSequence(SEED, height=RH, width=RW, n_frames=FRAMES, corruption="robot-v2")
    for index, (frame, row) in enumerate(zip(sequence, decoded)):
        blend = overlay(frame.image, colorize(np.ascontiguousarray(frame.image[..., 0]), palette),
                        OVERLAY_ALPHA)
        tag = HIT.get(index, "")
        captioned = comparison_row(frame.image, [blend, blend], ["input", *MODELS], tag)
        blank = comparison_row(frame.image, [blend, blend], None, tag)
        assert diff(row, captioned) < 10, index  # H.264 is lossy
        for k in range(3):
            part = np.s_[:strip, k * RW:(k + 1) * RW]
            assert diff(row[part], blank[part]) > 2 * diff(row[part], captioned[part]), index
        strip_rgb = row[:strip, :RW].reshape(-1, 3).mean(axis=0)
        assert (strip_rgb[0] > 2 * strip_rgb[1]) == bool(tag), index


@pytest.mark.usefixtures("identity")
@pytest.mark.parametrize("models, switch, video, written", [
    (1, None, True, False), (2, None, True, True), (2, None, False, False),
    (2, False, True, False), (1, True, True, True)])
def test_comparison_video_switch(tmp_path, models, switch, video, written):
    """Default: with video on and two models or more; ``comparison_video`` forces it either way
    (a bag without a corruption log: no tags)."""
    bag = write_scene_bag(tmp_path / "bag")
    options = EvalOptions(bag=bag, out=tmp_path / "out", model="erfnet",
                          compare=[ModelSpec("lmanet_erfnet")] * (models - 1), image_topics=[IMAGE],
                          label_topic=LABELS, device="cpu", video=video, plots=False,
                          comparison_video=switch)
    assert options.writes_comparison_video is written
    evaluate(options)
    path = tmp_path / "out" / COMPARISON_FILE
    assert path.exists() is written
    if written:
        decoded, _ = read_video(path)
        assert len(decoded) == 6 and decoded[0].shape == (H + caption_height(H), (1 + models) * W,
                                                          3)
