"""TMANet R50 as released (``tmanet_r50``): checkpoint layout, ResNetV1c, streaming, chunking.

The released checkpoint's keys and shapes come from ``test/data/published/tmanet_r50_keys.tsv``,
transcribed from ``shared/docs/temporal-modules.md`` (sections 1.2, 1.3, 1.8), not from our
modules.
"""
import itertools
import re
from pathlib import Path

import pytest
import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import CheckpointError, build_model, load_checkpoint
from lmanet_ros.models.memory import Memory
from lmanet_ros.models.mmseg_layout import rename_mmseg_state_dict, resnet_v1c
from lmanet_ros.models.registry import model_entry
from lmanet_ros.models.resnet import DilatedResNet
from lmanet_ros.models.tmanet_r50 import (HEAD_RENAMES, ProjectAheadMemoryAttention, SlotMemory,
                                          build_tmanet_r50)

KEYS_TSV = Path(__file__).resolve().parents[1] / "data" / "published" / "tmanet_r50_keys.tsv"
#: (slots T, classes of the released classifier) of the two releases.
RELEASES = {"cityscapes": (2, 19), "camvid": (4, 12)}


def released_shapes(slots: int, classes: int) -> dict[str, tuple[int, ...]]:
    """The transcribed key patterns expanded for T slots and C classes: key -> shape."""
    shapes = {}
    for line in KEYS_TSV.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pattern, shape = line.split("\t")
        dims = tuple(classes if d == "C" else int(d) for d in shape.split(",") if d)
        parts = re.split(r"\{([^{}]*)\}", pattern)
        choices = [_alternatives(text, slots) for text in parts[1::2]]
        for chosen in itertools.product(*choices):
            key = "".join(p for pair in itertools.zip_longest(parts[::2], chosen, fillvalue="")
                          for p in pair)
            assert key not in shapes, f"{key} twice in {KEYS_TSV.name}"
            shapes[key] = dims
    return shapes


def _alternatives(text: str, slots: int) -> list[str]:
    if text == "slot":
        return [str(s) for s in range(slots)]
    if ".." in text:
        first, last = text.split("..")
        return [str(v) for v in range(int(first), int(last) + 1)]
    return text.split(",")


def released_state(slots: int, classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict in the released layout with random tensors (running_var positive)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in released_shapes(slots, classes).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(80000)
        else:
            state[key] = torch.rand(shape, generator=generator) + (0.5 if "running_var" in key
                                                                   else -0.5)
    return state


def release_model(release: str):
    slots, classes = RELEASES[release]
    if release == "cityscapes":
        return build_model("tmanet_r50")
    return build_tmanet_r50(num_classes=classes + 1, memory_length=slots, align_corners=False)


def randomised_bn(model, seed=0):
    """Non-trivial BN running statistics (in place), so that the batch norms matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.4 * torch.rand(shape, generator=generator) - 0.2)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
    return model


def small_module(slots, seed=0, **options):
    """The streaming TMA module at small widths, float64, eval mode."""
    torch.manual_seed(seed)
    module = ProjectAheadMemoryAttention(16, slots, 4, 8, 8, **options)
    return randomised_bn(module, seed).double().eval()


def feature_maps(count, batch=1, channels=16, size=(3, 5), seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, *size, generator=generator, dtype=torch.float64)
            for _ in range(count)]


def slot_frames(history, slots, memory_length):
    """The frame each slot reads (slot 0 first) given the frames before the current one: the
    newest ``memory_length`` of them, the missing first slots filled with the oldest; none
    before: the current frame (passed as ``history[-1:]`` by the caller)."""
    held = history[-memory_length:]
    return [held[0]] * (slots - len(held)) + held


# ---------------------------------------------------------------------------- checkpoint layout
@pytest.mark.parametrize("release", list(RELEASES))
def test_our_names_after_renaming_equal_the_transcribed_release(release):
    slots, classes = RELEASES[release]
    shapes = released_shapes(slots, classes)
    model = release_model(release)
    renamed, ignored, layout = model.from_published_state_dict(
        {key: torch.empty(shape) for key, shape in shapes.items()})
    assert layout == "mmseg"
    assert set(ignored) == {key for key in shapes if key.startswith("auxiliary_head.")}
    ours = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assert {key: tuple(tensor.shape) for key, tensor in renamed.items()} == ours


def test_a_released_file_loads_strictly_with_the_auxiliary_head_ignored(tmp_path):
    state = released_state(2, 19)
    path = tmp_path / "tmanet_r50_cityscapes.pth"
    meta = {"mmseg_version": "0.8.0", "CLASSES": ["road", "sidewalk"], "iter": 80000}
    torch.save({"meta": meta, "state_dict": state}, path)
    model = build_model("tmanet_r50")
    report = load_checkpoint(model, path)
    assert report.layout == "mmseg" and report.wrapper == "state_dict"
    assert report.metadata == meta and not (report.missing or report.unexpected)
    assert len(report.loaded) == len(model.state_dict())
    assert sorted(report.ignored) == sorted(k for k in state if k.startswith("auxiliary_head."))
    pairs = {"backbone.stem.0.weight": model.encoder.layer0[0].weight,
             "backbone.stem.7.running_var": model.encoder.layer0[7].running_var,
             "backbone.layer3.5.bn3.bias": model.encoder.layer3[5].bn3.bias,
             "backbone.layer4.0.downsample.0.weight": model.encoder.layer4[0].downsample[0].weight,
             "decode_head.memory_key_conv.0.1.conv.weight": model.memory_key_conv[0][1].conv.weight,
             "decode_head.memory_value_conv.1.0.bn.weight": model.memory_value_conv[1][0].bn.weight,
             "decode_head.query_key_conv.1.conv.weight": model.query_key_conv[1].conv.weight,
             "decode_head.bottleneck.conv.weight": model.bottleneck.conv.weight,
             "decode_head.conv_seg.bias": model.decoder.conv_seg.bias}
    for released, ours in pairs.items():
        assert torch.equal(ours, state[released]), released


@pytest.mark.parametrize("change", ["missing", "renamed"])
def test_a_released_file_with_a_changed_key_fails_naming_it(tmp_path, change):
    state = released_state(2, 19)
    tensor = state.pop("decode_head.memory_value_conv.0.1.conv.weight")
    if change == "renamed":
        state["decode_head.memory_value_convs.0.1.conv.weight"] = tensor
    path = tmp_path / "changed.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"memory_value_conv\.0\.1\.conv\.weight") as error:
        load_checkpoint(build_model("tmanet_r50"), path)
    assert error.value.missing == ("memory_value_conv.0.1.conv.weight",)
    assert error.value.unexpected == (("memory_value_convs.0.1.conv.weight",)
                                      if change == "renamed" else ())


def test_mmseg_renaming_takes_the_mmcv_dict_and_leaves_other_layouts_and_keys_alone():
    state = {"backbone.stem.0.weight": torch.zeros(1), "backbone.layer2.3.bn1.bias":
             torch.zeros(1), "backbone.fc.weight": torch.zeros(1),
             "decode_head.conv_seg.bias": torch.zeros(1), "decode_head.psp_modules.0.x":
             torch.zeros(1), "auxiliary_head.conv_seg.bias": torch.zeros(1)}
    renamed, ignored, layout = rename_mmseg_state_dict(
        {"meta": {"iter": 1}, "state_dict": state}, (("conv_seg.", "decoder.conv_seg."),),
        layout="mmseg-psp")
    assert sorted(renamed) == ["backbone.fc.weight", "decode_head.psp_modules.0.x",
                               "decoder.conv_seg.bias", "encoder.layer0.0.weight",
                               "encoder.layer2.3.bn1.bias"]
    assert ignored == ("auxiliary_head.conv_seg.bias",) and layout == "mmseg-psp"
    assert rename_mmseg_state_dict(build_model("erfnet").state_dict(), HEAD_RENAMES) is None


def test_a_classifier_backbone_key_is_refused_by_name():
    state = released_state(2, 19)
    state["backbone.fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(CheckpointError, match=r"backbone\.fc\.weight"):
        load_checkpoint(build_model("tmanet_r50"), state)


# ---------------------------------------------------------------------------- network
def test_resnet_v1c_is_mmseg_r50_d8_and_the_semseg_default_is_unchanged():
    ours = resnet_v1c(50)
    assert [ours.layer0[i].out_channels for i in (0, 3, 6)] == [32, 32, 64]
    assert [block.conv2.dilation[0] for block in ours.layer3] == [1, 2, 2, 2, 2, 2]
    assert [block.conv2.dilation[0] for block in ours.layer4] == [2, 4, 4]
    assert [block.conv2.padding[0] for block in ours.layer4] == [2, 4, 4]
    assert [ours.layer2[0].conv2.stride, ours.layer2[0].downsample[0].stride] == [(2, 2)] * 2
    semseg = DilatedResNet(50)
    assert [semseg.layer0[i].out_channels for i in (0, 3, 6)] == [64, 64, 128]
    assert {block.conv2.dilation[0] for block in semseg.layer3} == {2}
    assert {block.conv2.dilation[0] for block in semseg.layer4} == {4}
    assert list(ours.state_dict()) == list(semseg.state_dict())
    with torch.inference_mode():
        assert ours.eval()(torch.rand(1, 3, 33, 65)).shape == (1, 2048, 5, 9)


@pytest.mark.parametrize("release, millions", [("cityscapes", 6.22), ("camvid", 8.78)])
def test_head_parameter_counts_are_the_docs(release, millions):
    """Section 1.3: 6.22 M (T = 2, 19 classes), 8.78 M (T = 4, 12 classes), BN stats excluded."""
    model = release_model(release)
    head = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("encoder."))
    assert round(head / 1e6, 2) == millions


def test_registered_with_the_cityscapes_defaults():
    entry = model_entry("tmanet_r50")
    assert entry.temporal and entry.default_memory_length == 2
    model = build_model("tmanet_r50")
    info = model.info
    assert (info.num_classes, info.memory_length, info.size_offset) == (20, 2, 1)
    assert info.mean == pytest.approx((0.485, 0.456, 0.406))
    assert model.temporal_module.slots == 2 and model.decoder.conv_seg.out_channels == 19
    with pytest.raises(ValueError, match="2 frames"):
        model.memory_length = 3
    camvid = release_model("camvid")
    assert (camvid.info.size_offset, camvid.temporal_module.slots) == (0, 4)


@pytest.mark.parametrize("release, size", [("cityscapes", (25, 41)), ("camvid", (16, 32))])
def test_streaming_equals_the_offline_release_computation(release, size):
    """Each step's logits equal the release's (the backbone recomputed on the memory frames;
    the first frames' missing slots filled with the oldest frame, the current one at t = 0)."""
    torch.manual_seed(0)
    model = randomised_bn(release_model(release)).double().eval()
    slots = model.temporal_module.slots
    generator = torch.Generator().manual_seed(1)
    frames = [torch.rand(1, 3, *size, generator=generator, dtype=torch.float64)
              for _ in range(slots + 1)]
    memory = None
    with torch.inference_mode():
        for index, frame in enumerate(frames):
            logits, memory = model.step(frame, memory)
            past = slot_frames(frames[:index] or [frame], slots, slots)
            torch.testing.assert_close(logits, model.offline_logits(frame, past))
    assert logits.shape == (1, RELEASES[release][1] + 1, *size)
    assert not logits[:, -1].any() and logits[:, :-1].abs().sum() > 0


@pytest.mark.parametrize("slots, memory_length", [(2, 2), (4, 4), (4, 2), (3, 1)])
def test_module_streaming_equals_the_offline_fuse(slots, memory_length):
    module = small_module(slots)
    features = feature_maps(slots + 3)
    memory = module.empty_memory()
    with torch.inference_mode():
        for index, current in enumerate(features):
            fused, memory = module.step(current, memory, memory_length=memory_length)
            past = slot_frames(features[:index] or [current], slots, memory_length)
            torch.testing.assert_close(fused, module.offline.fuse(current, past))


def test_memory_holds_each_projection_until_its_slot_reads_it():
    slots = 4
    module = small_module(slots)
    features = feature_maps(6)
    memory = module.empty_memory()
    with torch.inference_mode():
        for current in features:
            _, memory = module.step(current, memory, memory_length=slots)
        assert [len(slot) for slot in memory.slots] == [4, 3, 2, 1]
        assert memory.nbytes == 10 * (4 + 8) * 3 * 5 * 8  # T(T+1)/2 (Ck + Cv) h w, float64
        keys, values = memory.read()
        for s in range(slots):  # slot s reads the frame of age T - s, projected with slot s
            frame_keys, frame_values = module.project(features[-(slots - s)])
            assert torch.equal(keys[s], frame_keys[s]) and torch.equal(values[s], frame_values[s])
    with pytest.raises(ValueError, match="4 frames"):
        module.check_memory_length(5)


def test_kept_memory_is_returned_unchanged_and_nothing_is_projected(monkeypatch):
    module = small_module(2)
    first, second = feature_maps(2)
    with torch.inference_mode():
        _, memory = module.step(first, module.empty_memory(), memory_length=2)
        updated, _ = module.step(second, memory, memory_length=2)
        monkeypatch.setattr(module, "project", lambda features: pytest.fail("projected"))
        kept, same = module.step(second, memory, memory_length=2, update_memory=False)
    assert same is memory
    torch.testing.assert_close(kept, updated)


def test_slot_memory_batches_splits_and_validates():
    module = small_module(2)
    streams = feature_maps(3, batch=2)
    memory = module.empty_memory()
    with torch.inference_mode():
        for current in streams[:2]:
            _, memory = module.step(current, memory, memory_length=2)
        alone = [module.step(streams[2][b:b + 1], part, memory_length=2)[0]
                 for b, part in enumerate(memory.split_batch())]
        joined = SlotMemory.cat_batch(memory.split_batch())
        torch.testing.assert_close(module.step(streams[2], joined, memory_length=2)[0],
                                   torch.cat(alone))
    assert memory.batch_key() != memory.truncate(1).batch_key()
    assert memory.to(dtype=torch.float32).slots[1].keys[0].dtype == torch.float32
    one = Memory((torch.zeros(1, 4, 3, 5),), (torch.zeros(1, 8, 3, 5),))
    two = one.push(torch.zeros(1, 4, 3, 5), torch.zeros(1, 8, 3, 5), 2)
    with pytest.raises(ValueError, match="at most as many"):
        SlotMemory((one, two))
    with pytest.raises(ValueError, match="one key and one value per slot"):
        SlotMemory((two, one)).push([torch.zeros(1, 4, 3, 5)], [torch.zeros(1, 8, 3, 5)], 2)


# ---------------------------------------------------------------------------- chunked attention
def test_chunked_attention_equals_the_float64_reference_and_never_holds_the_whole_affinity(
        monkeypatch):
    """R50 widths (2048 -> Ck 64, Cv 256, 512), T = 2, 9 x 17 features: 153 queries over 306
    memory positions, chunks of at most 4096 affinity elements (13 rows)."""
    torch.manual_seed(0)
    module = randomised_bn(ProjectAheadMemoryAttention(max_affinity_elements=4096)).eval()
    with torch.no_grad():  # larger keys: peaked attention weights
        for stack in (module.memory_key_conv[1], [module.query_key_conv[1]]):
            for cbr in stack:
                cbr.bn.weight.mul_(8.0)
    generator = torch.Generator().manual_seed(2)
    current, *past = (torch.randn(1, 2048, 9, 17, generator=generator) for _ in range(3))
    sizes = []
    softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda x, *a, **k: sizes.append(x.numel())
                        or softmax(x, *a, **k))
    with torch.inference_mode():
        keys, values = zip(*(((k[s], v[s]) for s, (k, v) in
                              enumerate(module.project(frame) for frame in past))))
        chunked = module.fuse_projected(current, keys, values)
    monkeypatch.setattr(torch, "softmax", softmax)
    assert max(sizes) <= 4096 and len(sizes) == 12 and sum(sizes) == 153 * 306

    reference = module.double()
    with torch.inference_mode():
        query = reference.query_key_conv(current.double()).flatten(2)          # (1, Ck, N)
        memory_keys = torch.cat([k.double().flatten(2) for k in keys], 2)      # (1, Ck, T*N)
        memory_values = torch.cat([v.double().flatten(2) for v in values], 2)  # (1, Cv, T*N)
        weights = torch.softmax(query.transpose(1, 2) @ memory_keys, dim=2)    # (1, N, T*N)
        readout = (memory_values @ weights.transpose(1, 2)).view(1, 256, 9, 17)
        fused = torch.cat([reference.query_value_conv(current.double()), readout], 1)
        expected = reference.bottleneck(fused)
    assert weights.amax() > 0.5  # unscaled scores: peaked weights, a strict test of the softmax
    torch.testing.assert_close(chunked.double(), expected, rtol=1e-4, atol=1e-4)
