"""Metrics against hand-computed confusion matrices and a brute-force reference."""
import math

import numpy as np
import pytest

from lmanet_ros.metrics import (ConfusionMatrix, RunScore, TemporalConsistency, latency_summary,
                                nan_to_none, throughput)

U8 = np.uint8


def test_confusion_matrix_hand_computed():
    gt = np.array([[0, 0, 1], [1, 2, 255]], U8)
    pred = np.array([[0, 1, 1], [1, 0, 2]], U8)
    cm = ConfusionMatrix(num_classes=3)
    cm.update(gt, pred)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    # IoU_c = TP / (GT_c + PRED_c - TP): 1/(2+2-1), 2/(2+3-2), 0/(1+0-0)
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 0.0])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert cm.labelled_pixels == 5
    assert cm.ignored_pixels == 1
    assert cm.invalid_label_pixels == 0


def test_absent_class_is_nan_and_excluded_but_predicted_only_class_counts():
    cm = ConfusionMatrix(num_classes=4)
    cm.update(np.array([[0, 0, 1, 1]], U8), np.array([[0, 0, 1, 1]], U8))
    iou = cm.iou()
    assert iou[0] == 1.0 and iou[1] == 1.0
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert cm.miou() == 1.0          # classes 2 and 3: no GT, no prediction -> not averaged
    cm.update(np.array([[0, 255]], U8), np.array([[2, 3]], U8))
    iou = cm.iou()
    # class 2 predicted once on a class-0 pixel: IoU 0, and it now counts in the mean
    assert iou[2] == 0.0
    assert math.isnan(iou[3])        # predicted only on a void pixel: ignored
    assert iou[0] == pytest.approx(2 / 3)
    assert cm.miou() == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_out_of_range_prediction_is_a_miss_and_invalid_gt_is_ignored():
    cm = ConfusionMatrix(num_classes=2)
    cm.update(np.array([[0, 1, 30, 254]], U8), np.array([[7, 1, 0, 0]], U8))
    assert cm.labelled_pixels == 2
    assert cm.invalid_label_pixels == 2
    np.testing.assert_allclose(cm.iou(), [0.0, 1.0])   # class 0: GT 1, pred 0, TP 0
    assert cm.pixel_accuracy() == pytest.approx(0.5)


def test_accumulates_over_frames_and_merges():
    gt = np.array([[0, 1]], U8)
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(gt, np.array([[0, 0]], U8))
    b.update(gt, np.array([[1, 1]], U8))
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, [[1, 1], [1, 1]])
    assert a.frames == 2
    np.testing.assert_allclose(a.iou(), [1 / 3, 1 / 3])


def _brute_force(gt, pred, k):
    matrix = np.zeros((k, k), np.int64)
    misses = np.zeros(k, np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
        if g >= k:
            continue
        if p < k:
            matrix[g, p] += 1
        else:
            misses[g] += 1
    ious = []
    for c in range(k):
        tp = matrix[c, c]
        union = matrix[c].sum() + misses[c] + matrix[:, c].sum() - tp
        ious.append(tp / union if union else math.nan)
    return matrix, np.array(ious)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_frames(seed):
    rng = np.random.default_rng(seed)
    k = 19
    cm = ConfusionMatrix(k)
    gts, preds = [], []
    for _ in range(3):
        gt = rng.integers(0, 22, (17, 23)).astype(U8)
        gt[rng.random(gt.shape) < 0.2] = 255
        pred = rng.integers(0, 20, (17, 23)).astype(U8)
        cm.update(gt, pred)
        gts.append(gt)
        preds.append(pred)
    matrix, ious = _brute_force(np.concatenate(gts), np.concatenate(preds), k)
    np.testing.assert_array_equal(cm.matrix, matrix)
    np.testing.assert_allclose(cm.iou(), ious, equal_nan=True)


@pytest.mark.parametrize("gt, pred, message", [
    (np.zeros((2, 2), U8), np.zeros((2, 3), U8), "shape"),
    (np.zeros((2, 2), np.int32), np.zeros((2, 2), U8), "uint8"),
])
def test_rejects_bad_inputs(gt, pred, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix().update(gt, pred)


@pytest.mark.parametrize("num_classes, ignore_index", [(0, 255), (256, 255), (19, 10)])
def test_rejects_bad_construction(num_classes, ignore_index):
    with pytest.raises(ValueError):
        ConfusionMatrix(num_classes, ignore_index)


def test_flip_rates_hand_computed():
    tc = TemporalConsistency(num_classes=3)
    gt0 = np.array([[0, 0], [1, 255]], U8)
    gt1 = np.array([[0, 1], [1, 255]], U8)   # GT-stable pixels: (0,0) and (1,0)
    assert tc.update("cam", np.array([[0, 0], [1, 1]], U8), gt0) is None
    sample = tc.update("cam", np.array([[1, 1], [1, 2]], U8), gt1, index=1, stamp_ns=500_000_000)
    assert sample.flip_rate == pytest.approx(3 / 4)
    assert sample.flip_rate_gt_stable == pytest.approx(1 / 2)
    sample = tc.update("cam", np.array([[1, 1], [1, 2]], U8), gt1)
    assert sample.flip_rate == 0.0 and sample.flip_rate_gt_stable == 0.0
    assert tc.flip_rate == pytest.approx(3 / 8)
    # second pair: gt1 against itself, 3 stable pixels (void excluded), no flips: 1 / (2 + 3)
    assert tc.flip_rate_gt_stable == pytest.approx(1 / 5)
    summary = tc.summary()
    assert summary["pairs"] == 2 and summary["gt_stable_pixels"] == 5
    assert summary["consistency"] == pytest.approx(5 / 8)


def test_flips_are_per_stream_and_not_across_cuts():
    tc = TemporalConsistency()
    zeros, ones = np.zeros((2, 2), U8), np.ones((2, 2), U8)
    tc.update("a", zeros)
    tc.update("b", ones)
    assert tc.update("a", zeros).flip_rate == 0.0      # compared with a's frame, not b's
    assert tc.update("a", ones, continuous=False) is None
    assert tc.update("a", ones).flip_rate == 0.0       # compared with the frame after the cut
    assert tc.update("a", np.ones((3, 2), U8)) is None  # size change: nothing to compare
    assert tc.pairs == 2
    assert math.isnan(tc.flip_rate_gt_stable)          # no labels: no GT-stable rate
    assert tc.summary()["flip_rate_gt_stable"] is None


def test_latency_summary_and_throughput():
    stats = latency_summary(np.arange(1, 101, dtype=float))
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["max"] == 100.0 and stats["mean"] == 50.5 and stats["count"] == 100
    assert latency_summary([])["p50"] is None
    assert throughput(30, 2.0) == 15.0
    assert throughput(3, 0.0) is None
    assert nan_to_none(math.nan) is None


def test_run_score_summary():
    run = RunScore("m", ["a", "b"])
    gt = np.array([[0, 1]], U8)
    run.add("cam", np.array([[0, 1]], U8), gt, stamp_ns=0, latency_ms=10.0)
    run.add("cam", np.array([[0, 0]], U8), gt, stamp_ns=100_000_000, latency_ms=20.0,
            reset_reason="time_jump_back", continuous=False)
    run.add("cam", np.array([[0, 0]], U8), None, stamp_ns=200_000_000, latency_ms=30.0)
    run.wall_s = 1.5
    summary = run.summary()
    assert summary["frames"] == 3
    accuracy = summary["accuracy"]
    assert accuracy["labelled_frames"] == 2
    assert accuracy["per_class_iou"] == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 2)}
    assert accuracy["miou"] == pytest.approx(7 / 12)
    assert accuracy["pixel_accuracy"] == pytest.approx(3 / 4)
    assert summary["temporal_consistency"]["pairs"] == 1   # the cut is not compared
    assert summary["memory_resets"]["by_reason"] == {"time_jump_back": 1}
    assert summary["memory_resets"]["events"][0]["index"] == 1
    assert summary["latency_ms"]["max"] == 30.0
    assert summary["throughput_fps"] == pytest.approx(2.0)
    assert RunScore("m", ["a"]).summary()["accuracy"] is None
