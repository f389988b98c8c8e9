"""The offline evaluation of a delayed model (stf_delayed_erfnet, seeded random weights): each
result is scored against the ground truth of the frame its labels belong to, on a bag whose labels
differ every frame (scoring against the frame processed would give another confusion matrix); the
last frame gets no labels; metrics.json and report.md state the delay; a causal model compared in
the same run keeps every frame."""
import numpy as np
import torch

from eval_helpers import IMAGE, LABELS, PERIOD, T0, load
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from lmanet_ros.bags import BagReader, BagWriter
from lmanet_ros.evaluation import EvalOptions, ModelSpec, evaluate
from lmanet_ros.metrics import ConfusionMatrix
from lmanet_ros.models import build_model, save_checkpoint
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.stamps import stamp_ns

N, SIZE = 6, (32, 64)


def write_bag(path):
    """N random frames, each with random trainIds (a different class mix every frame)."""
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8),
               rng.integers(0, 19, SIZE, dtype=np.uint8)) for _ in range(N)]
    with BagWriter(path, storage="mcap") as bag:
        for i, (image, gt) in enumerate(frames):
            for k, (topic, array, encoding) in enumerate(((IMAGE, image, "rgb8"),
                                                          (LABELS, gt, "mono8"))):
                bag.write_image(topic, T0 + i * PERIOD, "cam", array, encoding,
                                log_time_ns=T0 + i * PERIOD + 1_000_000 + k * 1000)
    return frames


def test_delayed_model_is_scored_against_the_frame_its_labels_belong_to(tmp_path):
    frames = write_bag(tmp_path / "bag")
    torch.manual_seed(3)
    checkpoint = save_checkpoint(build_model("stf_delayed_erfnet"),
                                 tmp_path / "delayed.safetensors")
    out = tmp_path / "out"
    evaluate(EvalOptions(bag=tmp_path / "bag", out=out, model="stf_delayed_erfnet",
                         checkpoint=str(checkpoint), compare=[ModelSpec("erfnet")],
                         image_topics=[IMAGE], label_topic=LABELS, device="cpu", video=False,
                         plots=False, output_bag=tmp_path / "labelled"))
    delayed, causal = load(out)["models"]
    assert (delayed["output_delay_frames"], causal["output_delay_frames"]) == (1, 0)
    assert (delayed["frames"], causal["frames"]) == (N - 1, N)
    assert delayed["accuracy"]["labelled_frames"] == N - 1
    assert "1 frame(s) late" in (out / "report.md").read_text()

    # the same network here: its labels scored against their own frame, and against the wrong one
    pipeline = SegmentationPipeline.from_pretrained("stf_delayed_erfnet", checkpoint, device="cpu")
    inputs = [Frame(IMAGE, image, T0 + i * PERIOD, "cam", context=i)
              for i, (image, _) in enumerate(frames)]
    right, wrong = ConfusionMatrix(), ConfusionMatrix()
    for index, frame in enumerate(inputs):
        result = pipeline.process([frame])[0]
        if not result.repeat:
            right.update(frames[result.source.context][1], result.labels)
            wrong.update(frames[index][1], result.labels)
    assert delayed["accuracy"]["confusion_matrix"] == right.matrix.tolist()
    assert right.matrix.tolist() != wrong.matrix.tolist()

    with BagReader(tmp_path / "labelled") as reader:
        stamps = [stamp_ns(msg.header) for topic, _, _, msg in reader.messages()
                  if topic == f"{IMAGE}/stf_delayed_erfnet/labels"]
    assert stamps == [T0 + i * PERIOD for i in range(N - 1)]
