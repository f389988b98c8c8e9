"""The packaged demo weights and `lmanet demo` (the README's first command) end to end."""
import json

import cv2
import pytest
from safetensors import safe_open

from lmanet_ros.models import build_model, load_checkpoint
from lmanet_ros.models.checkpoint import file_sha256
from lmanet_ros.models.weights import DATA_DIR, DEMO, get_weights, models_with_weights
from lmanet_ros.models.weights import resolve_checkpoint
from lmanet_ros.pipeline import SegmentationPipeline
from lmanet_ros.tools import cli

DEMO_DIR = DATA_DIR / DEMO


def demo_checkpoint(model):
    """The packaged demo weights file of ``model``."""
    return get_weights(model, DEMO).path


@pytest.mark.parametrize("model", models_with_weights(DEMO))
def test_demo_weights_load_strictly_and_say_how_they_were_trained(model):
    path = demo_checkpoint(model)
    assert path.parent == DEMO_DIR and path.stat().st_size <= 8 * 1024 * 1024
    report = load_checkpoint(build_model(model), path)
    assert not report.missing and not report.unexpected and not report.initialised
    meta = report.metadata
    assert meta["model"] == model and meta["dataset"] == "synth"
    assert meta["training_command"].startswith(f"lmanet train --model {model} ")
    # rounds 2 and 3 (data/demo/TRAINING.md): on robot-v2, corrupted targets listed 4 times
    assert meta["input_size"] == [128, 256] and "--hit-repeat 4" in meta["training_command"]
    assert meta["images_seen"] == {"erfnet": 4500, "lmanet_erfnet": 8955, "tmanet_erfnet": 5430,
                                   "tdnet_erfnet": 4950, "stf_erfnet": 3415,
                                   "stf_mar_erfnet": 3775, "stf_delayed_erfnet": 1975,
                                   "stf_mar_delayed_erfnet": 1765}[model]
    assert (DEMO_DIR / f"{model}_robot.train_log.jsonl").is_file()
    if model in ("erfnet", "lmanet_erfnet"):  # round 1's logs
        assert (DEMO_DIR / path.name.replace(".safetensors", ".train_log.jsonl")).is_file()
    with safe_open(str(path), "pt") as stored:  # fp16 weights (BN counters stay integer)
        dtypes = {stored.get_slice(k).get_dtype() for k in stored.keys()}
    assert "F16" in dtypes and "F32" not in dtypes


def test_checkpoint_demo_resolves_to_the_packaged_file_and_other_values_pass_through():
    assert resolve_checkpoint("lmanet_erfnet", "demo")[0] == demo_checkpoint("lmanet_erfnet")
    assert resolve_checkpoint("erfnet", "/w/x.pth")[0] == "/w/x.pth"
    assert resolve_checkpoint("erfnet", None)[0] is None
    with pytest.raises(FileNotFoundError, match="no demo weights for model 'pspnet101'"):
        resolve_checkpoint("pspnet101", "demo")
    pipeline = SegmentationPipeline.from_pretrained("lmanet_erfnet", "demo", device="cpu")
    assert pipeline.checkpoint_id == file_sha256(demo_checkpoint("lmanet_erfnet"))[:16]
    assert pipeline.load_report.metadata["model"] == "lmanet_erfnet"


@pytest.mark.ros
def test_lmanet_demo_runs_node_replay_report_video_and_comparison(tmp_path, capsys):
    """A robot-v2 bag of the held-out seeds 10008-10009 x 10 frames (glare at frames 8-9 of the
    first sequence, night blur at 6-8 of the second): node, live scores, then every demo model
    offline with the corruption scores, memory check, gains and the side-by-side video."""
    out = tmp_path / "demo"
    code = cli.main(["demo", "--out", str(out), "--sequences", "2", "--frames", "10",
                     "--size", "64x128", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    live = json.loads((out / "live" / "metrics.json").read_text())
    assert live["mode"] == "live" and live["partial"] is False
    assert live["source"]["frames_published"] == 20
    assert live["source"]["video_frames"] == 20
    assert live["models"][0]["model"] == "lmanet_erfnet"
    assert live["models"][0]["accuracy"]["labelled_frames"] == 20
    compare = json.loads((out / "compare" / "metrics.json").read_text())
    labels = [m["label"] for m in compare["models"]]
    assert labels[:2] == ["erfnet", "lmanet_erfnet"]  # the single-frame baseline first
    assert sorted(labels) == [n for n in models_with_weights(DEMO) if "delayed" not in n]
    section = compare["corruption"]
    assert section["recipe"] == "robot-v2" and section["baseline"] == "erfnet"
    assert section["frames"]["hit"] == 5 and section["frames"]["frames"] == 20
    lmanet = compare["models"][1]
    assert lmanet["memory_check"]["frames"]["hit"] == 5 and set(lmanet["gain"]) == {
        "bag", "hit", "clean", "flip_rate"}
    # the node and the offline pipeline run the same weights on the same frames
    assert live["models"][0]["accuracy"]["miou"] == pytest.approx(
        lmanet["accuracy"]["miou"], abs=1e-6)
    for name in ("report.md", "overlay.mp4", "class_iou.png"):
        assert (out / "live" / name).is_file(), name
    assert str(out / "live" / "report.md") in printed
    # the side-by-side video: input | erfnet | lmanet_erfnet ..., one row per frame
    video = cv2.VideoCapture(str(out / "compare" / "comparison.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 20
    assert video.get(cv2.CAP_PROP_FRAME_WIDTH) == 128 * (1 + len(labels))
    video.release()
    gain = lmanet["gain"]
    for line in (f"side by side: {out / 'compare' / 'comparison.mp4'}",
                 f"gain of lmanet_erfnet over erfnet: bag {100 * gain['bag']:+.1f}, hit "
                 f"{100 * gain['hit']:+.1f}, clean {100 * gain['clean']:+.1f} mIoU points; "
                 f"flip rate {100 * gain['flip_rate']:+.2f} points",
                 "robot-v2: 5 of 20 frames hit", "memory check", "steps:        bag "):
        assert line in printed, line
    # a second run replaces the first; a folder that is not a demo's is refused
    assert cli.main(["demo", "--out", str(out), "--sequences", "1", "--frames", "3",
                     "--size", "64x128", "--device", "cpu", "--no-compare"]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="not an earlier demo"):
        cli.main(["demo", "--out", str(other)])
