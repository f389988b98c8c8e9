"""STF (+ MAR) on ERFNet (``stf_erfnet``, ``stf_mar_erfnet``): ISA stages, MAR, streaming, delay."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import build_model, list_models
from lmanet_ros.models.memory import FeatureMemory, Memory
from lmanet_ros.models.registry import model_entry
from lmanet_ros.models.stf import (ClassMemoryAttention, InterlacedSparseAttention,
                                   MemoryAugmentedRefinement, stf_erfnet)
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.stamps import seconds_to_ns
from test_tmanet import clip, encode, stream


def stf(mar=False, delayed=False, seed=0, memory_length=2):
    """The STF model in float64, eval mode, embeddings of unit scale (Xavier on a
    (1, C, T, H, W) tensor gives ~1e-3: too small to matter in a test)."""
    torch.manual_seed(seed)
    model = stf_erfnet(mar=mar, delayed=delayed, memory_length=memory_length)
    with torch.no_grad():
        for pe in (model.STF.pe_enc, model.STF.pe_dec):
            pe.normal_()
    return model.double().eval()


def windows(features):
    """The window of each frame t >= 1: (t-2, t-1, t), at t = 1 the oldest slot holding t-1."""
    return [[features[max(t - 2, 0)], features[t - 1], features[t]]
            for t in range(1, len(features))]


# ------------------------------------------------------------------------ direct formulas
def direct_attention(attention, query, query_pe, key, key_pe, same_group):
    """Float64 softmax attention of ``nn.MultiheadAttention`` weights over token groups.

    query (N, Tq, h, w, C), key (N, Tk, h, w, C) (real tokens only), embeddings broadcastable;
    ``same_group(yq, xq, yk, xk)`` says which key positions a query position attends to (in
    every frame). Returns (N, Tq, h, w, C).
    """
    channels, heads = query.shape[-1], attention.num_heads
    head = channels // heads
    wq, wk, wv = attention.in_proj_weight.double().chunk(3)
    bq, bk, bv = attention.in_proj_bias.double().chunk(3)
    n, tq, h, w, _ = query.shape
    tk = key.shape[1]
    q = (query + query_pe).double().reshape(n, -1, channels) @ wq.T + bq
    k = (key + key_pe).double().reshape(n, -1, channels) @ wk.T + bk
    v = key.double().reshape(n, -1, channels) @ wv.T + bv
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    yq, xq = ys.flatten().repeat(tq), xs.flatten().repeat(tq)
    yk, xk = ys.flatten().repeat(tk), xs.flatten().repeat(tk)
    allowed = same_group(yq[:, None], xq[:, None], yk[None], xk[None])     # (Nq, Nk)

    def split(t):
        return t.view(n, -1, heads, head).transpose(1, 2)                  # (n, heads, L, hd)

    scores = split(q) @ split(k).transpose(2, 3) / math.sqrt(head)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    out = (weights @ split(v)).transpose(1, 2).reshape(n, -1, channels)
    out = out @ attention.out_proj.weight.double().T + attention.out_proj.bias.double()
    return out.view(n, tq, h, w, channels)


def same_offset(block):
    """Long stage groups: the same intra-block offset (across blocks and frames)."""
    return lambda yq, xq, yk, xk: (yq % block == yk % block) & (xq % block == xk % block)


def same_block(block):
    """Short stage groups: the same block (across frames)."""
    return lambda yq, xq, yk, xk: (yq // block == yk // block) & (xq // block == xk // block)


def padded(tokens, block):
    """Zero-pad (N, T, h, w, C) to multiples of block; also the (1, 1, H, W) padding map."""
    h, w = tokens.shape[2:4]
    pad_h, pad_w = (-h) % block, (-w) % block
    mask = torch.ones(h + pad_h, w + pad_w, dtype=torch.bool)
    mask[:h, :w] = False
    return F.pad(tokens, (0, 0, 0, pad_w, 0, pad_h)), mask.view(1, 1, *mask.shape)


def direct_isa(isa, query, query_pe, key=None, key_pe=None):
    """ISA from the direct formulas: long (same offset), then short (same block, self)."""
    block = isa.block
    if key is None:
        key, key_pe = query, query_pe
    mixed = direct_attention(isa.self_attn_long, query, query_pe, key, key_pe, same_offset(block))
    return direct_attention(isa.self_attn_short, mixed, query_pe, mixed, query_pe,
                            same_block(block))


def feed_forward(layer, x, norm):
    return norm(x + layer.linear2(torch.relu(layer.linear1(x))))


def direct_stf(transformer, window, query_index):
    """The STF equations (section 2.2) with the module's weights, attention from the direct
    formulas over the real tokens only; window: T frames (B, C, h, w)."""
    h, w = window[0].shape[2:]
    tokens = torch.stack(window, 1).permute(0, 1, 3, 4, 2)
    pe_enc, pe_dec = (F.interpolate(pe, size=(pe.shape[2], h, w), mode="trilinear",
                                    align_corners=False).permute(0, 2, 3, 4, 1)
                      for pe in (transformer.pe_enc, transformer.pe_dec))
    encoder = transformer.encoder["layers"][0]
    memory = encoder.norm1(tokens + direct_isa(encoder.self_attn, tokens, pe_enc))
    memory = feed_forward(encoder, memory, encoder.norm2)
    decoder = transformer.decoder["layers"][0]
    target = tokens[:, query_index:query_index + 1]                  # the RAW features
    target = decoder.norm1(target + direct_isa(decoder.self_attn, target, pe_dec))
    target = decoder.norm2(target + direct_isa(decoder.multihead_attn, target, pe_dec, memory,
                                               pe_enc))
    target = feed_forward(decoder, target, decoder.norm3)
    return target[:, 0].permute(0, 3, 1, 2)


def isa_inputs(frames=3, size=(4, 6), channels=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, frames, *size, channels, generator=generator, dtype=torch.float64)
    pe = torch.randn(1, frames, *size, channels, generator=generator, dtype=torch.float64)
    return tokens, pe


def isa_block(block, channels=8, heads=2, seed=0):
    torch.manual_seed(seed)
    return InterlacedSparseAttention(channels, heads, block, dropout=0.0).double().eval()


# ---------------------------------------------------------------------------- ISA stages
@pytest.mark.parametrize("block, size", [(2, (4, 6)), (2, (3, 5)), (4, (3, 5)), (4, (8, 8))])
@pytest.mark.parametrize("frames", [1, 3])
def test_isa_stages_equal_the_direct_formulas(block, size, frames):
    """Long: same offset across blocks and frames; short: same block across frames. Sizes that
    are not multiples of the block run padded, the padding masked (block 4 on 3 rows: whole
    long groups of padding, which must not produce NaN)."""
    isa = isa_block(block)
    tokens, pe = isa_inputs(frames, size)
    h, w = size
    tokens_padded, padding = padded(tokens, block)
    pe_padded, _ = padded(pe, block)
    padding = padding if padding.any() else None
    with torch.no_grad():
        long = isa.long(tokens_padded, pe_padded, padding=padding)
        short = isa.short(tokens_padded, pe_padded, padding=padding)
        both = isa(tokens_padded, pe_padded, padding=padding)
    assert torch.isfinite(both).all()
    with torch.no_grad():
        expected_long = direct_attention(isa.self_attn_long, tokens, pe, tokens, pe,
                                         same_offset(block))
        expected_short = direct_attention(isa.self_attn_short, tokens, pe, tokens, pe,
                                          same_block(block))
        expected_both = direct_isa(isa, tokens, pe)
    torch.testing.assert_close(long[:, :, :h, :w], expected_long, rtol=0, atol=1e-6)
    torch.testing.assert_close(short[:, :, :h, :w], expected_short, rtol=0, atol=1e-6)
    torch.testing.assert_close(both[:, :, :h, :w], expected_both, rtol=0, atol=1e-6)
    assert (expected_long - expected_short).abs().max() > 1e-3


@pytest.mark.parametrize("size", [(4, 6), (3, 5)])
def test_cross_isa_queries_the_query_frame_against_all_memory_frames(size):
    isa = isa_block(2, seed=3)
    memory, memory_pe = isa_inputs(3, size, seed=4)
    query, query_pe = isa_inputs(1, size, seed=5)
    block = isa.block
    (mem_p, padding), (mem_pe_p, _), (q_p, _), (q_pe_p, _) = (
        padded(t, block) for t in (memory, memory_pe, query, query_pe))
    padding = padding if padding.any() else None
    h, w = size
    with torch.no_grad():
        long = isa.long(q_p, q_pe_p, mem_p, mem_pe_p, padding=padding)
        both = isa(q_p, q_pe_p, mem_p, mem_pe_p, padding=padding)
        expected_long = direct_attention(isa.self_attn_long, query, query_pe, memory, memory_pe,
                                         same_offset(block))
        expected = direct_isa(isa, query, query_pe, memory, memory_pe)
    assert long.shape == q_p.shape
    torch.testing.assert_close(long[:, :, :h, :w], expected_long, rtol=0, atol=1e-6)
    torch.testing.assert_close(both[:, :, :h, :w], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("image", [(64, 128), (40, 72)])
def test_stf_equals_the_equations_at_any_feature_size(image):
    """Features 8 x 16 (multiples of the block 8) and 5 x 9 (padded to 8 x 16)."""
    model = stf(seed=1)
    window = [encode(model, x) for x in clip(3, size=image, seed=2)]
    with torch.no_grad():
        for query_index in (2, 1):
            got = model.STF(window, query_index)
            assert got.shape == window[0].shape
            torch.testing.assert_close(got, direct_stf(model.STF, window, query_index), rtol=0,
                                       atol=1e-6)


# ----------------------------------------------------------------------------------- MAR
def test_mar_attention_is_an_unscaled_softmax_over_the_memory_entries():
    torch.manual_seed(0)
    attention = ClassMemoryAttention((16, 16, 8, 8), dropout=0.0).double().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 16, generator=generator, dtype=torch.float64)
    key = torch.randn(1, 30, 16, generator=generator, dtype=torch.float64)
    value = torch.randn(1, 30, 16, generator=generator, dtype=torch.float64)

    def stack(layers, t):
        for layer in layers:
            t = t @ layer.weight.double().T
        return t

    def direct(scale):
        scores = stack(attention.to_q, x) @ stack(attention.to_k, key).transpose(1, 2) * scale
        weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = attention.to_out[0]
        return (weights @ stack(attention.to_v, value)) @ out.weight.T + out.bias

    with torch.no_grad():
        got = attention(x, key, value)
        torch.testing.assert_close(got, direct(1.0), rtol=0, atol=1e-6)
        assert (got - direct(1 / math.sqrt(8))).abs().max() > 1e-3
    assert all(layer.bias is None for stack_ in (attention.to_q, attention.to_k, attention.to_v)
               for layer in stack_)


def test_mar_memory_layout_and_refinement_equations():
    torch.manual_seed(0)
    mar = MemoryAugmentedRefinement(128).double().eval()
    assert mar.memory_key.shape == mar.memory_value.shape == (1, 190, 128)
    values = mar.memory_value.detach().view(19, 10, 128)
    torch.testing.assert_close(values, values[:, :1].expand_as(values), rtol=0, atol=0)
    assert (values[0, 0] - values[1, 0]).abs().max() > 1e-3
    features = torch.randn(2, 128, 3, 5, dtype=torch.float64)
    layer = mar.HEdecoder
    with torch.no_grad():
        tokens = features.flatten(2).transpose(1, 2)
        refined = layer.norm1(tokens + layer.attn(tokens, mar.memory_key, mar.memory_value))
        expected = feed_forward(layer, refined, layer.norm2).transpose(1, 2).reshape(2, 128, 3, 5)
        torch.testing.assert_close(mar(features), expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- the model
def test_registered_names_children_and_delay():
    assert {"stf_erfnet", "stf_mar_erfnet"} <= set(list_models())
    for name, children in (("stf_erfnet", ["encoder", "STF", "decoder"]),
                           ("stf_mar_erfnet", ["encoder", "STF", "MAR", "decoder"])):
        entry = model_entry(name)
        assert entry.temporal and entry.default_memory_length == 2
        model = build_model(name)
        assert model.info.name == name and model.memory_length == 2
        assert [n for n, _ in model.named_children()] == children
        assert model.output_delay_frames == 0
    state = build_model("stf_mar_erfnet").state_dict()
    assert state["STF.pe_enc"].shape == (1, 128, 3, 32, 64)
    assert state["STF.pe_dec"].shape == (1, 128, 1, 32, 64)
    prefix = "STF.decoder.layers.0.multihead_attn.self_attn_short."
    assert state[prefix + "in_proj_weight"].shape == (384, 128)
    assert state["STF.encoder.layers.0.linear1.weight"].shape == (128, 128)
    assert state["MAR.HEdecoder.attn.to_q.2.weight"].shape == (64, 64)
    assert state["MAR.HEdecoder.attn.to_out.0.weight"].shape == (128, 64)
    delayed = stf_erfnet(delayed=True)
    assert delayed.output_delay_frames == 1 and delayed.info.name == "stf_delayed_erfnet"
    assert delayed.temporal_module.query_index == 1
    for name in ("stf_delayed_erfnet", "stf_mar_delayed_erfnet"):
        assert model_entry(name).temporal and build_model(name).output_delay_frames == 1


@pytest.mark.parametrize("size", [(32, 64), (40, 72), (13, 21), (64, 128)])
@pytest.mark.parametrize("mar", [False, True])
def test_any_input_size_gives_logits_of_that_size(size, mar):
    model = stf(mar=mar)
    memory = None
    with torch.no_grad():
        for index, x in enumerate(clip(3, size=size)):
            logits, memory = model.step(x, memory)
            assert logits.shape == (1, 20, *size) and torch.isfinite(logits).all()
            assert isinstance(memory, FeatureMemory) and len(memory) == min(index + 1, 2)
            torch.testing.assert_close(memory.features[-1], encode(model, x), rtol=0, atol=0)


@pytest.mark.parametrize("mar", [False, True])
def test_streaming_equals_the_window_definition_and_the_clip_forward(mar):
    """Frame t fuses (t-2, t-1, t); frame 1 (f0, f0, f1); frame 0 is the single-frame net."""
    model = stf(mar=mar, seed=2)
    module = model.temporal_module
    frames = clip(5, size=(40, 72), seed=3)
    features = [encode(model, x) for x in frames]
    with torch.no_grad():
        logits, memory = model.step(frames[0], None)
        torch.testing.assert_close(logits, model.decoder(features[0])[:, :, :40, :72], rtol=0,
                                   atol=0)
        for x, window in zip(frames[1:], windows(features)):
            logits, memory = model.step(x, memory)
            fused = direct_stf(model.STF, window, 2)
            expected = model.decoder(model.MAR(fused) if mar else fused)
            torch.testing.assert_close(logits, expected[:, :, :40, :72], rtol=0, atol=1e-6)
        torch.testing.assert_close(model(frames.transpose(0, 1)), logits, rtol=0, atol=0)
    for held, t in zip(memory.features, (3, 4)):
        torch.testing.assert_close(held, features[t], rtol=0, atol=0)
    assert module.window([features[0], features[1]]) == [features[0]] * 2 + [features[1]]


def test_reset_cold_start_and_memory_lengths():
    model = stf(seed=4)
    module = model.temporal_module
    frames = clip(3, seed=5)
    f0, f1, f2 = (encode(model, x) for x in frames)
    with torch.no_grad():
        first, memory = model.step(frames[0], None)
        torch.testing.assert_close(first, model.decoder(f0), rtol=0, atol=0)
        torch.testing.assert_close(model.step(frames[0], FeatureMemory())[0], first)
        one = module.read(f1, FeatureMemory((f0,)))
        torch.testing.assert_close(one, model.STF([f0, f0, f1], 2), rtol=0, atol=0)
        _, memory = model.step(frames[1], memory)
        after_reset, fresh = model.step(frames[2], None)
        torch.testing.assert_close(after_reset, model.decoder(f2), rtol=0, atol=0)
        assert len(fresh) == 1 and len(memory) == 2
        model.memory_length = 1
        logits, shorter = model.step(frames[2], memory)
        assert len(shorter) == 1
        torch.testing.assert_close(logits, model.decoder(model.STF([f1, f1, f2], 2)), rtol=0,
                                   atol=0)
    with pytest.raises(ValueError, match="3 slots"):
        model.memory_length = 3
    with pytest.raises(ValueError, match="FeatureMemory"):
        model.step(frames[0], Memory((f0,), (f0,)))
    with pytest.raises(ValueError, match="feature size"):
        model.step(clip(1, size=(40, 64))[0], memory)


def test_batch_of_streams_equals_streams_one_by_one():
    model = stf(mar=True, seed=6)
    clip_a, clip_b = clip(4, size=(40, 72), seed=7), clip(4, size=(40, 72), seed=8)
    with torch.no_grad():
        (logits_a, mem_a), (logits_b, mem_b) = stream(model, clip_a), stream(model, clip_b)
        logits_ab, mem_ab = stream(model, torch.cat([clip_a, clip_b], dim=1))
    torch.testing.assert_close(logits_ab, torch.cat([logits_a, logits_b], dim=1), rtol=0,
                               atol=1e-9)
    joined = FeatureMemory.cat_batch([mem_a, mem_b])
    assert joined.batch_key() == mem_ab.batch_key() == (FeatureMemory, 2, (5, 9))
    for mine, theirs in zip(joined.features, mem_ab.features):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- delayed form
def test_delayed_form_returns_the_previous_frames_result():
    """Step t: window (t-2, t-1, t), query t-1; the first step after a reset is the
    single-frame result of the current frame; the clip forward ends with frame N-2's."""
    causal = stf(seed=9)
    delayed = stf(delayed=True, seed=10)
    delayed.load_state_dict(causal.state_dict())
    assert (causal.output_delay_frames, delayed.output_delay_frames) == (0, 1)
    frames = clip(4, size=(40, 72), seed=11)
    features = [encode(causal, x) for x in frames]
    with torch.no_grad():
        logits, memory = delayed.step(frames[0], None)
        torch.testing.assert_close(logits, causal.step(frames[0], None)[0], rtol=0, atol=0)
        for x, window in zip(frames[1:], windows(features)):
            logits, memory = delayed.step(x, memory)
            expected = causal.decoder(causal.STF(window, 1))[:, :, :40, :72]
            torch.testing.assert_close(logits, expected, rtol=0, atol=0)
            torch.testing.assert_close(
                expected, causal.decoder(direct_stf(causal.STF, window, 1))[:, :, :40, :72],
                rtol=0, atol=1e-6)
            current = causal.step(x, FeatureMemory(tuple(window[:2])))[0]
            assert (logits - current).abs().max() > 1e-6
        torch.testing.assert_close(delayed(frames.transpose(0, 1)), logits, rtol=0, atol=0)


# ------------------------------------------------------------------------------- training
def test_clip_training_reaches_every_stf_and_mar_parameter():
    model = stf(mar=True, seed=12).float().train()
    frames = clip(3, batch=2, size=(24, 40), seed=13).transpose(0, 1).float()
    model(frames).sum().backward()
    module = model.temporal_module
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for slot in range(3):
        assert module.STF.pe_enc.grad[:, :, slot].abs().sum() > 0, slot
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(frames), model(frames), rtol=0, atol=0)


# ---------------------------------------------------------------------------- the pipeline
def _frames(stream_name, count, seed, size=(40, 72)):
    rng = np.random.default_rng(seed)
    return [Frame(stream_name, rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                  seconds_to_ns(i / 17), "cam") for i in range(count)]


@pytest.mark.parametrize("name", ["stf_erfnet", "stf_mar_erfnet"])
def test_pipeline_batches_streams_like_each_alone_across_a_reset(name):
    """Stream a is reset before its third frame: its memory then differs in fill from b's, so
    the two no longer share a batch; every label equals that of the stream run alone."""
    torch.manual_seed(0)
    model = build_model(name)
    together = SegmentationPipeline(model, input_size=(0, 0))
    alone = SegmentationPipeline(copy.deepcopy(model), input_size=(0, 0))
    assert together.memory_length == 2
    streams = {"a": _frames("a", 4, 1), "b": _frames("b", 4, 2)}
    rounds = []
    for index, pair in enumerate(zip(*streams.values())):
        if index == 2:
            together.reset("a")
        rounds.append(together.process(list(pair)))
    batch_sizes = [[r.batch_size for r in results] for results in rounds]
    assert batch_sizes == [[2, 2], [2, 2], [1, 1], [1, 1]]
    assert [results[0].memory_fill for results in rounds] == [1, 2, 1, 2]
    assert [results[1].memory_fill for results in rounds] == [1, 2, 2, 2]
    for column, (stream_name, frames) in enumerate(streams.items()):
        for index, frame in enumerate(frames):
            if stream_name == "a" and index == 2:
                alone.reset("a")
            result = alone.process([frame])[0]
            assert result.labels.shape == (40, 72)
            assert np.array_equal(result.labels, rounds[index][column].labels)


def test_registry_knows_the_delay_without_building():
    from lmanet_ros.models import model_entry
    for name in ("stf_erfnet", "stf_mar_erfnet", "stf_delayed_erfnet", "stf_mar_delayed_erfnet"):
        assert model_entry(name).output_delay_frames == build_model(name).output_delay_frames
