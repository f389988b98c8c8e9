"""The offline evaluation (lmanet_ros.evaluation.evaluate) on bags written here: both storages,
labels or not, time going back, two cameras, stride, labelIds, compare, output bag, Ctrl-C;
metrics end to end through an identity model. The command line: test/tools/test_eval_cli.py."""
import json
import math

import numpy as np
import pytest

from eval_helpers import identity  # noqa: F401 (a fixture, see usefixtures)
from eval_helpers import (IMAGE, LABELS, PERIOD, T0, H, W, expected_gt_pixels,
                          interrupt_at_call, load, scene)
from eval_helpers import write_scene_bag as write_bag
from lmanet_ros.bags import BagReader
from lmanet_ros.evaluation import EvalError, EvalOptions, ModelSpec, evaluate
from lmanet_ros.stamps import stamp_ns


def run_eval(bag, out, **options):
    """The evaluation of the first tests: lmanet_erfnet on the cpu, no video, no plots."""
    options = {"model": "lmanet_erfnet", "device": "cpu", "video": False, "plots": False,
               **options}
    return evaluate(EvalOptions(bag=bag, out=out, **options))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_eval_writes_every_output(tmp_path, storage):
    bag = write_bag(tmp_path / "bag", storage=storage)
    out = tmp_path / "out"
    outcome = run_eval(bag, out, image_topics=[IMAGE], label_topic=LABELS, video=True,
                       plots=True, output_bag=tmp_path / "labelled")
    assert not outcome.interrupted
    for name in ("metrics.json", "report.md", "report.html", "class_iou.png",
                 "latency_hist.png", "flip_rate.png", "overlay.mp4"):
        assert (out / name).stat().st_size > 0, name
    metrics = load(out)
    assert metrics["partial"] is False and metrics["source"]["storage"] == storage
    model = metrics["models"][0]
    assert model["model"] == "lmanet_erfnet" and model["checkpoint_id"] == "random-init"
    assert model["frames"] == 6
    acc = model["accuracy"]
    assert acc["labelled_pixels"] == expected_gt_pixels(6)
    assert acc["labelled_frames"] == 6 and acc["ignored_pixels"] == 6 * 2 * W
    assert len(acc["per_class_iou"]) == 19
    assert 0.0 <= acc["miou"] <= 1.0 and 0.0 <= acc["pixel_accuracy"] <= 1.0
    assert set(model["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    assert model["latency_ms"]["count"] == 6 and model["throughput_fps"] > 0
    assert model["temporal_consistency"]["pairs"] == 5
    assert metrics["parameters"]["memory_length"] == 4  # in force: the model's own
    assert model["info"]["memory_length"] == 4 and model["memory_length"] == 4
    assert metrics["parameters"]["input_size"] == [0, 0]  # random weights: each frame's own
    report = (out / "report.md").read_text()
    assert "Per-class IoU" in report and "| road |" in report

    with BagReader(tmp_path / "labelled") as reader:
        topics = reader.topics
        kinds = {"labels": "mono8", "color": "rgb8", "overlay": "rgb8"}
        for kind in kinds:
            assert topics[f"{IMAGE}/lmanet_erfnet/{kind}"][1] == 6
        stamps = []
        for topic, _, log_ns, msg in reader.messages():
            assert msg.encoding == kinds[topic.rsplit("/", 1)[1]]
            assert (msg.height, msg.width) == (H, W)
            stamps.append((topic, stamp_ns(msg.header), log_ns))
    label_stamps = [s for t, s, _ in stamps if t.endswith("/labels")]
    assert label_stamps == [T0 + i * PERIOD for i in range(6)]
    assert all(log == s + 1_000_000 for _, s, log in stamps)   # input's recording time


@pytest.mark.usefixtures("identity")
def test_without_labels(tmp_path):
    bag = write_bag(tmp_path / "bag", labels=False, storage="sqlite3")
    out = tmp_path / "out"
    assert not run_eval(bag, out).interrupted
    model = load(out)["models"][0]
    assert model["accuracy"] is None and model["frames"] == 6
    assert model["temporal_consistency"]["flip_rate_gt_stable"] is None
    assert "**Accuracy not scored**: no label topic" in (out / "report.md").read_text()


@pytest.mark.parametrize("label_first", [False, True])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.usefixtures("identity")
def test_identity_model_scores_perfectly(tmp_path, label_first, stride):
    """Pairing by stamp is exact (labels before or after their image, any stride)."""
    n = 8
    bag = write_bag(tmp_path / "bag", n=n, label_first=label_first)
    out = tmp_path / "out"
    assert not run_eval(bag, out, label_topic=LABELS, stride=stride).interrupted
    metrics = load(out)
    model = metrics["models"][0]
    frames = len(range(0, n, stride))
    assert metrics["source"]["frames_evaluated"] == frames
    acc = model["accuracy"]
    assert acc["miou"] == 1.0 and acc["pixel_accuracy"] == 1.0
    assert acc["labelled_frames"] == frames
    assert acc["labelled_pixels"] == expected_gt_pixels(n, stride)
    present = {"road", "sky", "building", "car"}
    assert {k for k, v in acc["per_class_iou"].items() if v is not None} == present
    # flips of a perfect model = changes of the ground truth (the car moving)
    flips = sum(np.count_nonzero(scene(i)[1] != scene(i - stride)[1])
                for i in range(stride, n, stride))
    tc = model["temporal_consistency"]
    assert tc["flip_rate"] == pytest.approx(flips / ((frames - 1) * H * W))
    assert tc["flip_rate_gt_stable"] == 0.0


@pytest.mark.usefixtures("identity")
def test_label_ids_are_mapped(tmp_path):
    bag = write_bag(tmp_path / "bag", label_ids=True)
    out = tmp_path / "out"
    assert not run_eval(bag, out, label_topic=LABELS, label_ids=True).interrupted
    acc = load(out)["models"][0]["accuracy"]
    assert acc["miou"] == 1.0 and acc["invalid_label_pixels"] == 0
    assert acc["labelled_pixels"] == expected_gt_pixels(6)
    out2 = tmp_path / "out2"   # without the flag the labelIds are not classes
    assert not run_eval(bag, out2, label_topic=LABELS).interrupted
    assert load(out2)["models"][0]["accuracy"]["invalid_label_pixels"] > 0


@pytest.mark.usefixtures("identity")
def test_time_jump_back_resets_memory(tmp_path):
    stamps = [T0 + i * PERIOD for i in range(4)] + [T0 + i * PERIOD for i in range(3)]
    bag = write_bag(tmp_path / "bag", stamps=stamps)
    out = tmp_path / "out"
    assert not run_eval(bag, out, label_topic=LABELS).interrupted
    model = load(out)["models"][0]
    resets = model["memory_resets"]
    assert resets["by_reason"] == {"time_jump_back": 1}
    assert resets["events"][0]["index"] == 4
    assert model["temporal_consistency"]["pairs"] == 5       # the jump is not compared
    assert model["accuracy"]["labelled_frames"] == 7         # repeated stamps paired in turn


@pytest.mark.usefixtures("identity")
def test_gap_resets_memory(tmp_path):
    stamps = [T0, T0 + PERIOD, T0 + 3 * 10**9, T0 + 3 * 10**9 + PERIOD]
    bag = write_bag(tmp_path / "bag", stamps=stamps)
    out = tmp_path / "out"
    assert not run_eval(bag, out, image_topics=[IMAGE], max_gap=1.0).interrupted
    assert load(out)["models"][0]["memory_resets"]["by_reason"] == {"gap": 1}


@pytest.mark.usefixtures("identity")
def test_two_cameras(tmp_path):
    front, rear = "/front/image", "/rear/image"
    bag = write_bag(tmp_path / "bag", topics=(front, rear))
    out = tmp_path / "out"
    assert not run_eval(bag, out, image_topics=[front, rear], label_topic=LABELS,
                        output_bag=tmp_path / "labelled").interrupted
    metrics = load(out)
    model = metrics["models"][0]
    assert metrics["source"]["image_topics"] == [front, rear]
    assert model["frames"] == 12 and model["accuracy"]["labelled_frames"] == 6
    assert model["memory_resets"]["total"] == 0              # one memory per camera
    assert model["temporal_consistency"]["pairs"] == 10      # 5 per camera, never across
    with BagReader(tmp_path / "labelled") as reader:
        assert reader.topics[f"{rear}/lmanet_erfnet/labels"][1] == 6


def test_compare_models_on_the_same_frames(tmp_path):
    bag = write_bag(tmp_path / "bag", n=4)
    out = tmp_path / "out"
    outcome = run_eval(bag, out, compare=[ModelSpec("erfnet")], label_topic=LABELS, plots=True)
    assert not outcome.interrupted
    models = load(out)["models"]
    assert [m["label"] for m in models] == ["lmanet_erfnet", "erfnet"]
    assert [m["frames"] for m in models] == [4, 4]
    assert models[1]["info"]["temporal"] is False
    report = (out / "report.md").read_text()
    assert "| Class | `lmanet_erfnet` | `erfnet` |" in report
    assert (out / "class_iou.png").stat().st_size > 0


@pytest.mark.usefixtures("identity")
def test_ctrl_c_leaves_a_valid_partial_report(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "bag", n=6)
    interrupt_at_call(monkeypatch, 4)
    out = tmp_path / "out"
    outcome = run_eval(bag, out, label_topic=LABELS, video=True,
                       output_bag=tmp_path / "labelled")
    assert outcome.interrupted
    metrics = load(out)
    assert metrics["partial"] is True
    assert metrics["source"]["frames_evaluated"] == 3
    assert metrics["models"][0]["accuracy"]["labelled_frames"] == 3
    assert "Partial run" in (out / "report.md").read_text()
    assert (out / "overlay.mp4").stat().st_size > 0
    with BagReader(tmp_path / "labelled") as reader:     # closed properly: readable
        assert reader.topics[f"{IMAGE}/lmanet_erfnet/labels"][1] == 3


@pytest.mark.parametrize("options, message", [
    ({"image_topics": ["/nope"]}, "not an image topic"),
    ({"label_topic": "/nope"}, "label topic '/nope'"),
    ({"image_topics": [IMAGE], "label_topic": IMAGE}, "both"),
    ({"stride": 0}, "--stride"),
])
@pytest.mark.usefixtures("identity")
def test_errors_are_reported(tmp_path, options, message):
    bag = write_bag(tmp_path / "bag", n=2)
    with pytest.raises(EvalError, match=message):
        run_eval(bag, tmp_path / "out", **options)


@pytest.mark.usefixtures("identity")
def test_the_cameras_sibling_labels_are_the_default_label_topic(tmp_path):
    bag = write_bag(tmp_path / "bag", n=2)       # /camera/image and /camera/labels
    run_eval(bag, tmp_path / "out")
    metrics = load(tmp_path / "out")
    assert metrics["source"]["label_topic"] == LABELS
    assert metrics["models"][0]["accuracy"]["miou"] == 1.0
    two = write_bag(tmp_path / "two", n=2, topics=(IMAGE, "/rear/image"))
    with pytest.raises(EvalError, match="choose with --image-topic"):
        run_eval(two, tmp_path / "out2")
    run_eval(two, tmp_path / "out3", image_topics=["/rear/image"])
    assert load(tmp_path / "out3")["source"]["label_topic"] is None  # no /rear/labels


@pytest.mark.usefixtures("identity")
def test_existing_output_bag_is_refused(tmp_path):
    bag = write_bag(tmp_path / "bag", n=2)
    (tmp_path / "taken").mkdir()
    with pytest.raises(EvalError, match="exists"):
        run_eval(bag, tmp_path / "out", image_topics=[IMAGE], output_bag=tmp_path / "taken")


@pytest.mark.usefixtures("identity")
def test_report_is_valid_json_without_nan(tmp_path):
    bag = write_bag(tmp_path / "bag", n=2)
    out = tmp_path / "out"
    assert not run_eval(bag, out, label_topic=LABELS).interrupted
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text
    per_class = json.loads(text)["models"][0]["accuracy"]["per_class_iou"]
    assert any(v is None for v in per_class.values())
    assert not any(isinstance(v, float) and math.isnan(v) for v in per_class.values())
