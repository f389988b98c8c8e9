"""The pipeline as the one holder of what the weights decide: T, input size, checkpoint identity."""
import numpy as np
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import build_model, save_checkpoint
from lmanet_ros.models.checkpoint import file_sha256
from lmanet_ros.models.weights import get_weights
from lmanet_ros.pipeline import Frame, SegmentationPipeline


def frame(stamp_ns: int, size=(32, 64)) -> Frame:
    return Frame("cam", np.full((*size, 3), 90, np.uint8), stamp_ns, "cam")


def test_demo_lmanet_takes_memory_length_and_input_size_from_its_metadata():
    pipeline = SegmentationPipeline.from_pretrained("lmanet_erfnet", "demo", device="cpu")
    assert pipeline.memory_length == 3 == pipeline.default_memory_length   # model's own T is 4
    assert pipeline.model.memory_length == 3
    assert pipeline.input_size == (128, 256) == pipeline.trained_size
    assert pipeline.weights == get_weights("lmanet_erfnet", "demo")
    results = pipeline.process([frame(i * 50_000_000, (72, 96)) for i in range(5)])
    assert [r.memory_fill for r in results] == [1, 2, 3, 3, 3]
    assert results[0].labels.shape == (72, 96)         # labels at the frame's own size


def test_explicit_values_win_over_the_metadata():
    pipeline = SegmentationPipeline.from_pretrained("lmanet_erfnet", "demo", device="cpu",
                                                    memory_length=2, input_size=(0, 0))
    assert pipeline.memory_length == 2 and pipeline.input_size == (0, 0)
    pipeline.set_memory_length(None)
    pipeline.set_input_size(None)
    assert pipeline.memory_length == 3 and pipeline.input_size == (128, 256)


def test_weights_without_metadata_fall_back_to_the_model(tmp_path):
    torch.manual_seed(0)
    state = build_model("lmanet_erfnet").state_dict()
    pipeline = SegmentationPipeline.from_pretrained("lmanet_erfnet", state, device="cpu")
    assert pipeline.memory_length == 4 and pipeline.input_size == (0, 0)
    assert pipeline.checkpoint_id == "state-dict" and pipeline.checkpoint_path is None
    single = SegmentationPipeline.from_pretrained("erfnet", None, device="cpu", memory_length=5)
    assert single.memory_length == 0 and single.checkpoint_id == "random-init"


def test_checkpoint_is_identified_by_the_loaders_digest(tmp_path):
    path = save_checkpoint(build_model("erfnet"), tmp_path / "w.safetensors",
                           metadata={"input_size": [64, 128]})
    pipeline = SegmentationPipeline.from_pretrained("erfnet", path, device="cpu")
    assert pipeline.checkpoint_id == file_sha256(path)[:16]
    assert pipeline.load_report.sha256 == file_sha256(path)
    assert pipeline.checkpoint_path == path and pipeline.weights is None
    assert pipeline.input_size == (64, 128)


def test_memory_length_changes_reset_and_bad_values_are_refused():
    pipeline = SegmentationPipeline(build_model("lmanet_erfnet"), memory_length=3)
    pipeline.process([frame(0), frame(1)])
    pipeline.set_memory_length(3)        # no change: no reset
    assert pipeline.process([frame(2)])[0].reset_reason is None
    pipeline.set_memory_length(2)
    assert pipeline.process([frame(3)])[0].reset_reason == "parameter"
    with pytest.raises(ValueError, match="memory length must be >= 0"):
        pipeline.set_memory_length(-1)
