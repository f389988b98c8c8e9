"""The pipeline with a delayed model (stf_delayed_erfnet: the labels of step t belong to frame
t-1): each result names the frame its labels belong to, the labels are the model's own step
outputs, a cold start labels the current frame at once, every frame is labelled once; causal
models are untouched (tiny frames, random weights)."""
import copy

import numpy as np
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import build_model
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.stamps import seconds_to_ns
from lmanet_ros.streams import MemoryPolicy

SIZE = (32, 64)


def frames_of(stream, count, seed=0, t0=0.0):
    """``count`` random frames of ``stream`` at 17 Hz from ``t0`` s, frame i's context ``i``."""
    rng = np.random.default_rng(seed)
    return [Frame(stream, rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8),
                  seconds_to_ns(t0 + i / 17), f"cam_{stream}", context=i) for i in range(count)]


def delayed_pipeline(**kwargs):
    torch.manual_seed(0)
    return SegmentationPipeline(build_model("stf_delayed_erfnet"), input_size=(0, 0), **kwargs)


def labelled(results, frames):
    """Index in ``frames`` of each result's source (None: a frame not among them)."""
    return [next((i for i, f in enumerate(frames) if f is r.source), None) for r in results]


def test_results_carry_the_previous_frame_and_the_models_own_labels():
    pipeline = delayed_pipeline()
    model = copy.deepcopy(pipeline.model)
    assert pipeline.output_delay_frames == 1 and pipeline.memory_length == 2
    frames = frames_of("a", 5)
    results = [pipeline.process([frame])[0] for frame in frames]
    assert labelled(results, frames) == [0, 0, 1, 2, 3]
    assert [r.repeat for r in results] == [False, True, False, False, False]
    published = [r for r in results if not r.repeat]
    assert [(r.source.stamp_ns, r.source.frame_id, r.source.context) for r in published] == \
        [(f.stamp_ns, f.frame_id, i) for i, f in enumerate(frames[:4])]
    memory = None
    with torch.inference_mode():
        for frame, result in zip(frames, results):
            x = torch.from_numpy(frame.image).permute(2, 0, 1)[None].float() / 255
            logits, memory = model.step(x, memory)
            expected = logits[:, :19].max(dim=1).indices[0].to(torch.uint8).numpy()
            np.testing.assert_array_equal(result.labels, expected)
    assert results[0].labels.shape == SIZE


def test_a_reset_labels_the_current_frame_at_once_and_then_once_only():
    pipeline = delayed_pipeline()
    frames = frames_of("a", 6)
    results = pipeline.process(frames[:3])
    pipeline.reset("a")
    results += pipeline.process(frames[3:])
    assert labelled(results, frames) == [0, 0, 1, 3, 3, 4]
    assert [r.repeat for r in results] == [False, True, False, False, True, False]
    assert results[3].reset_reason == "request" and results[3].memory_fill == 1
    # frame 2 (the last before the reset) is never labelled; no stamp is labelled twice
    stamps = [r.source.stamp_ns for r in results if not r.repeat]
    assert len(set(stamps)) == len(stamps) == 4 and frames[2].stamp_ns not in stamps
    # the cold start is the single-frame network on the current frame: as a fresh stream's
    fresh = delayed_pipeline().process([frames[3]])[0]
    np.testing.assert_array_equal(results[3].labels, fresh.labels)


def test_streams_batched_keep_their_own_sources():
    pipeline = delayed_pipeline()
    streams = {"a": frames_of("a", 3, seed=1), "b": frames_of("b", 3, seed=2)}
    rounds = [pipeline.process(list(pair)) for pair in zip(*streams.values())]
    assert all(r.batch_size == 2 for results in rounds for r in results)
    for column, frames in enumerate(streams.values()):
        assert labelled([results[column] for results in rounds], frames) == [0, 0, 1]


def test_a_stride_labels_each_stored_frame_once():
    pipeline = delayed_pipeline(policy=MemoryPolicy(stride=2))
    frames = frames_of("a", 6)
    results = pipeline.process(frames)
    assert labelled(results, frames) == [0, 0, 0, 2, 2, 4]
    assert [r.repeat for r in results] == [False, True, True, False, True, False]


@pytest.mark.parametrize("name", ["lmanet_erfnet", "stf_erfnet"])
def test_causal_models_label_the_frame_processed(name):
    torch.manual_seed(0)
    pipeline = SegmentationPipeline(build_model(name, memory_length=2), input_size=(0, 0))
    assert pipeline.output_delay_frames == 0
    frames = frames_of("a", 4)
    results = pipeline.process(frames[:2])
    pipeline.reset("a")
    results += pipeline.process(frames[2:])
    assert labelled(results, frames) == [0, 1, 2, 3]
    assert not any(r.repeat for r in results)
