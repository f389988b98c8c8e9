"""The pipeline's device data path on the CPU: colour and overlay rendered by torch byte for byte
as OpenCV renders them, outputs asked of the pipeline, the batched memory kept across steps (no
per-step ``cat_batch``), cached normalisation, autocast, refusals of CUDA-only options, staging.

The CUDA-only parts (pinned staging, events, CUDA graphs, the whole path on a GPU) are in
``test_pipeline_cuda.py``. Tiny random models, frames of 32x64.
"""
import numpy as np
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from torch import nn

from lmanet_ros import imaging
from lmanet_ros.device_imaging import colorize_tensor, overlay_tensor, palette_table
from lmanet_ros.models import build_model
from lmanet_ros.models.memory import FeatureMemory, Memory
from lmanet_ros.models.segmenter import SingleFrameSegmenter
from lmanet_ros.pipeline import Frame, PipelineError, SegmentationPipeline
from lmanet_ros.pipeline_device import BatchedMemories, HostStaging
from lmanet_ros.stamps import seconds_to_ns

SIZE = (32, 64)


def frames_of(stream, count, size=SIZE, seed=0, t0=0.0):
    rng = np.random.default_rng(seed)
    return [Frame(stream, rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                  seconds_to_ns(t0 + i / 17), "cam") for i in range(count)]


def make_pipeline(name="lmanet_erfnet", **kwargs):
    torch.manual_seed(0)
    return SegmentationPipeline(build_model(name, memory_length=3), memory_length=3, **kwargs)


# ----------------------------------------------------------------- torch renderers vs OpenCV
def every_pair():
    """(rgb, color) (256, 256, 3) uint8 images holding every pair of byte values per channel."""
    rows = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(256, 256)
    cols = np.tile(np.arange(256, dtype=np.uint8), 256).reshape(256, 256)
    return np.stack([rows, cols, rows[::-1]], -1).copy(), np.stack([cols, rows, cols], -1).copy()


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.3, 0.45, 0.5, 0.7, 0.9, 1.0, 1 / 3, 1e-7])
def test_overlay_tensor_equals_opencv_for_every_byte_pair(alpha):
    rgb, color = every_pair()
    got = overlay_tensor(torch.from_numpy(rgb), torch.from_numpy(color), alpha)
    np.testing.assert_array_equal(got.numpy(), imaging.overlay(rgb, color, alpha))


def test_colorize_tensor_equals_opencv_and_unknown_ids_are_black():
    palette = np.random.default_rng(1).integers(0, 256, (19, 3), dtype=np.uint8)
    labels = np.random.default_rng(2).integers(0, 256, (37, 61), dtype=np.uint8)
    labels[0, :3] = (18, 19, 255)
    got = colorize_tensor(torch.from_numpy(labels), palette_table(palette, "cpu")).numpy()
    np.testing.assert_array_equal(got, imaging.colorize(labels, palette))
    assert not got[0, 1:3].any()


def test_palette_table_is_kept_while_the_palette_holds():
    palette = np.zeros((3, 3), np.uint8)
    first = palette_table(palette, "cpu")
    assert palette_table(palette.copy(), "cpu") is first
    palette[1] = 7
    changed = palette_table(palette, "cpu")
    assert changed is not first and changed[1].tolist() == [7, 7, 7]


@pytest.mark.parametrize("call, match", [
    (lambda: overlay_tensor(torch.zeros(2, 2, 3, dtype=torch.uint8),
                            torch.zeros(2, 2, 3, dtype=torch.uint8), 1.5), "alpha"),
    (lambda: overlay_tensor(torch.zeros(2, 2, 3, dtype=torch.uint8),
                            torch.zeros(2, 3, 3, dtype=torch.uint8), 0.5), "differ"),
    (lambda: overlay_tensor(torch.zeros(2, 2, 3), torch.zeros(2, 2, 3), 0.5), "uint8"),
    (lambda: colorize_tensor(torch.zeros(2, 2, dtype=torch.int64),
                             torch.zeros(256, 3, dtype=torch.uint8)), "uint8"),
])
def test_renderers_refuse_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------- outputs asked of the pipeline
@pytest.mark.parametrize("on_device", [False, True], ids=["opencv", "torch"])
def test_pipeline_colour_and_overlay_equal_imaging(on_device):
    pipeline = make_pipeline(input_size=(16, 32))
    pipeline._render_on_device = on_device  # the CUDA renderers, run on CPU tensors
    colors = pipeline.classes.colors
    for frame in frames_of("cam", 3, size=(37, 61)):
        (result,) = pipeline.process([frame], want_color=True, want_overlay=True,
                                     overlay_alpha=0.3)
        expected = imaging.colorize(result.labels, colors)
        np.testing.assert_array_equal(result.color, expected)
        np.testing.assert_array_equal(result.overlay, imaging.overlay(frame.image, expected, 0.3))
    (plain,) = pipeline.process(frames_of("cam", 1, t0=1.0))
    assert plain.color is None and plain.overlay is None and plain.confidence is None


def test_overlay_of_a_delayed_model_is_drawn_over_the_labelled_frame():
    torch.manual_seed(0)
    pipeline = SegmentationPipeline(build_model("stf_delayed_erfnet"), input_size=(0, 0))
    pipeline._render_on_device = True
    frames = frames_of("cam", 4)
    results = [pipeline.process([f], want_overlay=True)[0] for f in frames]
    assert results[2].source is frames[1]
    for result in results:
        color = imaging.colorize(result.labels, pipeline.classes.colors)
        np.testing.assert_array_equal(result.overlay,
                                      imaging.overlay(result.source.image, color, 0.5))
        assert result.color is None


def test_a_bad_alpha_is_refused_before_anything_runs():
    pipeline = make_pipeline()
    with pytest.raises(ValueError, match="alpha"):
        pipeline.process(frames_of("cam", 1), want_overlay=True, overlay_alpha=2.0)
    assert pipeline.streams() == []


def test_read_only_frames_are_copied_writable_ones_wrapped():
    staging = HostStaging(torch.device("cpu"))
    image = np.zeros((4, 5, 3), np.uint8)
    assert np.shares_memory(staging.upload(image).numpy(), image)
    image.flags.writeable = False
    assert not np.shares_memory(staging.upload(image).numpy(), image)


def test_cpu_stage_times_are_host_wall_times():
    pipeline = make_pipeline()
    for result in pipeline.process(frames_of("a", 2) + frames_of("b", 2, seed=3),
                                   want_confidence=True, want_color=True):
        times = result.timings
        assert times.preprocess_ms > 0 and times.inference_ms > 0 and times.postprocess_ms > 0


# ----------------------------------------------------------------- batched memory kept across steps
def count_joins(monkeypatch):
    calls = []
    original = Memory.cat_batch.__func__
    monkeypatch.setattr(Memory, "cat_batch",
                        classmethod(lambda cls, ms: calls.append(len(ms)) or original(cls, ms)))
    return calls


def run_pair(pipeline, count, want_confidence=True):
    frames_a, frames_b = frames_of("a", count, seed=1), frames_of("b", count, seed=2)
    return [pipeline.process([fa, fb], want_confidence=want_confidence)
            for fa, fb in zip(frames_a, frames_b)]


def test_streams_batched_again_are_not_joined_again_and_match_joining_each_step(
        monkeypatch):
    calls = count_joins(monkeypatch)
    kept = run_pair(make_pipeline(), 6)
    assert calls == []  # cold start has no memory; every later step reuses the kept join
    every_step = make_pipeline()
    every_step._batched.join = lambda streams, memories: (
        None if memories[0] is None else type(memories[0]).cat_batch(memories))
    joined = run_pair(every_step, 6)
    assert len(calls) == 5
    for pair_kept, pair_joined in zip(kept, joined):
        for a, b in zip(pair_kept, pair_joined):
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_array_equal(a.confidence, b.confidence)
            assert a.batch_size == b.batch_size == 2


def test_batched_results_equal_each_stream_alone_within_1e_6():
    batched = run_pair(make_pipeline(), 5)
    alone = {stream: make_pipeline().process(frames_of(stream, 5, seed=seed),
                                             want_confidence=True)
             for stream, seed in (("a", 1), ("b", 2))}
    for step, pair in enumerate(batched):
        for result in pair:
            single = alone[result.stream][step]
            np.testing.assert_allclose(result.confidence, single.confidence, atol=1e-6)
            assert np.mean(result.labels == single.labels) > 0.999


def test_a_stream_leaving_the_batch_makes_the_next_batch_join_again(monkeypatch):
    calls = count_joins(monkeypatch)
    pipeline = make_pipeline()
    frames_a, frames_b = frames_of("a", 4, seed=1), frames_of("b", 4, seed=2)
    pipeline.process([frames_a[0], frames_b[0]])
    pipeline.process([frames_a[1], frames_b[1]])
    assert calls == []
    pipeline.process([frames_a[2]])  # a's memory changes without b
    pipeline.process([frames_b[2]])
    (ra, rb) = pipeline.process([frames_a[3], frames_b[3]])
    assert calls == [2] and ra.memory_fill == rb.memory_fill == 3
    pipeline.reset("b")
    pipeline.process([frames_of("a", 1, seed=1, t0=1.0)[0], frames_of("b", 1, t0=1.0)[0]])
    assert calls == [2]  # b starts again alone-sized: different batch keys, no join


def test_kept_groups_sharing_a_stream_are_forgotten():
    batched = BatchedMemories()
    memory = Memory((torch.zeros(2, 1, 2, 2),), (torch.zeros(2, 1, 2, 2),))
    parts = batched.split(("a", "b"), memory)
    assert batched.join(("a", "b"), parts) is memory and batched.joins == 0
    batched.split(("a",), parts[0])
    assert batched.join(("a", "b"), parts) is not memory and batched.joins == 1


def test_memory_tensors_and_map_tensors():
    keys = tuple(torch.full((1, 2, 3, 3), float(i)) for i in range(2))
    values = tuple(torch.full((1, 4, 3, 3), 10.0 + i) for i in range(2))
    memory = Memory(keys, values)
    assert memory.tensors() == keys + values
    doubled = memory.map_tensors(lambda t: t * 2)
    assert isinstance(doubled, Memory) and torch.equal(doubled.values[1], values[1] * 2)
    assert FeatureMemory().tensors() == ()


# ---------------------------------------------------------- normalisation, autocast, refusals
def normalising_model():
    torch.manual_seed(0)
    return SingleFrameSegmenter("probe", nn.Conv2d(3, 4, 3, stride=8, padding=1),
                                nn.Upsample(scale_factor=8), num_classes=4,
                                mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def test_normalisation_tensors_are_made_once_per_device_and_dtype_and_exact():
    model = normalising_model()
    x = torch.rand(1, 3, 16, 24, dtype=torch.float64)
    with torch.inference_mode():
        prepared = model._prepare(x)
        again = model._prepare(x)
    mean = torch.tensor((0.4, 0.5, 0.6), dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor((0.2, 0.25, 0.3), dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(prepared, (x - mean) / std, rtol=0, atol=0)
    assert torch.equal(prepared, again) and len(model._normalisation_cache) == 1
    model._prepare(x.float())
    assert len(model._normalisation_cache) == 2
    # made outside inference mode: training may save them for backward
    grad_x = torch.rand(1, 3, 16, 24, dtype=torch.float64, requires_grad=True)
    model._prepare(grad_x).sum().backward()
    torch.testing.assert_close(grad_x.grad, (1 / std).expand_as(grad_x))


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_autocast_keeps_float32_weights_and_equals_the_model_under_autocast(precision, dtype):
    pipeline = make_pipeline(precision=precision, autocast=True)
    assert pipeline.autocast and pipeline.dtype == torch.float32
    assert next(pipeline.model.parameters()).dtype == torch.float32
    reference = make_pipeline().model  # same seed: same weights
    memory = None
    for frame in frames_of("cam", 4):
        (result,) = pipeline.process([frame], want_confidence=True)
        x = torch.from_numpy(frame.image).permute(2, 0, 1).unsqueeze(0).float() / 255
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
            logits, memory = reference.step(x, memory)
        probs = torch.softmax(logits[:, :19].float(), dim=1)
        np.testing.assert_array_equal(result.labels, probs.max(dim=1).indices[0].numpy())
        np.testing.assert_array_equal(result.confidence, probs.max(dim=1).values[0].numpy())
        assert result.confidence.dtype == np.float32
    state_memory = pipeline._streams["cam"].memory
    assert {t.dtype for t in state_memory.tensors()} == {dtype}


def test_cpu_keeps_the_cast_for_half_precision_by_default():
    pipeline = make_pipeline(precision="bf16")
    assert not pipeline.autocast and pipeline.dtype == torch.bfloat16
    assert next(pipeline.model.parameters()).dtype == torch.bfloat16
    assert pipeline.process(frames_of("cam", 2))[1].memory_fill == 2
    assert not make_pipeline(precision="fp32", autocast=True).autocast


def test_cuda_graphs_are_refused_off_cuda_with_a_clear_message():
    with pytest.raises(PipelineError, match="CUDA graphs need a CUDA device"):
        make_pipeline(input_size=(32, 64), cuda_graphs=True)
    pipeline = make_pipeline(input_size=(32, 64))
    with pytest.raises(PipelineError, match="CUDA device"):
        pipeline.set_cuda_graphs(True)
    pipeline.set_cuda_graphs(False)
    assert not pipeline.cuda_graphs


def test_submitting_ahead_of_collecting_gives_the_results_of_process():
    frames = frames_of("a", 4, seed=1) + frames_of("b", 4, seed=2, t0=3.0)
    reference = make_pipeline()
    expected = [reference.process([f], want_confidence=True, want_color=True)[0]
                for f in frames]
    pipeline = make_pipeline()
    submitted = [pipeline.submit([frame], want_confidence=True, want_color=True)
                 for frame in frames]  # every stream's state is updated at submit
    got = [pipeline.collect(one)[0] for one in submitted]
    for a, b in zip(got, expected):
        assert a.source is b.source and a.memory_fill == b.memory_fill
        for name in ("labels", "confidence", "color"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


class ReplayOnCpu:
    """What a CUDA graph's replay does, on the CPU: the captured step re-run on the same static
    input tensors, its results written into the same static output tensors."""

    def __init__(self, model, x, memory, logits, successor):
        self.model, self.x, self.memory = model, x, memory
        self.logits, self.successor = logits, successor

    def replay(self):
        with torch.inference_mode():
            logits, successor = self.model.step(self.x, self.memory)
            self.logits.copy_(logits)
            for static, tensor in zip(self.successor.tensors(), successor.tensors()):
                static.copy_(tensor)


def test_a_graph_step_returns_the_callers_tensors_and_a_clone_of_the_new_entry():
    from lmanet_ros.pipeline_device import _Captured

    torch.manual_seed(0)
    model = build_model("lmanet_erfnet", memory_length=3).eval()
    frames = [torch.rand(1, 3, 32, 64) for _ in range(4)]
    with torch.inference_mode():
        _, memory = model.step(frames[0], None)
        _, memory = model.step(frames[1], memory)
    static_x, static_memory = frames[0].clone(), memory.map_tensors(torch.clone)
    with torch.inference_mode():
        static_logits, static_successor = model.step(static_x, static_memory)
    captured = _Captured(ReplayOnCpu(model, static_x, static_memory, static_logits,
                                     static_successor),
                         static_x, static_memory.tensors(), static_logits, static_successor)
    logits, successor = captured.run(frames[2], memory)
    with torch.inference_mode():
        expected_logits, expected = model.step(frames[2], memory)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)
    assert len(successor) == 3
    for got, want in zip(successor.tensors(), expected.tensors()):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert successor.keys[0] is memory.keys[0] and successor.values[1] is memory.values[1]
    statics = {id(t) for t in (*static_successor.tensors(), *static_memory.tensors())}
    assert not statics & {id(t) for t in successor.tensors()}
    kept = [t.clone() for t in successor.tensors()]
    captured.run(frames[3], memory)  # the next replay overwrites the static outputs only
    for before, now in zip(kept, successor.tensors()):
        assert torch.equal(before, now)
