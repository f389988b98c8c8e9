"""`lmanet replay`, `lmanet eval --live` and `lmanet score` over DDS.

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

from conftest import child_env, wait_until
from lmanet_ros.bags import BagWriter
from lmanet_ros.tools import cli
from lmanet_ros.report import recorded_fps
from lmanet_ros.tools.replay import (LiveVideo, ReplayError, ReplayOptions, header_of, mono8_of,
                                     parse_remaps, replay_bag)

pytestmark = pytest.mark.ros

H, W = 64, 128
N = 10
T0 = 1_700_000_000_000_000_000
PERIOD = 1_000_000_000 // 17
IMAGE, LABELS = "/camera/image", "/camera/labels"


def frames(n=N):
    """Textured frames with a bright square moving across (enough for a varied prediction)."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    out = []
    for i in range(n):
        image = np.roll(base, 3 * i, axis=1).copy()
        image[20:44, 8 * i: 8 * i + 24] = (250, 240, 30)
        out.append(image)
    return out


def write_bag(path, images, labels=None, storage="mcap"):
    with BagWriter(path, storage=storage) as bag:
        for i, image in enumerate(images):
            stamp = T0 + i * PERIOD
            bag.write_image(IMAGE, stamp, "cam", image, "rgb8", log_time_ns=stamp + 10**6)
            if labels is not None:
                bag.write_image(LABELS, stamp, "cam", labels[i], "mono8",
                                log_time_ns=stamp + 2 * 10**6)
    return path


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
        result = pipeline.process([Frame(IMAGE, image, (T0 + i * PERIOD) * 1e-9, "cam")])[0]
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
         "score", str(labelled_bag), "--labels-topic", labels_topic, "--label-topic", LABELS,
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
    video = cv2.VideoCapture(str(live_out / "overlay.mp4"))
    decoded = []
    while True:
        ok, bgr = video.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    video.release()
    assert len(decoded) == N and decoded[0].shape == (H, 2 * W, 3)

    def blocks(rgb):  # 8x8 block means: lossy mp4v keeps these, not the per-pixel noise
        return cv2.resize(rgb.astype(np.float32), (W // 8, H // 8), interpolation=cv2.INTER_AREA)

    for image, shown in zip(frames(), decoded):
        left, right = blocks(shown[:, :W]), blocks(shown[:, W:])
        assert np.abs(left - blocks(image)).mean() < 12
        assert np.abs(right - blocks(image)).mean() > 2 * np.abs(left - blocks(image)).mean()


def test_recorded_fps_ignores_pauses_and_equal_stamps():
    stamps = [T0 + i * PERIOD for i in range(5)] + [T0 + 4 * PERIOD] + \
        [T0 + 5 * 10**9 + i * PERIOD for i in range(5)]
    assert recorded_fps(stamps) == pytest.approx(17.0, rel=1e-3)
    assert recorded_fps([T0]) == 17.0 and recorded_fps([T0, T0], default=5.0) == 5.0


def test_live_video_pairs_equal_stamps_in_order_and_skips_missing_overlays(tmp_path):
    """Two frames with one stamp (the node counts them as duplicates), a 5 s pause, an overlay
    that never comes, overlays arriving late: every frame lands once, beside its own overlay."""
    stamps = [T0 + i * PERIOD for i in range(10)] + [T0 + 9 * PERIOD] + \
        [T0 + 5 * 10**9 + i * PERIOD for i in range(9)]
    inputs = [np.full((16, 32, 3), 12 * i, np.uint8) for i in range(len(stamps))]
    video = LiveVideo(tmp_path / "overlay.mp4")
    for stamp, image in zip(stamps, inputs):
        video.add_input(stamp, image)
    assert video.frames == 0 and video.pending == len(stamps)
    for stamp, image in list(zip(stamps, inputs))[:-1]:  # the last overlay never comes
        video.add_overlay(stamp, 255 - image)
    video.close()
    assert video.frames == len(stamps) - 1 and video.missing == 1 and video.pending == 0
    capture = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(17.0, abs=0.1)
    shown = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        shown.append(bgr)
    capture.release()
    assert len(shown) == len(stamps) - 1
    for bgr, image in zip(shown, inputs):  # left: the input, right: its own overlay
        assert abs(float(bgr[:, :32].mean()) - image.mean()) < 6
        assert abs(float(bgr[:, 32:].mean()) - (255 - image.mean())) < 6


def test_replay_publishes_frames_and_clock(ros, tmp_path):
    from rosgraph_msgs.msg import Clock
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    bag = write_bag(tmp_path / "bag", frames(4), storage="sqlite3")
    images = ros.subscribe(Image, "/replayed/image")
    clock = ros.subscribe(Clock, "/clock",
                          QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    outcome = replay_bag(ReplayOptions(bag=bag, remap={IMAGE: "/replayed/image"}, rate=0.0,
                                       wait_for_subscribers=20.0))
    assert outcome.frames == 4 and outcome.published == 4
    received = images.wait_for(4, timeout=20)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in received]
    assert stamps == [T0 + i * PERIOD for i in range(4)]
    np.testing.assert_array_equal(
        np.frombuffer(bytes(received[2].data), np.uint8).reshape(H, W, 3), frames(4)[2])
    recorded = [T0 + i * PERIOD + 10**6 for i in range(4)]   # the recording times
    clock.wait_for(1, timeout=20, predicate=lambda t: t.clock.sec * 10**9 + t.clock.nanosec
                   == recorded[-1])
    ticks = [t.clock.sec * 10**9 + t.clock.nanosec for t in clock.messages]
    assert ticks == recorded[-len(ticks):]   # in order (the first may precede the match)


def test_replay_rate_follows_recorded_timing(tmp_path):
    bag = write_bag(tmp_path / "bag", frames(4))
    start = time.monotonic()
    replay_bag(ReplayOptions(bag=bag, rate=0.5))         # 3 periods of 1/17 s at half speed
    assert time.monotonic() - start >= 3 * 2 / 17 * 0.95


@pytest.mark.parametrize("subscribed, message", [(False, "nobody subscribes"),
                                                 (True, "no publisher of")])
def test_lockstep_without_node_fails_clearly(ros, tmp_path, subscribed, message):
    from sensor_msgs.msg import Image
    bag = write_bag(tmp_path / "bag", frames(2))
    topic = f"/lockstep_{int(subscribed)}/image"
    if subscribed:
        ros.subscribe(Image, topic)
    # the replay's own node must discover the test's subscription first: allow for a busy host
    options = ReplayOptions(bag=bag, remap={IMAGE: topic}, lockstep=True, rate=0.0,
                            labels_topics=["/nobody/labels"], startup_timeout=8.0)
    with pytest.raises(ReplayError, match=message):
        replay_bag(options)


def test_replay_command_errors(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", frames(1))
    assert cli.main(["replay", str(bag), "--topics", "/nope"]) == 2
    assert "not in" in capsys.readouterr().err
    assert cli.main(["replay", str(bag), "--loop", "--score-out", str(tmp_path / "o")]) == 2
    assert cli.main(["replay", str(tmp_path / "missing")]) == 2


def test_helpers():
    from lmanet_ros.bags import typestore
    from lmanet_ros.tools.eval import image_cdr
    data = image_cdr(T0 + 5, "cam_front", "mono8", np.zeros((2, 3), np.uint8))
    assert header_of(data, "sensor_msgs/msg/Image") == (T0 + 5, "cam_front")
    assert header_of(b"\x00\x01\x00\x00", "std_msgs/msg/String") == (None, "")
    msg = typestore().deserialize_cdr(data, "sensor_msgs/msg/Image")
    assert mono8_of(msg).shape == (2, 3)
    assert parse_remaps(["/a:=/b"]) == {"/a": "/b"}
    with pytest.raises(ReplayError):
        parse_remaps(["/a=/b"])
