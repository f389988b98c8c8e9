"""TMANet's module on ERFNet (``tmanet_erfnet``): attention, slots, cold start, streaming."""
import numpy as np
import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import build_model, list_models
from lmanet_ros.models.memory import FeatureMemory, Memory
from lmanet_ros.models.registry import model_entry
from lmanet_ros.models.tmanet import global_memory_attention
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.stamps import seconds_to_ns


def tmanet(slots=2, seed=0):
    """tmanet_erfnet in float64, eval mode, with random BN statistics (so that BN matters)."""
    torch.manual_seed(seed)
    model = build_model("tmanet_erfnet", memory_length=slots).double().eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.4 * torch.rand(buffer.shape, generator=generator) - 0.2)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
    return model


def clip(count, batch=1, size=(32, 64), seed=1):
    """(count, batch, 3, H, W) float64 frames in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, batch, 3, *size, generator=generator, dtype=torch.float64)


def stream(model, frames):
    """(per-frame logits stacked (N, B, C, H, W), last memory) streamed from no memory."""
    memory, logits = None, []
    for x in frames:
        out, memory = model.step(x, memory)
        logits.append(out)
    return torch.stack(logits), memory


def encode(model, x):
    return model.encoder(model._prepare(x))


def direct_attention(query, keys, values):
    """Float64 S = Q^T K (no scaling), softmax jointly over all T*h*w positions, R = A V."""
    q = query.double().flatten(2)                                    # (B, Ck, N)
    k = torch.stack([key.double().flatten(2) for key in keys], 2)    # (B, Ck, T, M)
    v = torch.stack([val.double().flatten(2) for val in values], 2)  # (B, Cv, T, M)
    scores = torch.einsum("bcn,bctm->bntm", q, k)
    flat = scores.flatten(2)
    weights = torch.exp(flat - flat.max(dim=2, keepdim=True).values)
    weights = (weights / weights.sum(dim=2, keepdim=True)).view_as(scores)
    readout = torch.einsum("bntm,bctm->bcn", weights, v)
    return readout.view(query.shape[0], v.shape[1], *query.shape[2:])


def direct_fused(model, features, slot_features):
    """The TMANet equations with the model's layers, slot i's weights on slot_features[i]."""
    module = model.temporal_module
    keys = [module.memory_key_conv[1][i](module.memory_key_conv[0][i](f))
            for i, f in enumerate(slot_features)]
    values = [module.memory_value_conv[1][i](module.memory_value_conv[0][i](f))
              for i, f in enumerate(slot_features)]
    readout = direct_attention(module.query_key_conv(features), keys, values)
    return module.bottleneck(torch.cat([module.query_value_conv(features), readout], 1))


def attention_inputs(batch=2, key_channels=5, value_channels=3, size=(3, 4), frames=2,
                     dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def rand(channels):
        return torch.randn(batch, channels, *size, generator=generator, dtype=dtype)

    return (rand(key_channels), [rand(key_channels) for _ in range(frames)],
            [rand(value_channels) for _ in range(frames)])


# ------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("frames", [1, 2, 4])
def test_attention_equals_the_direct_formula(frames):
    query, keys, values = attention_inputs(frames=frames)
    expected = direct_attention(query, keys, values)
    got = global_memory_attention(query, keys, values)
    assert got.shape == (2, 3, 3, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    single, keys32, values32 = (query.float(), [k.float() for k in keys],
                                [v.float() for v in values])
    torch.testing.assert_close(global_memory_attention(single, keys32, values32).double(),
                               expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 5, 12, 100])
def test_chunked_attention_equals_unchunked(rows):
    query, keys, values = attention_inputs(frames=3, seed=3)
    whole = global_memory_attention(query, keys, values)
    torch.testing.assert_close(global_memory_attention(query, keys, values, chunk_rows=rows),
                               whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(whole, direct_attention(query, keys, values), rtol=0, atol=1e-6)


def test_softmax_is_joint_over_frames_and_unscaled():
    query, keys, values = attention_inputs(frames=2, seed=4)
    per_frame = sum(direct_attention(query, [k], [v]) for k, v in zip(keys, values)) / 2
    scaled = direct_attention(query / 5 ** 0.5, keys, values)
    got = global_memory_attention(query, keys, values)
    assert (got - per_frame).abs().max() > 1e-3 and (got - scaled).abs().max() > 1e-3


def test_attention_refuses_bad_inputs():
    query, keys, values = attention_inputs()
    with pytest.raises(ValueError):
        global_memory_attention(query, [], [])
    with pytest.raises(ValueError):
        global_memory_attention(query, keys, values[:1])
    with pytest.raises(ValueError):
        global_memory_attention(query[:, :2], keys, values)
    with pytest.raises(ValueError):
        global_memory_attention(query, keys, values, chunk_rows=0)


# ---------------------------------------------------------------------------- the module
def test_registered_with_two_slots_and_the_documented_state_dict_names():
    assert "tmanet_erfnet" in list_models()
    entry = model_entry("tmanet_erfnet")
    assert entry.temporal and entry.default_memory_length == 2
    model = build_model("tmanet_erfnet")
    assert model.memory_length == 2 and model.temporal_module.slots == 2
    children = [name for name, _ in model.named_children()]
    assert children == ["encoder", "memory_key_conv", "memory_value_conv", "query_key_conv",
                        "query_value_conv", "bottleneck", "dropout", "decoder"]
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def cbr(prefix, shape):
        return [(f"{prefix}.conv.weight", shape)] + [(f"{prefix}.bn.{n}", None) for n in bn]

    expected = []
    for stack, width in (("memory_key_conv", 32), ("memory_value_conv", 64)):
        for layer, shape in ((0, (width, 128, 1, 1)), (1, (width, width, 3, 3))):
            for slot in range(2):
                expected += cbr(f"{stack}.{layer}.{slot}", shape)
    for stack, width in (("query_key_conv", 32), ("query_value_conv", 64)):
        expected += cbr(f"{stack}.0", (width, 128, 1, 1)) + cbr(f"{stack}.1", (width, width, 3, 3))
    expected += cbr("bottleneck", (128, 128, 3, 3))
    state = model.state_dict()
    got = [key for key in state if not key.startswith(("encoder.", "decoder."))]
    assert got == [key for key, _ in expected]
    for key, shape in expected:
        if shape is not None:
            assert tuple(state[key].shape) == shape, key
    count = sum(p.numel() for name, p in model.named_parameters() if name in dict(expected))
    assert count == 3 * (128 * 32 + 32 * 32 * 9 + 128 * 64 + 64 * 64 * 9 + 2 * 192) \
        + 128 * 128 * 9 + 2 * 128
    assert build_model("tmanet_erfnet", memory_length=4).temporal_module.slots == 4


@pytest.mark.parametrize("size", [(32, 64), (13, 21), (40, 24)])
def test_any_input_size_gives_logits_of_that_size(size):
    model = tmanet()
    memory = None
    for index, x in enumerate(clip(3, size=size)):
        logits, memory = model.step(x, memory)
        assert logits.shape == (1, 20, *size)
        assert isinstance(memory, FeatureMemory) and len(memory) == min(index + 1, 2)
        torch.testing.assert_close(memory.features[-1], encode(model, x), rtol=0, atol=0)


def test_first_frame_runs_the_single_frame_network_and_reset_is_none():
    model = tmanet()
    frames = clip(3)
    first, _ = model.step(frames[0], None)
    torch.testing.assert_close(first, model.decoder(encode(model, frames[0])), rtol=0, atol=0)
    _, memory = model.step(frames[1], model.step(frames[0])[1])
    after_reset, fresh = model.step(frames[2], None)
    torch.testing.assert_close(after_reset, model.step(frames[2], FeatureMemory())[0])
    assert len(fresh) == 1 and len(memory) == 2


def test_streaming_equals_the_clip_definition_and_the_clip_forward():
    """Frame t reads t-2 (slot 0) and t-1 (slot 1); the first frames fill slots with t=0."""
    model = tmanet()
    frames = clip(5)
    features = [encode(model, x) for x in frames]
    memory = None
    with torch.no_grad():
        for t, x in enumerate(frames):
            logits, memory = model.step(x, memory)
            if t == 0:
                expected = model.decoder(features[0])
            else:
                slots = [features[max(t - 2, 0)], features[t - 1]]
                expected = model.decoder(direct_fused(model, features[t], slots))
            torch.testing.assert_close(logits, expected, rtol=0, atol=1e-9)
        torch.testing.assert_close(model(frames.transpose(0, 1)), logits, rtol=0, atol=0)
    for held, t in zip(memory.features, (3, 4)):
        torch.testing.assert_close(held, features[t], rtol=0, atol=0)


def test_cold_start_fills_the_missing_slots_with_the_oldest_frame():
    model = tmanet(slots=3)
    module = model.temporal_module
    frames = clip(3, seed=2)
    f0, f1, current = (encode(model, x) for x in frames)
    one = module.read(current, FeatureMemory((f0,)))
    torch.testing.assert_close(one, module.fuse(current, [f0, f0, f0]), rtol=0, atol=0)
    two = module.read(current, FeatureMemory((f0, f1)))
    torch.testing.assert_close(two, module.fuse(current, [f0, f0, f1]), rtol=0, atol=0)
    torch.testing.assert_close(two, direct_fused(model, current, [f0, f0, f1]), rtol=0,
                               atol=1e-9)
    assert (two - module.fuse(current, [f0, f1, f1])).abs().max() > 1e-6


def test_slot_order_matters_and_slot_zero_is_the_oldest():
    model = tmanet(seed=5)
    module = model.temporal_module
    old, new, current = (encode(model, x) for x in clip(3, seed=6))
    read = module.read(current, FeatureMemory((old, new)))
    torch.testing.assert_close(read, direct_fused(model, current, [old, new]), rtol=0, atol=1e-9)
    swapped = module.read(current, FeatureMemory((new, old)))
    assert (read - swapped).abs().max() > 1e-6
    torch.testing.assert_close(swapped, direct_fused(model, current, [new, old]), rtol=0,
                               atol=1e-9)


def test_memory_length_below_the_slots_reads_as_a_cold_start_and_above_is_refused():
    model = tmanet()
    frames = clip(3, seed=7)
    memory = None
    for x in frames[:2]:
        _, memory = model.step(x, memory)
    model.memory_length = 1
    logits, shorter = model.step(frames[2], memory)
    assert len(shorter) == 1
    last = memory.features[-1]
    expected = model.decoder(direct_fused(model, encode(model, frames[2]), [last, last]))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="per-slot weights for 2"):
        model.memory_length = 3
    assert model.memory_length == 1


def test_chunked_module_equals_unchunked():
    model = tmanet()
    frames = clip(3, batch=2, size=(40, 64), seed=8)
    whole = model(frames.transpose(0, 1))
    # features 5 x 8, T = 2: 80 memory positions; batch 2 -> 160 affinity elements per row
    model.temporal_module.max_affinity_elements = 2 * 160 + 7
    assert model.temporal_module.chunk_rows(2, 80) == 2
    torch.testing.assert_close(model(frames.transpose(0, 1)), whole, rtol=0, atol=1e-10)


def test_batch_of_streams_equals_streams_one_by_one():
    model = tmanet()
    clip_a, clip_b = clip(4, seed=9), clip(4, seed=10)
    (logits_a, mem_a), (logits_b, mem_b) = stream(model, clip_a), stream(model, clip_b)
    logits_ab, mem_ab = stream(model, torch.cat([clip_a, clip_b], dim=1))
    torch.testing.assert_close(logits_ab, torch.cat([logits_a, logits_b], dim=1), rtol=0,
                               atol=1e-9)
    assert mem_ab.batch_key() == mem_a.batch_key() == (FeatureMemory, 2, (4, 8))
    for single, part in zip((mem_a, mem_b), mem_ab.split_batch()):
        for mine, theirs in zip(single.features, part.features):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-9)
    joined = type(mem_a).cat_batch([mem_a, mem_b])
    torch.testing.assert_close(model.step(torch.cat([clip_a[0], clip_b[0]]), joined)[0][1:],
                               model.step(clip_b[0], mem_b)[0], rtol=0, atol=1e-9)


def test_memory_of_another_type_or_size_is_refused():
    model = tmanet()
    x = clip(1)[0]
    _, memory = model.step(x, None)
    lmanet_memory = Memory((memory.features[0],), (memory.features[0],))
    with pytest.raises(ValueError, match="FeatureMemory"):
        model.step(x, lmanet_memory)
    with pytest.raises(ValueError, match="feature size"):
        model.step(clip(1, size=(40, 64))[0], memory)
    with pytest.raises(ValueError, match="streams"):
        model.step(clip(1, batch=2)[0], memory)


def test_clip_training_reaches_every_slot_and_dropout_is_training_only():
    model = tmanet(slots=3)
    frames = clip(4, batch=2, size=(24, 32), seed=11).transpose(0, 1).float()
    model.float().train()
    model(frames).sum().backward()
    module = model.temporal_module
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert module.dropout.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(frames), model(frames), rtol=0, atol=0)


# ---------------------------------------------------------------------------- the pipeline
def _frames(stream, count, seed):
    rng = np.random.default_rng(seed)
    return [Frame(stream, rng.integers(0, 256, (32, 64, 3), dtype=np.uint8),
                  seconds_to_ns(i / 17), "cam") for i in range(count)]


def test_pipeline_runs_two_streams_batched_like_each_alone():
    def pipeline():
        torch.manual_seed(0)
        return SegmentationPipeline(build_model("tmanet_erfnet"))

    together, alone = pipeline(), pipeline()
    assert together.memory_length == 2
    frames_a, frames_b = _frames("a", 4, 1), _frames("b", 4, 2)
    batched = [together.process([fa, fb]) for fa, fb in zip(frames_a, frames_b)]
    assert all(r.batch_size == 2 for pair in batched for r in pair)
    assert [pair[0].memory_fill for pair in batched] == [1, 2, 2, 2]
    single_a = [alone.process([f])[0] for f in frames_a]
    single_b = [alone.process([f])[0] for f in frames_b]
    for (ra, rb), sa, sb in zip(batched, single_a, single_b):
        assert np.array_equal(ra.labels, sa.labels) and np.array_equal(rb.labels, sb.labels)
    assert together.stats("a").memory_fill == 2
