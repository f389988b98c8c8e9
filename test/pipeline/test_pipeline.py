"""The ROS-free pipeline: streams, batching, sizes, memory rules, errors (tiny random models)."""
import numpy as np
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.classes import ClassSet
from lmanet_ros.models import build_model
from lmanet_ros.pipeline import Frame, PipelineError, SegmentationPipeline
from lmanet_ros.stamps import seconds_to_ns
from lmanet_ros.streams import MemoryPolicy


def make_pipeline(name="lmanet_erfnet", seed=0, **kwargs) -> SegmentationPipeline:
    """A pipeline over a random model; memory length 3 unless ``memory_length`` says otherwise."""
    torch.manual_seed(seed)
    kwargs.setdefault("memory_length", 3)
    return SegmentationPipeline(build_model(name, memory_length=3), **kwargs)


def frames_of(stream, count, size=(32, 64), seed=0, t0=0.0, period=1 / 17):
    """``count`` random frames of ``stream`` from ``t0`` every ``period`` (both in seconds)."""
    rng = np.random.default_rng(seed)
    return [Frame(stream, rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                  seconds_to_ns(t0 + i * period), "cam") for i in range(count)]


def test_results_have_frame_size_and_valid_ids():
    pipeline = make_pipeline()
    for size in [(32, 64), (37, 61), (24, 40)]:
        (result,) = pipeline.process(frames_of("cam", 1, size), want_confidence=True)
        assert result.labels.shape == size and result.labels.dtype == np.uint8
        assert result.labels.max() < 19
        assert result.confidence.shape == size and result.confidence.dtype == np.float32
        assert 0.0 < result.confidence.min() and result.confidence.max() <= 1.0
        assert result.timings.total_ms > 0


def test_memory_fills_to_its_length_and_first_frame_equals_single_frame_path():
    pipeline = make_pipeline()
    results = pipeline.process(frames_of("cam", 5))
    assert [r.memory_fill for r in results] == [1, 2, 3, 3, 3]
    assert results[0].reset_reason is None
    # the first frame (empty memory) runs the decoder on raw features: same as a fresh stream
    again = pipeline.process(frames_of("other", 1))[0]
    np.testing.assert_array_equal(again.labels, results[0].labels)


def test_two_streams_batched_equal_each_stream_alone():
    frames_a, frames_b = frames_of("a", 4, seed=1), frames_of("b", 4, seed=2)
    together = make_pipeline()
    batched = [together.process([fa, fb]) for fa, fb in zip(frames_a, frames_b)]
    assert all(r.batch_size == 2 for pair in batched for r in pair)
    alone_a = make_pipeline().process(frames_a)
    alone_b = make_pipeline().process(frames_b)
    for (ra, rb), sa, sb in zip(batched, alone_a, alone_b):
        assert (ra.stream, rb.stream) == ("a", "b")
        assert np.mean(ra.labels == sa.labels) > 0.999 and np.mean(rb.labels == sb.labels) > 0.999


def test_frames_of_one_stream_in_one_call_are_processed_in_order():
    pipeline = make_pipeline()
    results = pipeline.process(frames_of("cam", 3))
    assert [r.memory_fill for r in results] == [1, 2, 3]
    assert all(r.batch_size == 1 for r in results)


def test_network_input_size_restores_the_exact_frame_size():
    pipeline = make_pipeline(input_size=(16, 32))
    (result,) = pipeline.process(frames_of("cam", 1, (37, 61)))
    assert result.labels.shape == (37, 61)


def test_resets_reach_the_result_and_stats():
    pipeline = make_pipeline()
    frames = frames_of("cam", 3)
    pipeline.process(frames)
    back = Frame("cam", frames[0].image, 0, "cam")
    assert pipeline.process([back])[0].reset_reason == "time_jump_back"
    pipeline.reset("cam")
    result = pipeline.process([Frame("cam", frames[0].image, seconds_to_ns(0.05), "cam")])[0]
    assert result.reset_reason == "request" and result.memory_fill == 1
    assert pipeline.stats("cam").resets == {"time_jump_back": 1, "request": 1}


def test_memory_length_change_resets_with_reason_parameter():
    pipeline = make_pipeline()
    pipeline.process(frames_of("cam", 2))
    pipeline.set_memory_length(2)
    results = pipeline.process(frames_of("cam", 3, t0=1.0))
    assert results[0].reset_reason == "parameter"
    assert [r.memory_fill for r in results] == [1, 2, 2]


def test_stride_stores_every_kth_frame():
    pipeline = make_pipeline(policy=MemoryPolicy(stride=2))
    results = pipeline.process(frames_of("cam", 6))
    assert [r.memory_fill for r in results] == [1, 1, 2, 2, 3, 3]


def test_single_frame_model_has_no_memory():
    pipeline = make_pipeline("erfnet")
    assert [r.memory_fill for r in pipeline.process(frames_of("cam", 2))] == [0, 0]


def test_class_subset_limits_the_ids():
    names = ClassSet.cityscapes().names[:3]
    pipeline = make_pipeline(classes=ClassSet(names, ClassSet.cityscapes().colors[:3]))
    assert pipeline.process(frames_of("cam", 1))[0].labels.max() < 3


@pytest.mark.parametrize("kwargs, error, match", [
    ({"device": "cuda"} if not torch.cuda.is_available() else {"device": "cuda:99"},
     PipelineError, "cuda"),
    ({"device": "tpu"}, PipelineError, "tpu"),
    ({"precision": "int4"}, PipelineError, "int4"),
])
def test_bad_settings_fail_fast_with_a_message(kwargs, error, match):
    with pytest.raises(error, match=match):
        SegmentationPipeline.from_pretrained("erfnet", None, **kwargs)


def test_unknown_model_and_missing_checkpoint_fail_fast(tmp_path):
    with pytest.raises(ValueError, match="lmanet_erfnet"):
        SegmentationPipeline.from_pretrained("no_such_net", None, device="cpu")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        SegmentationPipeline.from_pretrained("erfnet", tmp_path / "missing.pth", device="cpu")


def test_bad_frames_are_refused():
    pipeline = make_pipeline("erfnet")
    with pytest.raises(ValueError, match="uint8"):
        pipeline.process([Frame("cam", np.zeros((8, 8, 3), np.float32), 0)])


def test_labels_are_the_argmax_of_the_model_logits_over_the_named_classes():
    pipeline = make_pipeline("erfnet")
    frame = frames_of("cam", 1)[0]
    (result,) = pipeline.process([frame])
    x = torch.from_numpy(frame.image).permute(2, 0, 1).unsqueeze(0).float() / 255
    with torch.inference_mode():
        logits, _ = pipeline.model.step(x, None)
    np.testing.assert_array_equal(result.labels, logits[0, :19].argmax(dim=0).numpy())
