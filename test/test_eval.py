"""`lmanet eval` on bags written here: both storages, labels or not, time going back, two cameras,
stride, labelIds, compare, output bag, Ctrl-C; metrics end to end through an identity model."""
import json
import math

import numpy as np
import pytest

from lmanet_ros.bags import BagReader, BagWriter, typestore
from lmanet_ros.classes import CITYSCAPES_LABELS
from lmanet_ros.pipeline import Result, SegmentationPipeline, StageTimes
from lmanet_ros.tools import cli
from lmanet_ros.tools.eval import image_cdr

H, W = 32, 64
T0 = 1_700_000_000_000_000_000
PERIOD = 1_000_000_000 // 17
IMAGE, LABELS = "/camera/image", "/camera/labels"
TRAIN_TO_LABEL_ID = {label.train_id: label.id for label in CITYSCAPES_LABELS
                     if label.train_id != 255 and label.id >= 0}


def scene(i: int, height: int = H, width: int = W) -> tuple[np.ndarray, np.ndarray]:
    """Frame i of a toy street: (RGB image, trainIds). The red channel is the trainId."""
    labels = np.zeros((height, width), np.uint8)          # road
    labels[: height // 3] = 10                            # sky
    labels[height // 3: height // 2] = 2                  # building
    x = (4 * i) % (width - width // 4)
    labels[height // 2: height // 2 + height // 4, x: x + width // 4] = 13   # a car driving by
    labels[-2:] = 255                                     # ego hood: void
    image = np.stack([labels, labels * 7, np.full_like(labels, 90)], axis=2)  # uint8 wraps
    return image.astype(np.uint8), labels


def write_bag(path, *, n=6, storage="mcap", topics=(IMAGE,), labels=True, label_first=False,
              stamps=None, label_ids=False, size=(H, W)):
    """A bag of n frames per topic (labels for the first topic); recording times increase
    even where the stamps go back, as a recorder's clock does."""
    stamps = list(stamps) if stamps is not None else [T0 + i * PERIOD for i in range(n)]
    with BagWriter(path, storage=storage) as bag:
        for i, stamp in enumerate(stamps):
            image, gt = scene(i, *size)
            if label_ids:
                lut = np.zeros(256, np.uint8)
                for train, label_id in TRAIN_TO_LABEL_ID.items():
                    lut[train] = label_id
                gt = lut[gt]                                # void 255 -> 0 (unlabeled)
            records = [(topic, image) for topic in topics]
            if labels:
                records.insert(0 if label_first else 1, (LABELS, gt))
            for k, (topic, array) in enumerate(records):
                bag.write_image(topic, stamp, "cam", array, "mono8" if array.ndim == 2 else "rgb8",
                                log_time_ns=T0 + i * PERIOD + 1_000_000 + k * 1000)
    return path


def run_eval(bag, out, *extra):
    return cli.main(["eval", str(bag), "--out", str(out), "--model", "lmanet_erfnet",
                     "--device", "cpu", "--no-video", "--no-plots", *extra])


def load(out):
    return json.loads((out / "metrics.json").read_text())


def expected_gt_pixels(n, stride=1):
    return sum(int(np.count_nonzero(scene(i)[1] != 255)) for i in range(0, n, stride))


@pytest.fixture
def identity(monkeypatch):
    """Replace the network by a perfect one: the prediction is the image's red channel (the
    memory rules still apply: tests of the tool need not wait for the network)."""
    def process(self, frames, *, want_confidence=False):
        out = []
        for frame in frames:
            state = self._state(frame.stream)
            admission = state.admit(frame.stamp, frame.image.shape[:2], frame.frame_id,
                                    self.policy)
            out.append(Result(frame.stream, np.ascontiguousarray(frame.image[..., 0]), None,
                              admission.reset_reason, admission.duplicate, 1, 1,
                              StageTimes(0.1, 1.0, 0.1)))
        return out
    monkeypatch.setattr(SegmentationPipeline, "process", process)
    monkeypatch.setattr(SegmentationPipeline, "warmup", lambda self, h, w: None)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_eval_writes_every_output(tmp_path, storage):
    bag = write_bag(tmp_path / "bag", storage=storage)
    out = tmp_path / "out"
    code = cli.main(["eval", str(bag), "--image-topic", IMAGE, "--label-topic", LABELS,
                     "--model", "lmanet_erfnet", "--device", "cpu", "--out", str(out),
                     "--output-bag", str(tmp_path / "labelled")])
    assert code == 0
    for name in ("metrics.json", "report.md", "class_iou.png", "latency_hist.png",
                 "flip_rate.png", "overlay.mp4"):
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
    assert metrics["parameters"]["memory_length"] is None  # the model's own (4)
    assert model["info"]["memory_length"] == 4
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
            stamps.append((topic, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec,
                           log_ns))
    label_stamps = [s for t, s, _ in stamps if t.endswith("/labels")]
    assert label_stamps == [T0 + i * PERIOD for i in range(6)]
    assert all(log == s + 1_000_000 for _, s, log in stamps)   # input's recording time


def test_without_labels(tmp_path, identity):
    bag = write_bag(tmp_path / "bag", labels=False, storage="sqlite3")
    out = tmp_path / "out"
    assert run_eval(bag, out) == 0
    model = load(out)["models"][0]
    assert model["accuracy"] is None and model["frames"] == 6
    assert model["temporal_consistency"]["flip_rate_gt_stable"] is None
    assert "accuracy not measured" in (out / "report.md").read_text()


@pytest.mark.parametrize("label_first", [False, True])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_identity_model_scores_perfectly(tmp_path, identity, label_first, stride):
    """Pairing by stamp is exact (labels before or after their image, any stride)."""
    n = 8
    bag = write_bag(tmp_path / "bag", n=n, label_first=label_first)
    out = tmp_path / "out"
    assert run_eval(bag, out, "--label-topic", LABELS, "--stride", str(stride)) == 0
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


def test_label_ids_are_mapped(tmp_path, identity):
    bag = write_bag(tmp_path / "bag", label_ids=True)
    out = tmp_path / "out"
    assert run_eval(bag, out, "--label-topic", LABELS, "--label-ids") == 0
    acc = load(out)["models"][0]["accuracy"]
    assert acc["miou"] == 1.0 and acc["invalid_label_pixels"] == 0
    assert acc["labelled_pixels"] == expected_gt_pixels(6)
    out2 = tmp_path / "out2"   # without the flag the labelIds are not classes
    assert run_eval(bag, out2, "--label-topic", LABELS) == 0
    assert load(out2)["models"][0]["accuracy"]["invalid_label_pixels"] > 0


def test_time_jump_back_resets_memory(tmp_path, identity):
    stamps = [T0 + i * PERIOD for i in range(4)] + [T0 + i * PERIOD for i in range(3)]
    bag = write_bag(tmp_path / "bag", stamps=stamps)
    out = tmp_path / "out"
    assert run_eval(bag, out, "--label-topic", LABELS) == 0
    model = load(out)["models"][0]
    resets = model["memory_resets"]
    assert resets["by_reason"] == {"time_jump_back": 1}
    assert resets["events"][0]["index"] == 4
    assert model["temporal_consistency"]["pairs"] == 5       # the jump is not compared
    assert model["accuracy"]["labelled_frames"] == 7         # repeated stamps paired in turn


def test_gap_resets_memory(tmp_path, identity):
    stamps = [T0, T0 + PERIOD, T0 + 3 * 10**9, T0 + 3 * 10**9 + PERIOD]
    bag = write_bag(tmp_path / "bag", stamps=stamps)
    out = tmp_path / "out"
    assert run_eval(bag, out, "--image-topic", IMAGE, "--max-gap", "1.0") == 0
    assert load(out)["models"][0]["memory_resets"]["by_reason"] == {"gap": 1}


def test_two_cameras(tmp_path, identity):
    front, rear = "/front/image", "/rear/image"
    bag = write_bag(tmp_path / "bag", topics=(front, rear))
    out = tmp_path / "out"
    assert run_eval(bag, out, "--image-topic", front, rear, "--label-topic", LABELS,
                    "--output-bag", str(tmp_path / "labelled")) == 0
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
    code = cli.main(["eval", str(bag), "--out", str(out), "--model", "lmanet_erfnet",
                     "--compare", "erfnet", "--label-topic", LABELS, "--device", "cpu",
                     "--no-video"])
    assert code == 0
    models = load(out)["models"]
    assert [m["label"] for m in models] == ["lmanet_erfnet", "erfnet"]
    assert [m["frames"] for m in models] == [4, 4]
    assert models[1]["info"]["temporal"] is False
    report = (out / "report.md").read_text()
    assert "| Class | `lmanet_erfnet` | `erfnet` |" in report
    assert (out / "class_iou.png").stat().st_size > 0


def test_ctrl_c_leaves_a_valid_partial_report(tmp_path, identity, monkeypatch):
    bag = write_bag(tmp_path / "bag", n=6)
    original = SegmentationPipeline.process
    calls = {"n": 0}

    def interrupted(self, frames, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, frames, **kwargs)

    monkeypatch.setattr(SegmentationPipeline, "process", interrupted)
    out = tmp_path / "out"
    code = cli.main(["eval", str(bag), "--out", str(out), "--model", "lmanet_erfnet",
                     "--label-topic", LABELS, "--device", "cpu", "--no-plots",
                     "--output-bag", str(tmp_path / "labelled")])
    assert code == 130
    metrics = load(out)
    assert metrics["partial"] is True
    assert metrics["source"]["frames_evaluated"] == 3
    assert metrics["models"][0]["accuracy"]["labelled_frames"] == 3
    assert "Partial run" in (out / "report.md").read_text()
    assert (out / "overlay.mp4").stat().st_size > 0
    with BagReader(tmp_path / "labelled") as reader:     # closed properly: readable
        assert reader.topics[f"{IMAGE}/lmanet_erfnet/labels"][1] == 3


@pytest.mark.parametrize("extra, message", [
    (["--image-topic", "/nope"], "not an image topic"),
    (["--label-topic", "/nope"], "label topic '/nope'"),
    (["--image-topic", IMAGE, "--label-topic", IMAGE], "both"),
    (["--stride", "0"], "--stride"),
    ([], "choose with --image-topic"),   # /camera/image and (unnamed) /camera/labels
])
def test_errors_are_reported(tmp_path, identity, capsys, extra, message):
    bag = write_bag(tmp_path / "bag", n=2)
    assert run_eval(bag, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err


def test_existing_output_bag_is_refused(tmp_path, identity, capsys):
    bag = write_bag(tmp_path / "bag", n=2)
    (tmp_path / "taken").mkdir()
    assert run_eval(bag, tmp_path / "out", "--image-topic", IMAGE,
                    "--output-bag", str(tmp_path / "taken")) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("shape, encoding", [((5, 7), "mono8"), ((3, 6, 3), "rgb8")])
@pytest.mark.parametrize("frame_id", ["", "cam", "camera_optical"])
def test_image_cdr_matches_rosbags(shape, encoding, frame_id):
    array = np.random.default_rng(1).integers(0, 255, shape).astype(np.uint8)
    stamp = T0 + 123_456_789
    data = image_cdr(stamp, frame_id, encoding, array)
    store = typestore()
    msg = store.deserialize_cdr(data, "sensor_msgs/msg/Image")
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
    assert msg.header.frame_id == frame_id and msg.encoding == encoding
    assert msg.step * msg.height == array.nbytes
    np.testing.assert_array_equal(msg.data.reshape(shape), array)
    assert data == bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def test_report_is_valid_json_without_nan(tmp_path, identity):
    bag = write_bag(tmp_path / "bag", n=2)
    out = tmp_path / "out"
    assert run_eval(bag, out, "--label-topic", LABELS) == 0
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text
    per_class = json.loads(text)["models"][0]["accuracy"]["per_class_iou"]
    assert any(v is None for v in per_class.values())
    assert not any(isinstance(v, float) and math.isnan(v) for v in per_class.values())
