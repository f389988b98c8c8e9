"""STF + MAR on PSPNet-50 as released (``stf_mar_delayed_pspnet50``): the released checkpoint
layout (transcribed from the shared doc), strict loading, the delayed stream against the
release's offline non-causal computation, the positional-embedding resize, the class memory."""
import copy
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from test_stf import direct_stf

from lmanet_ros.models.checkpoint import CheckpointError, load_checkpoint
from lmanet_ros.models.memory import FeatureMemory
from lmanet_ros.models.pspnet import IMAGENET_MEAN, IMAGENET_STD
from lmanet_ros.models.registry import model_entry
from lmanet_ros.models.stf import EMBEDDING_CACHE_SIZES, MemoryAugmentedRefinement
from lmanet_ros.models.stf_psp import read_class_memory, stf_mar_delayed_pspnet50
from lmanet_ros.pipeline import Frame, SegmentationPipeline

NAME = "stf_mar_delayed_pspnet50"
KEYS = runpy.run_path(str(Path(__file__).resolve().parents[1] / "data" / "published"
                          / "stf_mar_psp50_keys.py"))
RELEASED: dict[str, tuple[int, ...]] = KEYS["RELEASED"]
TRAINING_ONLY = KEYS["TRAINING_ONLY_PREFIX"]


@pytest.fixture(scope="module")
def model():
    """The released network with random weights, eval mode, embeddings of unit scale (Xavier
    on a (1, C, T, H, W) tensor gives ~1e-3: too small to matter in a test)."""
    torch.manual_seed(0)
    built = stf_mar_delayed_pspnet50()
    with torch.no_grad():
        for pe in (built.STF.pe_enc, built.STF.pe_dec):
            pe.normal_()
    return built.eval()


def released_meta_state() -> dict[str, torch.Tensor]:
    """The transcribed layout as shape-only tensors (device meta: no memory)."""
    return {key: torch.empty(shape, device="meta",
                             dtype=torch.int64 if key.endswith("num_batches_tracked")
                             else torch.float32)
            for key, shape in RELEASED.items()}


def frames(count, size=(32, 48), seed=0):
    """``count`` uint8 RGB images (H, W, 3) and the same as (1, 3, H, W) float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]
    return images, [torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
                    for image in images]


# ------------------------------------------------------------------- the released layout
def test_state_dict_equals_the_released_keys_from_the_doc(model):
    """Our state_dict, renamed from the transcribed layout, has exactly its keys and shapes;
    the auxiliary head's keys are the ones ignored."""
    renamed, ignored, layout = model.from_published_state_dict(released_meta_state())
    assert layout == "st_memory"
    assert set(ignored) == {key for key in RELEASED if key.startswith(TRAINING_ONLY)}
    assert len(ignored) == 8
    ours = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    theirs = {key: tuple(tensor.shape) for key, tensor in renamed.items()}
    assert sorted(set(theirs) - set(ours)) == [] and sorted(set(ours) - set(theirs)) == []
    assert {key: shape for key, shape in theirs.items() if ours[key] != shape} == {}
    assert len(ours) == len(RELEASED) - 8 == 427
    assert model.from_published_state_dict(model.state_dict()) is None      # our own names
    assert load_checkpoint(model, model.state_dict()).layout is None


def test_a_released_file_loads_strictly(tmp_path):
    """A file in the released layout (tensors of the doc's shapes, each filled with its own
    index) loads through load_checkpoint; every key lands where the renaming says."""
    with torch.device("meta"):                           # no initialisation: all is loaded
        fresh = stf_mar_delayed_pspnet50()
    fresh.to_empty(device="cpu")
    index = {key: i for i, key in enumerate(RELEASED)}
    state = {f"module.{key}": torch.full(shape, index[key], dtype=torch.int64 if key.endswith(
                 "num_batches_tracked") else torch.float32) for key, shape in RELEASED.items()}
    path = tmp_path / "best.pth"
    torch.save(state, path)
    del state
    report = load_checkpoint(fresh, path)
    assert report.layout == "st_memory" and report.stripped_prefixes == ("module.",)
    assert report.missing == () and report.unexpected == () and report.initialised == ()
    assert set(report.ignored) == {key for key in RELEASED if key.startswith(TRAINING_ONLY)}
    ours = fresh.state_dict()
    for released, mine in (("pspnet.backbone.stem.0.weight", "encoder.backbone.layer0.0.weight"),
                           ("pspnet.backbone.layer4.2.bn3.running_var",
                            "encoder.backbone.layer4.2.bn3.running_var"),
                           ("pspnet.decode_head.psp_modules.3.1.bn.bias",
                            "encoder.psp_modules.3.1.bn.bias"),
                           ("pspnet.decode_head.bottleneck.conv.weight",
                            "encoder.bottleneck.conv.weight"),
                           ("pspnet.decode_head.conv_seg.bias", "decoder.conv_seg.bias"),
                           ("STF.pe_enc", "STF.pe_enc"), ("MAR.memory_value", "MAR.memory_value")):
        assert ours[mine].flatten()[0].item() == index[released], mine
    renamed, _, _ = fresh.from_published_state_dict(released_meta_state())
    source = dict(zip(renamed, (key for key in RELEASED if not key.startswith(TRAINING_ONLY))))
    wrong = [key for key, tensor in ours.items()
             if {tensor.flatten()[0].item(), tensor.flatten()[-1].item()} != {index[source[key]]}]
    assert wrong == []


@pytest.mark.parametrize("change, named", [
    ("drop pspnet.backbone.layer1.0.conv1.weight", "encoder.backbone.layer1.0.conv1.weight"),
    ("drop MAR.memory_key", "MAR.memory_key"),
    ("drop STF.decoder.layers.0.norm3.bias", "STF.decoder.layers.0.norm3.bias"),
    ("reshape STF.pe_enc", "STF.pe_enc (checkpoint [1, 512, 3, 64, 128]"),
    ("reshape pspnet.decode_head.conv_seg.weight", "decoder.conv_seg.weight (checkpoint"),
])
def test_a_missing_or_reshaped_key_fails_naming_it(model, change, named):
    state = released_meta_state()
    action, key = change.split()
    if action == "drop":
        del state[key]
    else:
        shape = list(state[key].shape)
        shape[-2:] = [shape[-2] // 2, shape[-1] // 2] if len(shape) == 5 else [3, 3]
        state[key] = torch.empty(shape, device="meta")
    with pytest.raises(CheckpointError, match="missing" if action == "drop" else "mismatch"
                       ) as error:
        load_checkpoint(model, state)
    assert named in str(error.value)


def test_an_mmseg_single_frame_pspnet_loads_as_a_start(model):
    """mmseg's own pspnet_r50-d8 layout (no ``pspnet.`` prefix, no STF/MAR) is recognised:
    its keys map onto ours, STF and MAR are the parts a single-frame start leaves."""
    state = {key[len("pspnet."):]: tensor for key, tensor in released_meta_state().items()
             if key.startswith("pspnet.")}
    renamed, ignored, layout = model.from_published_state_dict(state)
    assert layout == "mmseg" and len(ignored) == 8
    ours = model.state_dict()
    assert set(renamed) == {key for key in ours if not key.startswith(("STF.", "MAR."))}


# ------------------------------------------------------------------------ the delayed stream
@pytest.mark.parametrize("size", [(16, 32), (5, 9)])
def test_stf_at_the_release_dims_equals_the_equations(model, size):
    """STF (d 512, 2 heads, FFN 256, block 16) against section 2.2's equations in float64, on
    a feature grid of multiples of 16 (the release's sizes) and on one padded to 16 x 16."""
    stf = model.STF
    layers = SimpleNamespace(pe_enc=stf.pe_enc, pe_dec=stf.pe_dec,
                             encoder=copy.deepcopy(stf.encoder).double(),
                             decoder=copy.deepcopy(stf.decoder).double())
    generator = torch.Generator().manual_seed(3)
    window = [torch.randn(1, 512, *size, generator=generator) for _ in range(3)]
    with torch.no_grad():
        got = stf(window, 1)
        expected = direct_stf(layers, [f.double() for f in window], 1)
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=1e-4)


def test_delayed_stream_equals_the_offline_non_causal_computation(model):
    """Step t returns frame t-1's logits from frames t-2, t-1, t: the release's computation of
    frame t-1 from its neighbours; steps 0 and 1 label frame 0 (its window duplicated)."""
    _, xs = frames(5)
    with torch.no_grad():
        logits, memory = model.step(xs[0], None)
        torch.testing.assert_close(logits, model.offline_logits([xs[0]] * 3), rtol=0, atol=1e-5)
        kept, none = model.step(xs[0], None, update_memory=False)
        assert none is None and torch.equal(kept, logits) and len(memory) == 1
        logits, memory = model.step(xs[1], memory)
        torch.testing.assert_close(logits, model.offline_logits([xs[0], xs[0], xs[1]]), rtol=0,
                                   atol=1e-5)
        for t in range(2, 5):
            logits, memory = model.step(xs[t], memory)
            offline = model.offline_logits(xs[t - 2:t + 1])
            torch.testing.assert_close(logits, offline, rtol=0, atol=1e-5)
            assert isinstance(memory, FeatureMemory) and len(memory) == 2
            assert memory.features[0].shape == (1, 512, 4, 6)
        # the labels are the middle frame's: the window around another frame differs
        assert (offline - model.offline_logits(xs[1:4])).abs().max() > 1e-3


def test_pipeline_publishes_each_frame_once_one_frame_late(model):
    images, xs = frames(4, seed=1)
    pipeline = SegmentationPipeline(model, input_size=(0, 0))
    assert pipeline.output_delay_frames == 1 and pipeline.memory_length == 2
    stream = [Frame("cam", image, 1_000_000 * (i + 1), "cam") for i, image in enumerate(images)]
    results = [pipeline.process([frame])[0] for frame in stream]
    assert [r.source for r in results] == [stream[0], stream[0], stream[1], stream[2]]
    assert [r.repeat for r in results] == [False, True, False, False]
    with torch.no_grad():
        for t, result in ((1, results[2]), (2, results[3])):
            offline = model.offline_logits(xs[t - 1:t + 2])[:, :19]
            assert np.array_equal(result.labels, offline.max(dim=1).indices[0].numpy())


# ------------------------------------------------------------- positional embeddings, sizes
def test_embedding_resize_identity_at_the_release_grid_bilinear_elsewhere(model):
    transformer = model.STF
    pe = transformer.pe_enc
    with torch.no_grad():
        same = transformer.embedding("pe_enc", 128, 256)
        assert same.data_ptr() == pe.data_ptr()                             # no copy
        assert torch.equal(same, pe.permute(0, 2, 3, 4, 1))
        half = transformer.embedding("pe_enc", 64, 128)
        per_slot = F.interpolate(pe[0].transpose(0, 1), size=(64, 128), mode="bilinear",
                                 align_corners=False)                       # (S, C, 64, 128)
        torch.testing.assert_close(half, per_slot.permute(0, 2, 3, 1)[None], rtol=0, atol=1e-6)
        assert transformer.embedding("pe_enc", 64, 128) is half             # cached
        odd = transformer.embedding("pe_dec", 5, 9)                         # padded to 16 x 16
        assert odd.shape == (1, 1, 16, 16, 512) and not odd[:, :, 5:].any()
        assert not odd[:, :, :, 9:].any() and odd[:, :, :5, :9].abs().min() > 0
        cached = transformer.embedding("pe_dec", 5, 9)
        transformer.pe_dec.mul_(2)                       # an in-place change invalidates it
        try:
            doubled = transformer.embedding("pe_dec", 5, 9)
            torch.testing.assert_close(doubled, 2 * cached, rtol=1e-6, atol=0)
        finally:
            transformer.pe_dec.div_(2)
        for size in range(EMBEDDING_CACHE_SIZES + 2):
            transformer.embedding("pe_dec", 16 + size, 16)
        assert len(transformer._embedding_cache) == EMBEDDING_CACHE_SIZES
    with torch.enable_grad():                            # training: never cached, differentiable
        assert transformer.embedding("pe_enc", 64, 128).requires_grad


@pytest.mark.parametrize("size", [(128, 128), (60, 100)])
def test_any_input_size_runs(model, size):
    """Features of multiples of 16 (128 x 128 input: 16 x 16) run as the release; others
    (input replicate-padded to 8k, features zero-padded to the block and masked) too."""
    _, xs = frames(1, size=size, seed=2)
    with torch.no_grad():
        logits, memory = model.step(xs[0], None)
    assert logits.shape == (1, 20, *size) and torch.isfinite(logits).all()
    assert (logits[:, 19] == 0).all() and memory.spatial_size == ((size[0] + 7) // 8,
                                                                  (size[1] + 7) // 8)


# --------------------------------------------------------------------------- class memory
def test_class_memory_is_fixed_state_and_reads_the_release_files(model, tmp_path):
    assert {name for name, _ in model.MAR.named_buffers()} == {"memory_key", "memory_value"}
    assert not any(name.startswith("memory") for name, _ in model.MAR.named_parameters())
    assert {"MAR.memory_key", "MAR.memory_value"} <= set(model.state_dict())
    mar = MemoryAugmentedRefinement(512, fixed_memory=True)
    keys = np.random.default_rng(0).standard_normal((190, 512)).astype(np.float32)
    values = np.random.default_rng(1).standard_normal((19, 512)).astype(np.float32)
    np.save(tmp_path / "key.npy", keys)
    np.save(tmp_path / "value.npy", values)
    mar.set_memory(*read_class_memory(tmp_path / "key.npy", tmp_path / "value.npy"))
    state = mar.state_dict()
    assert torch.equal(state["memory_key"][0], torch.from_numpy(keys))
    for trainid in (0, 7, 18):                           # class-major: rows 10c .. 10c + 9
        rows = state["memory_value"][0, 10 * trainid:10 * trainid + 10]
        assert torch.equal(rows, torch.from_numpy(values[trainid]).expand(10, 512))
    np.save(tmp_path / "bad.npy", values[:, :256])
    with pytest.raises(ValueError, match=r"\(19, 512\)"):
        read_class_memory(tmp_path / "key.npy", tmp_path / "bad.npy")
    np.save(tmp_path / "object.npy", np.array([{"code": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        read_class_memory(tmp_path / "object.npy", tmp_path / "value.npy")
    with pytest.raises(ValueError, match=r"prototypes must be \(19, 512\)"):
        mar.set_memory(torch.from_numpy(keys), torch.zeros(190, 512))


# ------------------------------------------------------------------------------ registry
def test_registered_as_the_delayed_release(model):
    entry = model_entry(NAME)
    assert entry.builder is stf_mar_delayed_pspnet50
    assert entry.temporal and entry.output_delay_frames == model.output_delay_frames == 1
    assert entry.default_memory_length == model.memory_length == 2
    info = model.info
    assert info.name == NAME and info.memory_length == 2
    assert (info.mean, info.std, info.output_stride, info.size_offset) == (
        IMAGENET_MEAN, IMAGENET_STD, 8, 0)
    assert [n for n, _ in model.named_children()] == ["encoder", "STF", "MAR", "dropout",
                                                      "decoder"]
    assert model.temporal_module.query_index == 1
    with pytest.raises(ValueError, match="3 slots"):
        model.memory_length = 3
