"""`lmanet eval --live`, `lmanet score` and `lmanet replay` as commands, over DDS.

The live test starts ``lmanet_node`` (test/conftest.py fixtures) in ``processing_mode all`` with
reliable input and weights saved here, replays a bag in lock-step, scores the node's labels live
(in the replaying process and in a passive ``lmanet score`` process) and checks every frame was
scored and the mIoU equals the offline ``lmanet eval`` of the same bag and weights.
"""
import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from eval_helpers import FRAME_H as H
from eval_helpers import FRAME_W as W
from eval_helpers import IMAGE, LABELS, PERIOD, T0, N, frames
from eval_helpers import write_frames_bag as write_bag
from lmanet_ros.tools import cli
from ros_helpers import child_env, wait_until
from video_helpers import read_video

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random LMANet weights in a file, so the node and the offline eval run the same network."""
    import torch

    from lmanet_ros.models import build_model
    from lmanet_ros.models.checkpoint import save_checkpoint
    torch.manual_seed(3)
    return save_checkpoint(build_model("lmanet_erfnet"),
                           tmp_path_factory.mktemp("weights") / "random.safetensors")


@pytest.fixture(scope="module")
def labelled_bag(tmp_path_factory, weights):
    """A bag whose ground truth is the network's own labels, partly overwritten: the scores
    are then neither 0 nor 1, so agreement between live and offline means something."""
    from lmanet_ros.pipeline import Frame, SegmentationPipeline
    images = frames()
    pipeline = SegmentationPipeline.from_pretrained("lmanet_erfnet", weights, device="cpu")
    labels = []
    for i, image in enumerate(images):
        result = pipeline.process([Frame(IMAGE, image, T0 + i * PERIOD, "cam")])[0]
        gt = result.labels.copy()
        gt[: H // 4, (11 * i) % W:] = i % 19          # a wrong, moving band
        gt[-4:] = 255                                 # void rows
        labels.append(gt)
    return write_bag(tmp_path_factory.mktemp("bags") / "labelled", images, labels)


@pytest.fixture(scope="module")
def node(node_factory, weights):
    return node_factory(params={"processing_mode": "all", "input.reliability": "reliable",
                                "input.depth": 0},
                        launch={"image": IMAGE, "checkpoint": str(weights), "device": "cpu"})


def _metrics(directory):
    return json.loads((directory / "metrics.json").read_text())


def test_live_lockstep_scores_every_frame_like_offline(ros, node, labelled_bag, weights,
                                                       tmp_path):
    labels_topic = node.topic("labels")
    passive_out = tmp_path / "passive"
    passive = subprocess.Popen(
        [sys.executable, "-c", "from lmanet_ros.tools.cli import main; raise SystemExit(main())",
         "score", str(labelled_bag), "--node-labels-topic", labels_topic, "--label-topic", LABELS,
         "--out", str(passive_out), "--idle-timeout", "60", "--timeout", "180"],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ros.node.count_subscribers(labels_topic) >= 1, 60,
                   what="lmanet score subscribed to the labels")
        time.sleep(0.5)   # let its subscription match the node's publisher
        live_out = tmp_path / "live"
        code = cli.main(["eval", "--live", str(labelled_bag), "--node", node.fqn,
                         "--image-topic", IMAGE, "--label-topic", LABELS, "--out", str(live_out),
                         "--timeout", "60"])
        assert code == 0
        passive_log = passive.communicate(timeout=120)[0].decode(errors="replace")
        assert passive.returncode == 0, passive_log
    finally:
        if passive.poll() is None:
            passive.kill()
            passive.wait(10)

    offline_out = tmp_path / "offline"
    assert cli.main(["eval", str(labelled_bag), "--image-topic", IMAGE, "--label-topic", LABELS,
                     "--model", "lmanet_erfnet", "--checkpoint", str(weights), "--device", "cpu",
                     "--out", str(offline_out), "--no-video", "--no-plots"]) == 0

    offline, live, passive_metrics = (_metrics(offline_out), _metrics(live_out),
                                      _metrics(passive_out))
    assert live["mode"] == "live" and live["partial"] is False
    assert live["source"]["frames_published"] == N
    assert live["source"]["frames_missing_labels"] == 0
    reference = offline["models"][0]
    miou = reference["accuracy"]["miou"]
    assert 0.05 < miou < 0.95
    for scored in (live, passive_metrics):
        model = scored["models"][0]
        assert model["frames"] == N and model["accuracy"]["labelled_frames"] == N
        assert model["accuracy"]["miou"] == pytest.approx(miou, abs=1e-3)
        assert model["accuracy"]["pixel_accuracy"] == pytest.approx(
            reference["accuracy"]["pixel_accuracy"], abs=1e-3)
        assert model["checkpoint_id"] == reference["checkpoint_id"]
        assert model["model"] == "lmanet_erfnet"
    live_model = live["models"][0]
    assert live_model["latency_ms"]["count"] == N      # publish -> labels, per frame
    assert (live_out / "report.md").is_file() and (live_out / "flip_rate.png").is_file()
    # overlay.mp4: every input frame beside the overlay the node published for it
    assert live["source"]["video_frames"] == N
    assert live["source"]["video_frames_without_overlay"] == 0
    assert "overlay.mp4" in (live_out / "report.md").read_text()
    decoded, _ = read_video(live_out / "overlay.mp4")
    assert len(decoded) == N and decoded[0].shape == (H, 2 * W, 3)

    def blocks(rgb):  # 8x8 block means: lossy H.264 keeps these, not the per-pixel noise
        return cv2.resize(rgb.astype(np.float32), (W // 8, H // 8), interpolation=cv2.INTER_AREA)

    for image, shown in zip(frames(), decoded):
        left, right = blocks(shown[:, :W]), blocks(shown[:, W:])
        assert np.abs(left - blocks(image)).mean() < 12
        assert np.abs(right - blocks(image)).mean() > 2 * np.abs(left - blocks(image)).mean()


def test_replay_command_errors(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", frames(1))
    assert cli.main(["replay", str(bag), "--topics", "/nope"]) == 2
    assert "not in" in capsys.readouterr().err
    assert cli.main(["replay", str(bag), "--loop", "--score-out", str(tmp_path / "o")]) == 2
    assert cli.main(["replay", str(tmp_path / "missing")]) == 2
