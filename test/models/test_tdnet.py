"""TDNet's module on ERFNet (``tdnet_erfnet``): rotation, propagation chain, cold start, streams."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import PathMemory, build_model, list_models
from lmanet_ros.models.registry import model_entry
from lmanet_ros.models.tdnet import SpatialNorm, erfnet_init_state
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from lmanet_ros.stamps import seconds_to_ns

SIZE = (32, 64)


def td_model(memory_length=3, seed=0):
    """tdnet_erfnet in float64, eval mode, random BN statistics and norm affines, and queries
    and keys scaled up so that the attention is far from uniform (a uniform one propagates a
    spatial constant, which the normalisation removes)."""
    torch.manual_seed(seed)
    model = build_model("tdnet_erfnet", memory_length=memory_length).double().eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_buffers()) + list(model.named_parameters()):
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean") or name.startswith("norms."):
                tensor.add_(0.4 * torch.rand(tensor.shape, generator=generator) - 0.2)
            elif name.endswith((".query.3.weight", ".key.3.weight")):
                tensor.mul_(30.0)
    return model


def frames(count, batch=1, size=SIZE, seed=1):
    """(count, batch, 3, H, W) float64 frames in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, batch, 3, *size, generator=generator, dtype=torch.float64)


def stream(model, clip, memory=None):
    """(per-frame logits (N, B, C, H, W), last memory)."""
    logits = []
    for x in clip:
        out, memory = model.step(x, memory)
        logits.append(out)
    return torch.stack(logits), memory


def record_paths(model):
    """A list that fills with the index of each sub-network that runs."""
    ran = []
    for index, subnet in enumerate(model.temporal_module.subnets):
        subnet.register_forward_hook(lambda *_, index=index: ran.append(index))
    return ran


# ------------------------------------------------------------------ direct float64 formulas
def direct_norm(x, norm):
    """Per sample and channel over h x w (biased variance, eps 1e-5), per-channel affine."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return ((x - mean) / torch.sqrt(var + 1e-5) * norm.weight.view(1, -1, 1, 1)
            + norm.bias.view(1, -1, 1, 1))


def direct_att(fc, key, value, query):
    """Att(K, V, Q) = fc(softmax(Q K^T / sqrt(d_k)) V), written out in float64."""
    q = query.double().flatten(2).transpose(1, 2)            # (B, Nq, dk)
    k = key.double().flatten(2)                              # (B, dk, Nk)
    v = value.double().flatten(2).transpose(1, 2)            # (B, Nk, dv)
    scores = q @ k / np.sqrt(q.shape[2])
    weights = torch.exp(scores - scores.max(dim=2, keepdim=True).values)
    weights = weights / weights.sum(dim=2, keepdim=True)
    out = (weights @ v).transpose(1, 2).reshape(query.shape[0], -1, *query.shape[2:])
    return F.conv2d(out, fc.weight.double(), fc.bias.double())


def projections(model, path, x):
    """(z, full-resolution q, v, and the subsampled (Q~, K~, V~)) of frame x on ``path``."""
    module = model.temporal_module
    z = module.subnets[path](model._prepare(x))
    enc = module.encodings[path]
    sub = z[:, :, ::4, ::4]
    return z, enc.query(z), enc.value(z), (enc.query(sub), enc.key(sub), enc.value(sub))


def direct_td4_logits(model, clip):
    """Logits of the 4th frame of ``clip`` (paths 0, 1, 2 then 3) from the TD4 equations."""
    module = model.temporal_module
    (q3, k3, v3), (q2, k2, v2), (q1, k1, v1) = [projections(model, i, clip[i])[3]
                                                for i in range(3)]
    _, q_t, v_t, _ = projections(model, 3, clip[3])
    hops = module.hops[3]
    p_2 = direct_att(hops[0], k3, v3, q2)            # P_{t-2}
    p_1 = direct_att(hops[1], k2, p_2 + v2, q1)      # P_{t-1}
    p_t = direct_att(hops[2], k1, p_1 + v1, q_t)     # P_t (full-resolution query)
    y = direct_norm(p_t + v_t, module.norms[3])
    return model.decoder(y)[:, :, :clip.shape[3], :clip.shape[4]]


# ------------------------------------------------------------------------------- tests
def test_registered_td4_by_default_and_td2_with_memory_length_one():
    entry = model_entry("tdnet_erfnet")
    model = build_model("tdnet_erfnet")
    assert ("tdnet_erfnet" in list_models() and entry.temporal
            and entry.default_memory_length == model.memory_length == 3)
    assert model.temporal_module.paths == 4
    assert build_model("tdnet_erfnet", memory_length=1).temporal_module.paths == 2
    with pytest.raises(ValueError, match="holds exactly 3"):
        model.memory_length = 2


def test_state_dict_names_are_stable():
    state = build_model("tdnet_erfnet").state_dict()
    parts = {"subnets", "encodings", "hops", "norms", "decoder"}
    assert {key.split(".", 1)[0] for key in state} == parts
    shapes = {
        "subnets.0.initial_block.conv.weight": (13, 3, 3, 3),
        "subnets.3.layers.0.conv.weight": (48, 16, 3, 3),
        "subnets.3.layers.1.conv.weight": (64, 64, 3, 3),
        "subnets.2.layers.3.conv1x3_2.weight": (128, 128, 1, 3),
        "encodings.1.query.0.weight": (32, 128, 1, 1),
        "encodings.1.query.1.running_mean": (32,),
        "encodings.1.query.3.weight": (32, 32, 1, 1),
        "encodings.2.key.3.bias": (32,),
        "encodings.3.value.weight": (128, 128, 1, 1),
        "hops.3.2.weight": (128, 128, 1, 1),
        "norms.1.weight": (128,),
        "norms.1.bias": (128,),
        "decoder.output_conv.weight": (16, 20, 2, 2),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 428  # 4 x 57 subnets, 4 x 20 encodings, 12 x 2 hops, 8, 88 decoder
    assert not any(key.startswith(("subnets.4", "hops.0.3", "encoder")) for key in state)
    names = [name for name, _ in build_model("tdnet_erfnet").named_parameters()]
    assert names[0] == "subnets.0.initial_block.conv.weight" and names[-1] == \
        "decoder.output_conv.bias"


@pytest.mark.parametrize("size", [(32, 64), (36, 68), (33, 65), (64, 128)])
def test_any_input_size_gives_logits_of_that_size_on_every_frame(size):
    model = td_model()
    logits, memory = stream(model, frames(5, size=size))
    assert logits.shape == (5, 1, 20, *size) and torch.isfinite(logits).all()
    padded = model.info.padded_size(*size)
    feature = (padded[0] // 8, padded[1] // 8)
    assert memory.input_size == padded
    assert memory.entries.queries[0].shape[2:] == (-(-feature[0] // 4), -(-feature[1] // 4))


def test_rotation_follows_processed_frames_and_the_memory_holds_the_counter():
    model = td_model()
    ran = record_paths(model)
    memory, seen = None, []
    for x in frames(7):
        _, memory = model.step(x, memory)
        seen.append((memory.counter, memory.paths))
    assert ran == [0, 1, 2, 3, 0, 1, 2]
    assert seen == [(1, (0,)), (2, (0, 1)), (3, (0, 1, 2)), (0, (1, 2, 3)), (1, (2, 3, 0)),
                    (2, (3, 0, 1)), (3, (0, 1, 2))]
    # A dropped frame never reaches the model: the next one just continues the cycle; a frame
    # that is not stored (stride policy) runs path c and leaves the memory, counter included.
    x = frames(1, seed=9)[0]
    _, same = model.step(x, memory, update_memory=False)
    assert same is memory and ran[-1] == 3
    _, after = model.step(x, memory)
    assert ran[-1] == 3 and after.counter == 0 and after.paths == (1, 2, 3)


def test_propagation_chain_equals_the_float64_equations():
    model = td_model()
    clip = frames(4, batch=2)
    with torch.no_grad():
        logits, memory = stream(model, clip)
        expected = direct_td4_logits(model, clip)
    assert memory.paths == (1, 2, 3) and memory.counter == 0
    assert torch.allclose(logits[3], expected, atol=1e-6, rtol=0)
    with torch.no_grad():  # the propagated term matters: the sub output is another result
        _, _, v_t, _ = projections(model, 3, clip[3])
        sub = model.decoder(direct_norm(v_t, model.temporal_module.norms[3]))
    assert (sub - expected).abs().max() > 1e-3
    # The stored entries are the subsampled projections of each frame on its own path.
    for stored, i in zip(range(3), (1, 2, 3)):
        query, key, value = projections(model, i, clip[i])[3]
        assert torch.allclose(memory.entries.keys[stored], key, atol=1e-12)
        assert torch.allclose(memory.entries.values[stored], value, atol=1e-12)
        assert torch.allclose(memory.entries.queries[stored], query, atol=1e-12)


def test_td2_chain_is_one_hop():
    model = td_model(memory_length=1)
    clip = frames(2)
    module = model.temporal_module
    with torch.no_grad():
        logits, _ = stream(model, clip)
        _, _, _, (_, k, v) = projections(model, 0, clip[0])
        _, q_t, v_t, _ = projections(model, 1, clip[1])
        y = direct_norm(direct_att(module.hops[1][0], k, v, q_t) + v_t, module.norms[1])
        assert torch.allclose(logits[1], model.decoder(y), atol=1e-6, rtol=0)


def test_cold_start_is_the_sub_output_and_reset_restarts_at_path_zero():
    model = td_model()
    clip = frames(6)
    with torch.no_grad():
        logits, memory = stream(model, clip)
        for i in range(3):  # fewer than m-1 entries held: Norm_p(v_t) -> decoder
            _, _, v_t, _ = projections(model, i, clip[i])
            sub = model.decoder(direct_norm(v_t, model.temporal_module.norms[i]))
            assert torch.allclose(logits[i], sub, atol=1e-10)
        # Reset: the caller drops the memory; the stream restarts as a fresh one.
        ran = record_paths(model)
        again, fresh = model.step(clip[5], None)
        first, _ = model.step(clip[5], PathMemory())
    assert ran == [0, 0] and fresh.counter == 1 and len(fresh) == 1
    assert torch.equal(again, first) and not torch.allclose(again, logits[5])
    assert len(model.temporal_module.empty_memory()) == 0


def test_streaming_equals_the_clip_forward_with_gradients():
    model = td_model()
    clip = frames(6, batch=2)
    with torch.no_grad():
        logits, _ = stream(model, clip)
        forward = model(clip.transpose(0, 1))
    assert torch.allclose(forward, logits[-1], atol=1e-12)
    model.train()
    out = model(clip.transpose(0, 1)[:, :4])  # paths 0..3, the last one's full chain
    out.sum().backward()
    module = model.temporal_module
    assert all(p.grad is not None for p in module.subnets.parameters())
    assert module.hops[3][0].weight.grad is not None and module.hops[0][0].weight.grad is None


def test_a_batch_of_streams_equals_the_streams_one_by_one():
    model = td_model()
    clip_a, clip_b = frames(5, seed=2), frames(5, seed=3)
    with torch.no_grad():
        alone_a, memory_a = stream(model, clip_a[:4])
        alone_b, memory_b = stream(model, clip_b[:4])
        assert memory_a.batch_key() == memory_b.batch_key()
        joined = PathMemory.cat_batch([memory_a, memory_b])
        assert joined.batch_size == 2 and joined.counter == 0
        logits, after = model.step(torch.cat([clip_a[4], clip_b[4]]), joined)
        single_a, after_a = model.step(clip_a[4], memory_a)
        single_b, _ = model.step(clip_b[4], memory_b)
    assert torch.allclose(logits[:1], single_a, atol=1e-10)
    assert torch.allclose(logits[1:], single_b, atol=1e-10)
    split = after.split_batch()
    assert [m.counter for m in split] == [1, 1] and split[0].paths == after_a.paths
    assert torch.allclose(split[0].entries.keys[-1], after_a.entries.keys[-1], atol=1e-10)


def test_memories_on_other_paths_or_sizes_do_not_batch_or_fit():
    model = td_model()
    with torch.no_grad():
        _, one = stream(model, frames(1))
        _, two = stream(model, frames(2))
        _, other_size = stream(model, frames(1, size=(40, 64)))
    assert one.batch_key() != two.batch_key() and one.batch_key() != other_size.batch_key()
    with pytest.raises(ValueError, match="one batch key"):
        PathMemory.cat_batch([one, two])
    with pytest.raises(ValueError, match="frame size"):
        model.step(frames(1, size=(40, 64))[0], one)
    with pytest.raises(ValueError, match="needs"):  # entries not from the paths before 2
        model.step(frames(1)[0], PathMemory(counter=2, entries=one.entries, paths=(0,),
                                            input_size=one.input_size))
    with pytest.raises(ValueError, match="must be a PathMemory"):
        model.step(frames(1)[0], object())


def camera(name, count, seed):
    """``count`` pipeline frames of stream ``name``: 32x64 uint8 images, 17 frames per second."""
    images = (frames(count, seed=seed)[:, 0].permute(0, 2, 3, 1) * 255).to(torch.uint8)
    return [Frame(name, image.numpy(), seconds_to_ns(i / 17), "cam")
            for i, image in enumerate(images)]


def seeded_pipeline():
    torch.manual_seed(0)
    return SegmentationPipeline(build_model("tdnet_erfnet"))


def test_pipeline_never_batches_streams_on_different_paths():
    together, alone_a, alone_b = seeded_pipeline(), seeded_pipeline(), seeded_pipeline()
    assert together.memory_length == 3
    frames_a, frames_b = camera("a", 6, 1), camera("b", 5, 2)
    results_a = [together.process([frames_a[0]])[0]]  # stream a is one path ahead of b
    pairs = [together.process([fa, fb]) for fa, fb in zip(frames_a[1:], frames_b)]
    assert all(r.batch_size == 1 for pair in pairs for r in pair)
    results_a += [pair[0] for pair in pairs]
    results_b = [pair[1] for pair in pairs]
    assert [r.memory_fill for r in results_a] == [1, 2, 3, 3, 3, 3]
    single_a = [alone_a.process([f])[0] for f in frames_a]
    single_b = [alone_b.process([f])[0] for f in frames_b]
    for mine, theirs in zip(results_a + results_b, single_a + single_b):
        assert np.array_equal(mine.labels, theirs.labels)


def test_pipeline_batches_streams_on_the_same_path():
    pipeline = seeded_pipeline()
    pairs = [pipeline.process([fa, fb]) for fa, fb in zip(camera("a", 5, 1), camera("b", 5, 2))]
    assert all(r.batch_size == 2 for pair in pairs for r in pair)


def test_normalisation_works_at_any_size_with_the_release_statistics():
    torch.manual_seed(0)
    norm = SpatialNorm(6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
    for size in [(4, 8), (5, 9)]:
        x = 3 * torch.randn(2, 6, *size, dtype=torch.float64) + 1
        out = norm(x)
        # The release's LayerNorm([h, w]) statistics, then the per-channel affine.
        release = F.layer_norm(x, list(size), eps=1e-5)
        assert torch.allclose(out, release * norm.weight.view(1, -1, 1, 1)
                              + norm.bias.view(1, -1, 1, 1), atol=1e-12)
        assert torch.allclose(out.mean(dim=(2, 3)), norm.bias.expand(2, 6), atol=1e-10)
    model = td_model()
    for size in [(32, 64), (48, 96)]:  # the same weights at two input sizes, full chain
        logits, _ = stream(model, frames(4, size=size))
        assert logits.shape[-2:] == size and torch.isfinite(logits).all()


def test_erfnet_init_copies_the_decoder_and_the_encoder_into_every_path():
    torch.manual_seed(0)
    erfnet = build_model("erfnet").state_dict()
    model = build_model("tdnet_erfnet")
    state = erfnet_init_state(model, erfnet)
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith(("encodings.", "hops.", "norms.")) for k in result.missing_keys)
    loaded = model.state_dict()
    assert torch.equal(loaded["decoder.output_conv.weight"], erfnet["decoder.output_conv.weight"])
    for path in range(4):
        assert torch.equal(loaded[f"subnets.{path}.layers.1.conv.weight"],
                           erfnet["encoder.layers.6.conv.weight"])
        assert torch.equal(loaded[f"subnets.{path}.layers.3.conv3x1_1.weight"],
                           erfnet["encoder.layers.9.conv3x1_1.weight"])  # dilation 8
