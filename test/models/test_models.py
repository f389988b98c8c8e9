"""Models: registry, checkpoint names, golden vectors, streaming and memory semantics."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lmanet_ros.models import (Memory, ModelInfo, build_model, list_models, load_checkpoint,
                               registry)
from lmanet_ros.models.attention import local_memory_attention_reference
from models_helpers import load_golden, read_key_list
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

TEMPORAL_PARTS = ("kv_M_r4", "kv_Q_r4", "memory_fusion")


def small_model(name="lmanet_erfnet", memory_length=2, seed=0, dtype=torch.float64):
    """A model with random weights and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(name, memory_length=memory_length)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.to(dtype).eval()


def frames(count, batch=1, height=16, width=32, seed=1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, batch, 3, height, width, generator=generator, dtype=dtype)


# ----------------------------------------------------------------------------------- registry
def test_list_models_names_the_builtin_models():
    assert {"erfnet", "lmanet_erfnet"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'pspnet7'.*erfnet.*lmanet_erfnet"):
        build_model("pspnet7")


def test_registry_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register_model("tiny_test_model", temporal=False)
    def _builder(*, num_classes, memory_length):
        return build_model("erfnet", num_classes=num_classes)

    assert "tiny_test_model" in list_models()
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model("tiny_test_model", temporal=False)(_builder)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model("erfnet", temporal=False)(_builder)


@pytest.mark.parametrize("name, kwargs", [
    ("erfnet", {"num_classes": 0}), ("lmanet_erfnet", {"num_classes": 2.5}),
    ("lmanet_erfnet", {"memory_length": 0}), ("lmanet_erfnet", {"memory_length": True}),
    ("erfnet", {"memory_length": -1}),
])
def test_bad_arguments_raise(name, kwargs):
    with pytest.raises(ValueError):
        build_model(name, **kwargs)


def test_builder_is_keyword_only():
    with pytest.raises(TypeError):
        build_model("erfnet", 20)  # noqa: the positional use is the error under test


# --------------------------------------------------------------------------- checkpoint names
@pytest.mark.parametrize("name, tsv", [("erfnet", "erfnet_single_frame_state_dict.tsv"),
                                       ("lmanet_erfnet", "lmanet_erfnet_state_dict.tsv")])
def test_state_dict_names_and_shapes_equal_published_keys(name, tsv):
    expected = read_key_list(tsv)
    got = [(key, tuple(t.shape)) for key, t in build_model(name).state_dict().items()]
    assert got == expected


def test_num_classes_changes_only_the_output_layers():
    shapes = {k: tuple(v.shape) for k, v in build_model("lmanet_erfnet", num_classes=7)
              .state_dict().items()}
    assert shapes["decoder.output_conv.weight"] == (16, 7, 2, 2)
    assert shapes["decoder.output_conv.bias"] == (7,)


def test_parameter_counts_match_the_paper():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    erfnet, lmanet = build_model("erfnet"), build_model("lmanet_erfnet")
    assert round(count(erfnet) / 1e6, 2) in (2.06, 2.07)
    assert round((count(lmanet) - count(lmanet.encoder) - count(lmanet.decoder)) / 1e6, 2) == 0.63


def test_temporal_parts_are_top_level_and_shared_with_the_module():
    model = build_model("lmanet_erfnet")
    children = [name for name, _ in model.named_children()]
    assert children == ["encoder", *TEMPORAL_PARTS, "decoder"]
    for part in TEMPORAL_PARTS:
        assert getattr(model, part) is getattr(model.temporal_module, part)
    clone = copy.deepcopy(model)
    assert clone.kv_M_r4 is clone.temporal_module.kv_M_r4
    assert clone.kv_M_r4 is not model.kv_M_r4
    model.train()
    assert model.temporal_module.training and model.memory_fusion.training
    model.eval()
    assert not model.temporal_module.training and not model.memory_fusion.training


# ------------------------------------------------------------------------------------- info
def test_info():
    erfnet = build_model("erfnet", memory_length=3)
    lmanet = build_model("lmanet_erfnet", memory_length=3)
    assert erfnet.info == ModelInfo("erfnet", 20, 0, False, 8, None, None)
    assert lmanet.info == ModelInfo("lmanet_erfnet", 20, 3, True, 8, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lmanet.info.num_classes = 3
    lmanet.memory_length = 2
    assert lmanet.info.memory_length == 2 and lmanet.memory_length == 2
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError):
            lmanet.memory_length = bad
    with pytest.raises(ValueError):
        erfnet.memory_length = 2


# --------------------------------------------------------------------------------- golden
def _golden_model(data):
    model = build_model("lmanet_erfnet", memory_length=int(data["memory_length"])).eval()
    report = load_checkpoint(model, data["state_dict"])
    assert report.stripped_prefixes == ("module.",) and not report.missing
    return model


def test_golden_96x160_every_logit():
    data = load_golden("lmanet_erfnet_T4_96x160.pt")
    model = _golden_model(data)
    memory = None
    with torch.inference_mode():
        for index, frame in enumerate(data["frames"]):
            logits, memory = model.step(frame[None], memory)
            error = (logits[0] - data["logits"][index]).abs().max().item()
            assert error <= 5e-5, f"frame {index}: max abs error {error:.2e}"
            assert len(memory) == min(index + 1, int(data["memory_length"]))


def test_golden_256x384_sampled():
    data = load_golden("lmanet_erfnet_T4_256x384_sampled.pt")
    model = _golden_model(data)
    memory = None
    with torch.inference_mode():
        for index, frame in enumerate(data["frames"]):
            logits, memory = model.step(frame[None], memory)
            logits = logits[0]
            sampled = logits.flatten()[data["sample_index"][index]]
            error = (sampled - data["sample_logits"][index]).abs().max().item()
            assert error <= 5e-5, f"frame {index}: sampled logits off by {error:.2e}"
            corner = data["corner_logits"][index]
            error = (logits[:, :corner.shape[1], :corner.shape[2]] - corner).abs().max().item()
            assert error <= 5e-5, f"frame {index}: corner logits off by {error:.2e}"
            wide = logits.double()
            pixels = wide.shape[1] * wide.shape[2]
            torch.testing.assert_close(wide.sum((1, 2)), data["class_sum"][index],
                                       rtol=1e-6, atol=1e-6 * pixels)
            torch.testing.assert_close((wide ** 2).sum((1, 2)), data["class_sumsq"][index],
                                       rtol=1e-6, atol=1e-6 * pixels)
            labels = logits[:19].argmax(0)
            differ = labels != data["argmax19"][index].long()
            top2 = logits[:19].topk(2, dim=0).values
            near_tie = (top2[0] - top2[1]) < 1e-4
            assert not (differ & ~near_tie).any(), f"frame {index}: argmax19 differs"


# ---------------------------------------------------------------------------- streaming
def test_first_frame_is_the_decoder_on_raw_features():
    model = small_model()
    x = frames(1)[0]
    logits, memory = model.step(x, None)
    torch.testing.assert_close(logits, model.decoder(model.encoder(x)), rtol=0, atol=0)
    features = model.encoder(x)
    assert len(memory) == 1
    torch.testing.assert_close(memory.keys[0], model.kv_M_r4.Key(features), rtol=0, atol=0)
    torch.testing.assert_close(memory.values[0], model.kv_M_r4.Value(features), rtol=0, atol=0)
    empty_logits, _ = model.step(x, Memory())
    torch.testing.assert_close(empty_logits, logits, rtol=0, atol=0)


def test_streaming_order_and_fifo_against_a_manual_computation():
    """T = 2 over 4 frames: memory holds the raw kv_M of the 2 previous frames, oldest first."""
    model = small_model(memory_length=2)
    clip = frames(4)
    memory = None
    raw = [model.encoder(x) for x in clip]
    for index, x in enumerate(clip):
        logits, new_memory = model.step(x, memory)
        if index == 0:
            expected = model.decoder(raw[0])
        else:
            held = raw[max(0, index - 2):index]
            query_key, query_value = model.kv_Q_r4(raw[index])
            readout = local_memory_attention_reference(
                query_key, [model.kv_M_r4.Key(f) for f in held],
                [model.kv_M_r4.Value(f) for f in held])
            expected = model.decoder(model.memory_fusion(query_value, readout))
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)
        stored = raw[max(0, index - 1):index + 1]
        assert len(new_memory) == len(stored)
        for key, value, feature in zip(new_memory.keys, new_memory.values, stored):
            torch.testing.assert_close(key, model.kv_M_r4.Key(feature), rtol=0, atol=0)
            torch.testing.assert_close(value, model.kv_M_r4.Value(feature), rtol=0, atol=0)
        memory = new_memory


def test_step_does_not_modify_the_given_memory():
    model = small_model()
    clip = frames(3)
    _, memory = model.step(clip[0], None)
    _, memory = model.step(clip[1], memory)
    before = [k.clone() for k in memory.keys]
    _, newer = model.step(clip[2], memory)
    assert len(memory) == 2 and newer is not memory
    for key, saved in zip(memory.keys, before):
        assert torch.equal(key, saved)


def test_update_memory_false_returns_memory_unchanged():
    model = small_model()
    clip = frames(2)
    _, memory = model.step(clip[0], None)
    logits_store, _ = model.step(clip[1], memory, update_memory=True)
    logits_skip, same = model.step(clip[1], memory, update_memory=False)
    assert same is memory
    torch.testing.assert_close(logits_skip, logits_store, rtol=0, atol=0)
    _, none_memory = model.step(clip[0], None, update_memory=False)
    assert none_memory is None


def test_batch_of_two_streams_equals_two_single_streams():
    model = small_model(memory_length=2)
    clip_a, clip_b = frames(3, seed=1), frames(3, seed=2)
    mem_a = mem_b = mem_ab = None
    for x_a, x_b in zip(clip_a, clip_b):
        logits_a, mem_a = model.step(x_a, mem_a)
        logits_b, mem_b = model.step(x_b, mem_b)
        logits_ab, mem_ab = model.step(torch.cat([x_a, x_b]), mem_ab)
        torch.testing.assert_close(logits_ab, torch.cat([logits_a, logits_b]), rtol=0, atol=1e-9)
    split = mem_ab.split_batch()
    for single, part in zip((mem_a, mem_b), split):
        for key, other in zip(single.keys + single.values, part.keys + part.values):
            torch.testing.assert_close(key, other, rtol=0, atol=1e-9)
    # and back: streams with equal fill batch through cat_batch
    joined = Memory.cat_batch([mem_a, mem_b])
    logits_joined, _ = model.step(torch.cat([clip_a[0], clip_b[0]]), joined)
    logits_a, _ = model.step(clip_a[0], mem_a)
    torch.testing.assert_close(logits_joined[:1], logits_a, rtol=0, atol=1e-9)


def test_shorter_memory_length_at_run_time_uses_the_newest_frames():
    model = small_model(memory_length=3)
    clip = frames(4)
    memory = None
    for x in clip[:3]:
        _, memory = model.step(x, memory)
    assert len(memory) == 3
    model.memory_length = 2
    logits, newer = model.step(clip[3], memory)
    expected, _ = model.step(clip[3], memory.truncate(2))
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert len(newer) == 2


def test_memory_that_does_not_fit_is_refused():
    model = small_model()
    _, memory = model.step(frames(1)[0], None)
    with pytest.raises(ValueError, match="streams"):
        model.step(frames(1, batch=2)[0], memory)
    with pytest.raises(ValueError, match="feature size"):
        model.step(frames(1, height=40)[0], memory)
    with pytest.raises(ValueError, match="float32"):
        model.step(frames(1)[0], memory.to(dtype=torch.float32))
    with pytest.raises(ValueError):
        model.step(frames(1)[0], (memory.keys, memory.values))


@pytest.mark.parametrize("name", ["erfnet", "lmanet_erfnet"])
def test_any_input_size_is_padded_and_cropped(name):
    model = small_model(name)
    x = frames(1, height=13, width=21)[0]
    logits, memory = model.step(x, None)
    assert logits.shape == (1, 20, 13, 21)
    padded = F.pad(x, (0, 3, 0, 3), mode="replicate")  # to 16 x 24
    direct = model.decoder(model.encoder(padded))[:, :, :13, :21]
    torch.testing.assert_close(logits, direct, rtol=0, atol=0)
    if name == "lmanet_erfnet":
        logits2, memory = model.step(frames(1, height=13, width=21, seed=5)[0], memory)
        assert logits2.shape == (1, 20, 13, 21) and len(memory) == 2


@pytest.mark.parametrize("bad", [torch.rand(3, 32, 32), torch.rand(1, 4, 32, 32),
                                 torch.zeros(1, 3, 32, 32, dtype=torch.uint8)])
def test_bad_input_raises(bad):
    with pytest.raises(ValueError):
        build_model("lmanet_erfnet").eval().step(bad)


def test_single_frame_model_returns_memory_unchanged():
    model = small_model("erfnet")
    x = frames(1)[0]
    logits, memory = model.step(x, None)
    assert memory is None
    torch.testing.assert_close(logits, model.decoder(model.encoder(x)), rtol=0, atol=0)
    held = Memory((torch.zeros(1, 1, 4, 6),), (torch.zeros(1, 1, 4, 6),))
    assert model.step(x, held)[1] is held


def test_forward_streams_the_clip_and_returns_the_last_logits():
    model = small_model(memory_length=2)
    clip = frames(3, batch=2)
    memory = None
    for x in clip:
        expected, memory = model.step(x, memory)
    torch.testing.assert_close(model(clip.transpose(0, 1)), expected, rtol=0, atol=1e-10)
    erfnet = small_model("erfnet")
    torch.testing.assert_close(erfnet(clip.transpose(0, 1)), erfnet.step(clip[-1])[0],
                               rtol=0, atol=0)


def test_gradients_flow_through_memory_attention_and_fusion():
    model = small_model(memory_length=2, dtype=torch.float32).train()
    clip = frames(3, batch=2, dtype=torch.float32).transpose(0, 1)
    loss = model(clip).square().mean()
    loss.backward()
    for part in ("encoder", *TEMPORAL_PARTS, "decoder"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is not None for g in grads), part
        assert sum(g.abs().sum().item() for g in grads) > 0, part


def test_dropout_inactive_in_eval_only():
    model = small_model(dtype=torch.float32)
    clip = frames(2, dtype=torch.float32).transpose(0, 1)
    with torch.inference_mode():
        assert torch.equal(model(clip), model(clip))
    model.train()
    torch.manual_seed(0)
    first = model(clip)
    second = model(clip)
    assert not torch.equal(first, second)


def test_model_casts_with_its_temporal_parts():
    model = build_model("lmanet_erfnet", memory_length=2).eval().to(torch.bfloat16)
    assert model.temporal_module.kv_Q_r4.Key.weight.dtype == torch.bfloat16
    x = torch.rand(1, 3, 24, 40, dtype=torch.bfloat16)
    with torch.inference_mode():
        logits, memory = model.step(x)
        logits, memory = model.step(x, memory)
    assert logits.dtype == torch.bfloat16 and memory.keys[0].dtype == torch.bfloat16
    assert torch.isfinite(logits).all()


# --------------------------------------------------------------------------------- Memory
def _mem(length, batch=1, fill=0.0):
    return Memory(tuple(torch.full((batch, 2, 3, 4), fill + i) for i in range(length)),
                  tuple(torch.full((batch, 5, 3, 4), fill + i) for i in range(length)))


def test_memory_fifo_push_and_truncate():
    memory = Memory()
    assert len(memory) == 0 and memory.batch_size == 0
    for i in range(5):
        memory = memory.push(torch.full((1, 2, 3, 4), float(i)),
                             torch.full((1, 5, 3, 4), float(i)), 3)
    assert len(memory) == 3 and memory.batch_size == 1
    assert [k[0, 0, 0, 0].item() for k in memory.keys] == [2.0, 3.0, 4.0]  # oldest first
    assert [v[0, 0, 0, 0].item() for v in memory.truncate(1).values] == [4.0]
    with pytest.raises(ValueError):
        memory.truncate(0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        memory.keys = ()


@pytest.mark.parametrize("keys, values", [
    ((torch.zeros(1, 2, 3, 4),), ()),                                   # counts differ
    ((torch.zeros(1, 2, 3, 4), torch.zeros(2, 2, 3, 4)),) + ((torch.zeros(1, 5, 3, 4),) * 2,),
    ((torch.zeros(2, 3, 4),), (torch.zeros(1, 5, 3, 4),)),              # not 4-D
    ((torch.zeros(1, 2, 3, 4),), (torch.zeros(1, 5, 3, 5),)),           # spatial size
])
def test_memory_validates(keys, values):
    with pytest.raises(ValueError):
        Memory(keys, values)


def test_memory_to_cat_and_split():
    a, b = _mem(2, fill=0.0), _mem(2, batch=2, fill=10.0)
    joined = Memory.cat_batch([a, b])
    assert joined.batch_size == 3 and len(joined) == 2
    parts = joined.split_batch()
    assert len(parts) == 3 and all(p.batch_size == 1 and len(p) == 2 for p in parts)
    assert torch.equal(parts[0].keys[1], a.keys[1])
    assert torch.equal(parts[2].values[0], b.values[0][1:])
    half = joined.to(dtype=torch.float16)
    assert half.keys[0].dtype == torch.float16 and half.batch_size == 3
    with pytest.raises(ValueError, match="equal length"):
        Memory.cat_batch([_mem(1), _mem(2)])
    with pytest.raises(ValueError, match="shapes"):
        Memory.cat_batch([_mem(1), Memory((torch.zeros(1, 2, 5, 4),),
                                          (torch.zeros(1, 5, 5, 4),))])
    with pytest.raises(ValueError):
        Memory.cat_batch([])
    with pytest.raises(ValueError):
        Memory().split_batch()


# ------------------------------------------------------------------------------ assembly
def test_normalisation_is_applied_inside_step():
    from lmanet_ros.models import SingleFrameSegmenter
    from lmanet_ros.models.erfnet import ERFNetDecoder, ERFNetEncoder

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = SingleFrameSegmenter("normalised", ERFNetEncoder(), ERFNetDecoder(5), num_classes=5,
                                 mean=mean, std=std).double().eval()
    assert model.info.mean == mean and model.info.std == std
    x = frames(1)[0]
    normalised = (x - torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=x.dtype).view(1, 3, 1, 1)
    torch.testing.assert_close(model.step(x)[0], model.decoder(model.encoder(normalised)),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="together"):
        SingleFrameSegmenter("bad", ERFNetEncoder(), ERFNetDecoder(5), num_classes=5, mean=mean)


def test_temporal_module_must_hold_sub_modules_only():
    from lmanet_ros.models import LocalMemoryModule, TemporalSegmenter
    from lmanet_ros.models.erfnet import ERFNetDecoder, ERFNetEncoder

    temporal = LocalMemoryModule()
    temporal.scale = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="sub-modules only"):
        TemporalSegmenter("x", ERFNetEncoder(), temporal, ERFNetDecoder(20), num_classes=20,
                          memory_length=2)
    clashing = LocalMemoryModule()
    clashing.add_module("decoder", torch.nn.Identity())
    with pytest.raises(ValueError, match="clashes"):
        TemporalSegmenter("x", ERFNetEncoder(), clashing, ERFNetDecoder(20), num_classes=20,
                          memory_length=2)
