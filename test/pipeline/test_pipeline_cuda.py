"""The pipeline's GPU data path on a CUDA device (skipped without one; ``benchmarks/gpu_check.sh``
runs these on a GPU machine): results against the CPU, colour and overlay rendered on the device
byte for byte as OpenCV renders the same labels, pinned staging reused, CUDA-event stage times,
autocast, and CUDA graphs against the eager step. Tiny random models, frames of 64x128.
"""
import numpy as np
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import build_model
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.stamps import seconds_to_ns

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SIZE = (64, 128)


def frames_of(stream, count, size=SIZE, seed=0, t0=0.0):
    rng = np.random.default_rng(seed)
    return [Frame(stream, rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                  seconds_to_ns(t0 + i / 17), "cam") for i in range(count)]


def make_pipeline(name="lmanet_erfnet", device="cuda", **kwargs):
    torch.manual_seed(0)
    return SegmentationPipeline(build_model(name, memory_length=3), device=device,
                                memory_length=3, **kwargs)


def run(pipeline, frames, **wanted):
    return [pipeline.process([frame], want_confidence=True, **wanted)[0] for frame in frames]


@pytest.fixture(autouse=True)
def exact_float32():
    """No TF32 in these comparisons with the CPU (restored afterwards)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_cuda_results_match_the_cpu_and_render_as_opencv():
    from lmanet_ros import imaging

    frames = frames_of("cam", 4, size=(71, 133))
    pipeline = make_pipeline(input_size=SIZE)
    on_gpu = run(pipeline, frames, want_color=True, want_overlay=True, overlay_alpha=0.3)
    on_cpu = run(make_pipeline(device="cpu", input_size=SIZE), frames)
    for gpu, cpu, frame in zip(on_gpu, on_cpu, frames):
        assert gpu.labels.shape == (71, 133) and gpu.labels.dtype == np.uint8
        assert np.mean(gpu.labels == cpu.labels) > 0.99
        np.testing.assert_allclose(gpu.confidence, cpu.confidence, atol=1e-3)
        color = imaging.colorize(gpu.labels, pipeline.classes.colors)
        np.testing.assert_array_equal(gpu.color, color)
        np.testing.assert_array_equal(gpu.overlay, imaging.overlay(frame.image, color, 0.3))


def test_pinned_upload_buffers_are_reused_and_times_come_from_events():
    pipeline = make_pipeline()
    results = run(pipeline, frames_of("a", 6) + frames_of("b", 6, seed=1, t0=5.0))
    assert pipeline._staging.allocations <= 2  # one shape; a buffer is free once its copy is done
    for result in results:
        assert result.timings.preprocess_ms > 0 and result.timings.inference_ms > 0
        assert result.timings.postprocess_ms > 0


def test_batched_streams_on_cuda_match_each_stream_alone():
    pipeline = make_pipeline()
    frames_a, frames_b = frames_of("a", 5, seed=1), frames_of("b", 5, seed=2)
    pairs = [pipeline.process([fa, fb], want_confidence=True) for fa, fb in zip(frames_a, frames_b)]
    alone = run(make_pipeline(), frames_a)
    assert pipeline._batched.joins == 0
    for (ra, _), single in zip(pairs, alone):
        assert ra.batch_size == 2 and np.mean(ra.labels == single.labels) > 0.999
        np.testing.assert_allclose(ra.confidence, single.confidence, atol=1e-4)


@pytest.mark.parametrize("precision, dtype", [("fp16", torch.float16),
                                              ("bf16", torch.bfloat16)])
def test_autocast_is_the_default_on_cuda(precision, dtype):
    pipeline = make_pipeline(precision=precision)
    assert pipeline.autocast and next(pipeline.model.parameters()).dtype == torch.float32
    frames = frames_of("cam", 4)
    half = run(pipeline, frames)
    full = run(make_pipeline(), frames)
    assert {t.dtype for t in pipeline._streams["cam"].memory.tensors()} == {dtype}
    for h, f in zip(half, full):
        assert h.confidence.dtype == np.float32
        assert np.mean(h.labels == f.labels) > 0.9


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graphs_give_the_eager_results(precision):
    frames = frames_of("cam", 6)
    graphs = make_pipeline(precision=precision, input_size=SIZE, cuda_graphs=True)
    with_graphs = run(graphs, frames, want_color=True)
    eager = run(make_pipeline(precision=precision, input_size=SIZE), frames, want_color=True)
    steps = graphs._graphs
    assert steps.captured == 4 and steps.eager == 0  # fill levels 0, 1, 2, 3 (T = 3)
    assert steps.replays == len(frames)
    for g, e in zip(with_graphs, eager):
        assert g.memory_fill == e.memory_fill
        assert np.mean(g.labels == e.labels) > 0.999
        np.testing.assert_allclose(g.confidence, e.confidence, atol=1e-3)
        np.testing.assert_array_equal(g.color[g.labels == e.labels],
                                      e.color[g.labels == e.labels])
    # a reset starts from fill 0 again on the graphs already captured
    graphs.reset("cam")
    again = run(graphs, frames_of("cam", 2, t0=3.0))
    assert [r.memory_fill for r in again] == [1, 2] and steps.captured == 4


def test_graph_memories_are_the_callers_not_the_graphs():
    """The memory a graph step returns holds the caller's older tensors and a clone of the new
    entry: replaying the graph for another stream leaves it untouched."""
    pipeline = make_pipeline(input_size=SIZE, cuda_graphs=True)
    run(pipeline, frames_of("a", 3))
    held = [t.clone() for t in pipeline._streams["a"].memory.tensors()]
    run(pipeline, frames_of("b", 3, seed=5))
    for before, now in zip(held, pipeline._streams["a"].memory.tensors()):
        assert torch.equal(before, now)


def test_warmup_captures_the_first_two_fill_levels():
    pipeline = make_pipeline(input_size=SIZE, cuda_graphs=True)
    pipeline.warmup(*SIZE)
    assert pipeline._graphs.captured == 2


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphs"])
def test_submit_never_synchronises_and_collect_gives_the_results(graphs):
    """Everything up to the read-out is queued without a host-device synchronisation (torch's
    sync debug mode raises on any); submitting ahead of collecting equals ``process``."""
    wanted = dict(want_confidence=True, want_color=True, want_overlay=True)
    frames = frames_of("cam", 8)
    pipeline = make_pipeline(precision="fp16", input_size=SIZE, cuda_graphs=graphs)
    reference = make_pipeline(precision="fp16", input_size=SIZE, cuda_graphs=graphs)
    expected = [reference.process([frame], **wanted)[0] for frame in frames]
    warm = [pipeline.process([frame], **wanted)[0] for frame in frames[:4]]  # graphs captured
    torch.cuda.set_sync_debug_mode("error")
    try:
        submitted = [pipeline.submit([frame], **wanted) for frame in frames[4:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    got = warm + [pipeline.collect(one)[0] for one in submitted]
    for a, b in zip(got, expected):
        assert a.memory_fill == b.memory_fill
        same = a.labels == b.labels
        assert same.mean() > 0.999
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-3)
        np.testing.assert_array_equal(a.color[same], b.color[same])
        assert np.abs(a.overlay.astype(int) - b.overlay.astype(int))[same].max() == 0
