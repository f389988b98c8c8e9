"""What report.md (and report.html) say where a value is missing: no label topic (one clear line,
no accuracy table or IoU plot), no memory length or checkpoint reported (never a Python None),
classes absent from ground truth and prediction (``absent``, not 0 %, in the table and the plot;
null in metrics.json); and the host section (cores, PyTorch threads, load averages) with what
the latency measures."""
import json
import os

import numpy as np
import pytest
import torch

from eval_helpers import identity  # noqa: F401 (a fixture, see usefixtures)
from eval_helpers import IMAGE, LABELS, T0, load, write_scene_bag
from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES
from lmanet_ros.evaluation import EvalOptions, build_metrics, evaluate, write_report
from lmanet_ros.evaluation.plots import IOU_PLOT, class_iou_figure
from lmanet_ros.metrics import RunScore


def run(tmp_path, **options):
    bag = write_scene_bag(tmp_path / "bag", n=4, labels=options.pop("labels", True))
    out = tmp_path / "out"
    evaluate(EvalOptions(bag=bag, out=out, model="lmanet_erfnet", device="cpu",
                         image_topics=[IMAGE], video=False, **options))
    return out, (out / "report.md").read_text()


@pytest.mark.usefixtures("identity")
def test_without_label_topic_one_line_and_no_accuracy(tmp_path):
    out, report = run(tmp_path, labels=False)
    assert "- Label topic: none (no ground truth: accuracy not scored)" in report
    assert report.count("**Accuracy not scored**: no label topic") == 1
    assert "- Parameters: memory length: 4 (the model's own), device = cpu" in report
    assert "None" not in report and "None" not in (out / "report.html").read_text()
    for accuracy in ("mIoU", "Pixel acc.", "GT-stable", "Per-class IoU"):
        assert accuracy not in report, accuracy
    assert not (out / IOU_PLOT).exists()
    assert "| Model | Checkpoint | Flip rate | Latency" in report   # kept: flips and latency
    assert "## Latency" in report and (out / "flip_rate.png").exists()


def live_run(labelled: bool) -> RunScore:
    """A live-scored run of three frames: road and sidewalk in the ground truth, everything
    predicted road (sidewalk: IoU 0; the 17 other classes: absent)."""
    score = RunScore("node", CITYSCAPES_CLASS_NAMES)
    gt = np.zeros((4, 8), np.uint8)
    gt[:, 4:] = 1
    for i in range(3):
        score.add("/lmanet/labels", np.zeros((4, 8), np.uint8), gt if labelled else None,
                  stamp_ns=T0 + i * 10**8, latency_ms=20.0 + i)
    return score


def test_live_report_without_model_info_shows_no_none(tmp_path):
    """What ``lmanet score`` writes when the node's label_info never came and the bag's frame
    count is unknown."""
    score = live_run(labelled=False)
    payload = build_metrics([score], [{"label": "node", "model": None, "checkpoint": None,
                                       "checkpoint_id": None}],
                            source={"bag": "/bags/drive", "label_topic": None,
                                    "frames_evaluated": 3, "frames_in_bag": None},
                            parameters={"max_gap": 1.0}, partial=False, mode="live")
    write_report(tmp_path, payload, [score], plots=False)
    report = (tmp_path / "report.md").read_text()
    assert "None" not in report
    assert "- Frames evaluated: 3 (stride 1)" in report
    assert "memory length: not reported" in report and "`not reported`" in report
    assert "from publishing a frame to receiving the node's labels" in report
    assert "Host:" not in report   # the node's host is not known here


def test_absent_classes_differ_from_zero_in_table_plot_and_json(tmp_path):
    score = live_run(labelled=True)
    payload = build_metrics([score], [{"label": "node", "model": "m", "checkpoint": None,
                                       "checkpoint_id": "abc", "memory_length": 2}],
                            source={"bag": "b", "label_topic": LABELS, "frames_evaluated": 3},
                            parameters={}, partial=False, mode="live")
    write_report(tmp_path, payload, [score])
    per_class = load(tmp_path)["models"][0]["accuracy"]["per_class_iou"]
    assert per_class["road"] == pytest.approx(0.5) and per_class["sidewalk"] == 0.0
    absent = [name for name, value in per_class.items() if value is None]
    assert len(absent) == 17 and "building" in absent             # null in metrics.json
    report = (tmp_path / "report.md").read_text()
    assert "| road | 50.0 |" in report and "| sidewalk | 0.0 |" in report
    assert "| building | absent |" in report and "absent: the class is neither" in report
    assert "memory length: 2" in report
    assert (tmp_path / IOU_PLOT).stat().st_size > 0
    axes = class_iou_figure(payload).axes[0]
    bars = [patch.get_height() for patch in axes.containers[0]]
    assert bars == pytest.approx([50.0, 0.0])                   # road, sidewalk: bars
    marks = sorted(round(text.get_position()[0]) for text in axes.texts
                   if text.get_text() == "absent")
    assert marks == [CITYSCAPES_CLASS_NAMES.index(name) for name in absent]
    assert any(text.get_text().startswith("absent:") for text in axes.get_legend().get_texts())


@pytest.mark.usefixtures("identity")
def test_host_section_and_latency_meaning(tmp_path):
    out, report = run(tmp_path, label_topic=LABELS)
    host = json.loads((out / "metrics.json").read_text())["host"]
    assert host["cores_available"] == len(os.sched_getaffinity(0))
    assert host["torch_threads"] == torch.get_num_threads()
    for key in ("load_average_start", "load_average_end"):
        assert len(host[key]) == 3 and all(value >= 0 for value in host[key])
    assert "num_threads" not in load(out)["parameters"]
    assert f"PyTorch used {torch.get_num_threads()} CPU thread(s)" in report
    assert "load average (1 / 5 / 15 min)" in report
    assert "compute time per frame in this process" in report and "DDS transport" in report
    assert "memory length: 4 (the model's own)" in report and "| road | 100.0 |" in report
