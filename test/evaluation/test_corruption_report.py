"""Scores under camera corruption (lmanet_ros.evaluation.corruption): a small robot-v2 bag of
2 sequences x 24 frames at 64x128 (seed 3: glare, night blur, wiper and dropout events), its
groups counted against the log, the references computed by hand, the memory check against the
network's own ``step``, and the report, plot and metrics.json."""
import json

import numpy as np
import pytest
import torch

from eval_helpers import identity  # noqa: F401 (a fixture, see usefixtures)
from eval_helpers import load
from lmanet_ros.bags import BagReader, BagWriter
from lmanet_ros.evaluation import (EvalError, EvalOptions, ModelSpec, ReplayOptions, evaluate,
                                   plan_bag)
from lmanet_ros.evaluation.corruption import (camera_topics, memory_check_labels,
                                              read_corruption_log)
from lmanet_ros.evaluation.corruption_report import CORRUPTION_PLOT
from lmanet_ros.evaluation.replay import _plan as replay_plan
from lmanet_ros.metrics import ConfusionMatrix
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.synthetic import SynthSequence, generate
from lmanet_ros.synthetic.output import CLEAN_IMAGE_TOPIC, CORRUPTION_TOPIC

IMAGE, LABELS = "/camera/image", "/camera/labels"
SEED, SEQUENCES, FRAMES, H, W = 3, 2, 24, 64, 128


@pytest.fixture(scope="module")
def robot_bag(tmp_path_factory):
    """The robot-v2 bag (image, labels, clean images and the corruption log)."""
    out = generate(tmp_path_factory.mktemp("robot"), frames=FRAMES, height=H, width=W,
                   sequences=SEQUENCES, seed=SEED, corruption="robot-v2", bag=BagWriter,
                   folder=False, show_progress=False)
    return out.bag


def videos():
    return [SynthSequence(SEED + k, height=H, width=W, n_frames=FRAMES, corruption="robot-v2")
            for k in range(SEQUENCES)]


def run(bag, out, **options):
    options = {"model": "erfnet", "device": "cpu", "num_threads": 1, "video": False,
               "plots": False, "label_topic": LABELS, **options}
    return evaluate(EvalOptions(bag=bag, out=out, **options))


def miou(matrix):
    return matrix.miou() if matrix.frames else None


def test_default_image_topics_leave_out_the_clean_reference(robot_bag):
    assert camera_topics(["/a", "/a_clean", "/b_clean"]) == ["/a", "/b_clean"]
    with BagReader(robot_bag) as reader:
        assert CLEAN_IMAGE_TOPIC in reader.image_topics()
        assert plan_bag(reader, None, LABELS).topics == [IMAGE]
        assert replay_plan(reader, ReplayOptions(bag=robot_bag, label_topic=LABELS)).topics \
            == [IMAGE]


@pytest.mark.usefixtures("identity")
def test_groups_and_references_equal_a_hand_computation(robot_bag, tmp_path):
    """Identity network (prediction = red channel): every score is computed here from the
    frames; the oracle is the red channel of the last unhit frame of the same sequence."""
    payload = run(robot_bag, tmp_path / "out", compare=[]).payload
    groups = {name: ConfusionMatrix() for name in
              ("bag", "hit", "clean", "clean_version", "oracle", "oracle_bag")}
    kinds: dict[str, dict[str, ConfusionMatrix]] = {}
    counts: dict[str, int] = {}
    for video in videos():
        last_clean = None
        for frame in video:
            pred = np.ascontiguousarray(frame.image[..., 0])
            groups["bag"].update(frame.labels, pred)
            if frame.corruptions:
                groups["hit"].update(frame.labels, pred)
                groups["clean_version"].update(frame.labels, frame.clean_image[..., 0].copy())
                groups["oracle"].update(frame.labels, last_clean)
                groups["oracle_bag"].update(frame.labels, last_clean)
                for kind in frame.corruptions:
                    counts[kind] = counts.get(kind, 0) + 1
                    mine = kinds.setdefault(kind, {"model": ConfusionMatrix(),
                                                   "oracle": ConfusionMatrix()})
                    mine["model"].update(frame.labels, pred)
                    mine["oracle"].update(frame.labels, last_clean)
            else:
                groups["clean"].update(frame.labels, pred)
                groups["oracle_bag"].update(frame.labels, pred)
                last_clean = pred
    section = payload["corruption"]
    assert section["recipe"] == "robot-v2" and section["baseline"] == "erfnet"
    assert section["topics"] == {"camera": IMAGE, "corruption": CORRUPTION_TOPIC,
                                 "clean": CLEAN_IMAGE_TOPIC}
    assert section["frames"]["kinds"] == counts and len(counts) >= 3
    assert section["frames"]["hit"] == groups["hit"].frames
    assert section["frames"]["frames"] == SEQUENCES * FRAMES
    assert section["frames"]["no_oracle"] == 0 and section["frames"]["unlogged"] == 0
    model = payload["models"][0]["corruption"]
    for name in ("bag", "hit", "clean"):
        assert model[name] == pytest.approx(miou(groups[name]), abs=1e-12)
    oracle = section["references"]["last_clean_oracle"]
    assert oracle["hit"] == pytest.approx(miou(groups["oracle"]), abs=1e-12)
    assert oracle["bag"] == pytest.approx(miou(groups["oracle_bag"]), abs=1e-12)
    assert oracle["clean"] == pytest.approx(model["clean"], abs=1e-12)
    clean_version = section["references"]["clean_version"]
    assert clean_version["hit"] == pytest.approx(miou(groups["clean_version"]), abs=1e-12)
    for kind, mine in kinds.items():
        assert model["kinds"][kind] == pytest.approx(miou(mine["model"]), abs=1e-12)
        assert oracle["kinds"][kind] == pytest.approx(miou(mine["oracle"]), abs=1e-12)
        assert model["frames"]["kinds"][kind] == counts[kind]
    assert "memory_check" not in payload["models"][0]   # a single-frame model: no check


def test_the_log_is_read_as_written(robot_bag):
    with BagReader(robot_bag) as reader:
        log = read_corruption_log(reader, CORRUPTION_TOPIC)
    expected = [kinds for video in videos() for kinds in video.corruption_log]
    assert log.recipe == "robot-v2"
    assert [log.kinds[stamp] for stamp in sorted(log.kinds)] == expected


def test_memory_check_is_the_network_with_the_current_frame_as_memory(robot_bag):
    torch.manual_seed(0)
    pipeline = SegmentationPipeline.from_pretrained("lmanet_erfnet", None, device="cpu",
                                                    num_threads=1)
    video = videos()[0]
    for i in range(3):   # a memory full of other frames first: the check must not use it
        pipeline.process([Frame("cam", video.frame(i).image, 10 + i, "camera")])
    image = video.frame(5).image
    labels = memory_check_labels(pipeline, Frame("cam", image, 20, "camera"))
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    with torch.inference_mode():
        logits, _ = pipeline.model.step(x, pipeline.model.step(x, None)[1])
    top2 = logits[0, :19].topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-4).numpy()
    expected = logits[0, :19].argmax(dim=0).to(torch.uint8).numpy()
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], expected[clear])


def test_real_networks_report_plot_and_metrics(robot_bag, tmp_path):
    out = tmp_path / "out"
    outcome = run(robot_bag, out, plots=True, compare=[ModelSpec("lmanet_erfnet")])
    payload = outcome.payload
    erfnet, lmanet = payload["models"]
    assert "memory_check" not in erfnet and "gain" not in erfnet
    check = lmanet["memory_check"]
    assert set(check) >= {"bag", "hit", "clean", "kinds", "frames", "gain_removed", "credited"}
    assert check["frames"] == lmanet["corruption"]["frames"]
    assert set(lmanet["gain"]) == {"bag", "hit", "clean", "flip_rate"}
    assert lmanet["gain"]["hit"] == pytest.approx(
        lmanet["corruption"]["hit"] - erfnet["corruption"]["hit"])
    if check["gain_removed"] is not None:
        assert check["gain_removed"] == pytest.approx(
            (lmanet["corruption"]["hit"] - check["hit"]) / lmanet["gain"]["hit"])
    saved = load(out)
    assert saved["corruption"] == json.loads(json.dumps(payload["corruption"]))
    assert [m["corruption"] for m in saved["models"]] == [erfnet["corruption"],
                                                          lmanet["corruption"]]
    assert saved["models"][1]["memory_check"] == json.loads(json.dumps(check))
    report = (out / "report.md").read_text()
    assert "## Accuracy under corruption (robot-v2)" in report
    assert "| Row | bag | hit | clean |" in report
    for row in ("| `erfnet` |", "| `lmanet_erfnet` memory check (memory = current frame) |",
                "| `erfnet` on the clean versions (reference) |",
                "| last clean frame of `erfnet` (oracle) |", "| `lmanet_erfnet` | "):
        assert row in report
    assert "### Gain over the single-frame baseline `erfnet`" in report
    assert "credited to the memory" in report
    assert (out / CORRUPTION_PLOT).stat().st_size > 0 and CORRUPTION_PLOT in report
    assert (out / "flip_rate.png").is_file()


@pytest.mark.usefixtures("identity")
def test_switches_and_topics(robot_bag, tmp_path):
    off = run(robot_bag, tmp_path / "off", corruption_topic=None).payload
    assert "corruption" not in off and "corruption" not in off["models"][0]
    no_clean = run(robot_bag, tmp_path / "nc", clean_topic=None).payload
    assert no_clean["corruption"]["references"]["clean_version"] is None
    assert "No clean versions" in (tmp_path / "nc" / "report.md").read_text()
    unchecked = run(robot_bag, tmp_path / "nm", compare=[ModelSpec("lmanet_erfnet")],
                    memory_check=False).payload
    assert "memory_check" not in unchecked["models"][1] and "gain" in unchecked["models"][1]
    checked = run(robot_bag, tmp_path / "mc", compare=[ModelSpec("lmanet_erfnet")]).payload
    assert checked["models"][1]["memory_check"]["gain_removed"] is None   # no gain: identical
    assert "nothing to credit" in (tmp_path / "mc" / "report.md").read_text()
    with pytest.raises(EvalError, match="corruption log topic '/nope'"):
        run(robot_bag, tmp_path / "bad", corruption_topic="/nope")
    with pytest.raises(EvalError, match="needs a corruption log"):
        run(robot_bag, tmp_path / "bad2", corruption_topic=None, clean_topic=CLEAN_IMAGE_TOPIC)
