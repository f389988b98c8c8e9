"""The packaged demo weights and `lmanet demo` (the README's first command) end to end."""
import json

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
    assert path.parent == DEMO_DIR and path.stat().st_size <= 6 * 1024 * 1024
    report = load_checkpoint(build_model(model), path)
    assert not report.missing and not report.unexpected and not report.initialised
    meta = report.metadata
    assert meta["model"] == model and meta["dataset"] == "synth"
    assert meta["training_command"].startswith(f"lmanet train --model {model} ")
    assert meta["input_size"] == [128, 256] and meta["images_seen"] == 6000
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
    out = tmp_path / "demo"
    code = cli.main(["demo", "--out", str(out), "--sequences", "2", "--frames", "6",
                     "--size", "64x128", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    live = json.loads((out / "live" / "metrics.json").read_text())
    assert live["mode"] == "live" and live["partial"] is False
    assert live["source"]["frames_published"] == 12
    assert live["source"]["video_frames"] == 12
    assert live["models"][0]["model"] == "lmanet_erfnet"
    assert live["models"][0]["accuracy"]["labelled_frames"] == 12
    compare = json.loads((out / "compare" / "metrics.json").read_text())
    assert [m["label"] for m in compare["models"]] == ["erfnet", "lmanet_erfnet"]
    # the node and the offline pipeline run the same weights on the same frames
    assert live["models"][0]["accuracy"]["miou"] == pytest.approx(
        compare["models"][1]["accuracy"]["miou"], abs=1e-6)
    for name in ("report.md", "overlay.mp4", "class_iou.png"):
        assert (out / "live" / name).is_file(), name
    assert str(out / "live" / "report.md") in printed
    # a second run replaces the first; a folder that is not a demo's is refused
    assert cli.main(["demo", "--out", str(out), "--sequences", "1", "--frames", "3",
                     "--size", "64x128", "--device", "cpu", "--no-compare"]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="not an earlier demo"):
        cli.main(["demo", "--out", str(other)])
