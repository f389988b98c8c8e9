"""PSPNet and LMANet on PSPNet: checkpoint names, sizes, normalisation, streaming, loading."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmanet_ros.models import (CheckpointError, ModelInfo, SingleFrameSegmenter, build_model,
                               load_checkpoint, registry)
from lmanet_ros.models.attention import local_memory_attention_reference
from lmanet_ros.models.checkpoint import normalisation_metadata
from lmanet_ros.models.pspnet import IMAGENET_MEAN, IMAGENET_STD
from lmanet_ros.models.resnet import Bottleneck
from lmanet_ros.models.temporal import SigmoidDownFusion
from lmanet_ros.pipeline import Frame, SegmentationPipeline
from models_helpers import read_key_list
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

TSV = "lmanet_pspnet101_state_dict.tsv"
TEMPORAL_PARTS = ("kv_M_r4", "kv_Q_r4", "memory_fusion")
#: semseg's mean and std of 0..255 RGB, the normalisation its PSPNet weights were trained with.
SEMSEG_MEAN = (123.675, 116.28, 103.53)
SEMSEG_STD = (58.395, 57.12, 57.375)


def randomised_bn(model):
    """Give every batch norm non-trivial running statistics (in place); return the model."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def images(count, height=33, width=65, seed=1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 1, 3, height, width, generator=generator, dtype=dtype)


def normalised(x):
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def lmanet():
    """lmanet_pspnet101, T = 2, random weights and BN statistics, float64, eval."""
    torch.manual_seed(0)
    return randomised_bn(build_model("lmanet_pspnet101", memory_length=2)).double().eval()


@pytest.fixture(scope="module")
def pspnet(lmanet):
    """pspnet101 holding the encoder, PPM and classifier weights of ``lmanet``."""
    model = build_model("pspnet101").double().eval()
    shared = {k: v for k, v in lmanet.state_dict().items()
              if k.split(".", 1)[0] not in TEMPORAL_PARTS}
    load_checkpoint(model, shared)
    return model


def raw_network(model):
    """The same modules without normalisation (size rule kept): takes normalised input."""
    info = model.info
    return SingleFrameSegmenter("raw", model.encoder, model.decoder, num_classes=info.num_classes,
                                size_offset=info.size_offset, neck={"ppm": model.ppm})


# ------------------------------------------------------------------------- names and sizes
def test_registered_with_their_defaults():
    for depth in (50, 101):
        assert registry.model_entry(f"pspnet{depth}").temporal is False
        entry = registry.model_entry(f"lmanet_pspnet{depth}")
        assert entry.temporal and entry.default_memory_length == 3
    assert registry.model_entry("lmanet_erfnet").default_memory_length == 4


def test_lmanet_pspnet101_keys_and_shapes_equal_the_published_checkpoint():
    expected = read_key_list(TSV)
    model = build_model("lmanet_pspnet101")
    assert [(k, tuple(t.shape)) for k, t in model.state_dict().items()] == expected
    assert model.kv_M_r4.Value is None and model.kv_Q_r4.Value is None
    assert model.info == ModelInfo("lmanet_pspnet101", 20, 3, True, 8, IMAGENET_MEAN,
                                   IMAGENET_STD, 1)


@pytest.mark.parametrize("depth, layer3_blocks", [(101, 23), (50, 6)])
def test_pspnet_keys_are_the_published_ones_without_the_memory(depth, layer3_blocks):
    def kept(key):
        if key.split(".", 1)[0] in TEMPORAL_PARTS:
            return False
        if key.startswith("encoder.layer3."):
            return int(key.split(".")[2]) < layer3_blocks
        return True

    expected = [(k, shape) for k, shape in read_key_list(TSV) if kept(k)]
    model = build_model(f"pspnet{depth}")
    assert [(k, tuple(t.shape)) for k, t in model.state_dict().items()] == expected
    assert model.info == ModelInfo(f"pspnet{depth}", 20, 0, False, 8, IMAGENET_MEAN,
                                   IMAGENET_STD, 1)


def test_parameter_counts():
    def count(model):
        return sum(p.numel() for p in model.parameters())

    published = sum(int(np.prod(shape)) for key, shape in read_key_list(TSV)
                    if not key.endswith(("running_mean", "running_var", "num_batches_tracked")))
    names = ("lmanet_pspnet101", "pspnet101", "pspnet50")
    lmanet, pspnet101, pspnet50 = (build_model(name) for name in names)
    assert count(lmanet) == published == 72_532_691
    assert count(pspnet101) == 65_707_475
    # keys 2 x (2048*128*9 + 128); fusion conv1, conv2 2 x (2048*256 + 256), conv3, conv4
    # 2 x (256*2048 + 2048), bn0 2 x 256, bn 2 x 2048
    assert count(lmanet) - count(pspnet101) == (2 * 2_359_424 + 2 * 524_544 + 2 * 526_336
                                                + 2 * 256 + 2 * 2048)
    # ResNet-101 has 17 more layer3 bottlenecks (1024 -> 256 -> 1024) than ResNet-50
    assert count(pspnet101) - count(pspnet50) == 17 * count(Bottleneck(1024, 256, dilation=2))


@pytest.mark.parametrize("size, padded", [((33, 65), (33, 65)), ((32, 64), (33, 65)),
                                          ((1, 1), (1, 1)), ((2, 9), (9, 9)),
                                          ((512, 1024), (513, 1025))])
def test_padded_size_follows_the_8k_plus_1_rule(size, padded):
    assert build_model("pspnet50").info.padded_size(*size) == padded
    erfnet = ModelInfo("erfnet", 20, 0, False)
    assert erfnet.padded_size(*size) == tuple(-(-v // 8) * 8 for v in size)


# ------------------------------------------------------------------------------- computation
def test_valid_size_is_the_unpadded_published_computation(pspnet):
    x = images(1)[0]
    with torch.inference_mode():
        logits, memory = pspnet.step(x)
        features = pspnet.encoder(normalised(x))
        assert features.shape == (1, 2048, 5, 9)
        direct = pspnet.decoder(pspnet.ppm(features))
    assert memory is None and direct.shape == logits.shape == (1, 20, 33, 65)
    torch.testing.assert_close(logits, direct, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(30, 50), (32, 64), (34, 66), (17, 9)])
def test_any_size_is_replicate_padded_and_cropped(pspnet, size):
    x = images(1, *size, seed=3)[0]
    height, width = pspnet.info.padded_size(*size)
    with torch.inference_mode():
        logits, _ = pspnet.step(x)
        padded = F.pad(normalised(x), (0, width - size[1], 0, height - size[0]), mode="replicate")
        direct = raw_network(pspnet).step(padded)[0][:, :, :size[0], :size[1]]
    assert logits.shape == (1, 20, *size)
    torch.testing.assert_close(logits, direct, rtol=0, atol=1e-12)


def test_normalisation_is_applied_exactly_once(pspnet):
    """step(x) equals the unnormalised network on semseg's 0..255 normalisation, by hand."""
    x = images(1, seed=4)[0]
    rgb255 = x * 255.0
    by_hand = (rgb255 - torch.tensor(SEMSEG_MEAN, dtype=x.dtype).view(1, 3, 1, 1)) / \
        torch.tensor(SEMSEG_STD, dtype=x.dtype).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits, _ = pspnet.step(x)
        raw = raw_network(pspnet)
        assert raw.info.mean is None
        expected, _ = raw.step(by_hand)
        twice, _ = raw.step(normalised(normalised(x)))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)
    assert (twice - logits).abs().max() > 1e-3


def test_void_channel_is_zero_and_the_others_are_not(lmanet):
    clip = images(2, 30, 50, seed=5)
    with torch.inference_mode():
        first, memory = lmanet.step(clip[0])
        second, _ = lmanet.step(clip[1], memory)
    for logits in (first, second):
        assert torch.equal(logits[:, 19], torch.zeros_like(logits[:, 19]))
        assert (logits[:, :19].abs().amax(dim=(2, 3)) > 0).all()


def test_first_frame_equals_the_single_frame_network(lmanet, pspnet):
    x = images(1, seed=6)[0]
    with torch.inference_mode():
        temporal, memory = lmanet.step(x)
        single, _ = pspnet.step(x)
        features = lmanet.encoder(normalised(x))
        key = lmanet.kv_M_r4.Key(features)
    torch.testing.assert_close(temporal, single, rtol=0, atol=0)
    assert len(memory) == 1
    torch.testing.assert_close(memory.values[0], features, rtol=0, atol=0)  # features as values
    torch.testing.assert_close(memory.keys[0], key, rtol=0, atol=0)


def test_streaming_with_memory_against_a_manual_computation(lmanet):
    """T = 2 over 3 frames at 30 x 50 (the third push drops the first frame): keys of 128
    channels, the 2048-channel features as values, reference attention, sigmoid-down1 fusion by
    hand, then PPM and classifier."""
    clip = images(3, 30, 50, seed=7)
    padded = [F.pad(normalised(x), (0, 7, 0, 3), mode="replicate") for x in clip]  # 33 x 57
    memory = None
    with torch.inference_mode():
        raw = [lmanet.encoder(x) for x in padded]
        for index, x in enumerate(clip):
            logits, memory = lmanet.step(x, memory)
            if index == 0:
                fused = raw[0]
            else:
                held = raw[max(0, index - 2):index]
                query = raw[index]
                readout = local_memory_attention_reference(
                    lmanet.kv_Q_r4.Key(query), [lmanet.kv_M_r4.Key(f) for f in held], held)
                fusion = lmanet.memory_fusion
                down = F.relu(fusion.bn0(fusion.conv_layer_1(query)
                                         + fusion.conv_layer_1(readout)))
                fused = F.relu(fusion.bn(query * torch.sigmoid(fusion.conv_layer_3(down))
                                         + readout * torch.sigmoid(fusion.conv_layer_4(down))))
            expected = lmanet.decoder(lmanet.ppm(fused))[:, :, :30, :50]
            torch.testing.assert_close(logits, expected, rtol=0, atol=1e-9)
            assert len(memory) == min(index + 1, 2)
        torch.testing.assert_close(memory.values[-1], raw[-1], rtol=0, atol=0)
        torch.testing.assert_close(lmanet(clip.transpose(0, 1)), logits, rtol=0, atol=1e-10)


def test_sigmoid_down_fusion_never_uses_conv_layer_2():
    torch.manual_seed(0)
    fusion = randomised_bn(SigmoidDownFusion(channels=12, reduced_channels=4)).double().eval()
    query, readout = torch.randn(2, 1, 12, 5, 7, dtype=torch.float64)
    before = fusion(query, readout)
    with torch.no_grad():
        fusion.conv_layer_2.weight.normal_()
        fusion.conv_layer_2.bias.normal_()
    torch.testing.assert_close(fusion(query, readout), before, rtol=0, atol=0)
    swapped = fusion(readout, query)  # conv1 on both inputs: d is symmetric, the gates are not
    assert not torch.allclose(swapped, before)


def test_gradients_reach_keys_and_fusion_in_float32():
    torch.manual_seed(0)
    model = build_model("lmanet_pspnet50", memory_length=1).train()
    clip = torch.rand(2, 2, 3, 17, 17)  # batch 2: the 1 x 1 pyramid bin needs 2 values per BN
    model(clip).square().mean().backward()
    for part in ("encoder", "kv_M_r4", "kv_Q_r4", "ppm", "decoder"):
        assert all(p.grad is not None for p in getattr(model, part).parameters()), part
    fusion = model.memory_fusion
    assert fusion.conv_layer_2.weight.grad is None  # unused, as in the published network
    assert fusion.conv_layer_3.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ checkpoints
def semseg_state(model, classes=19):
    """A semseg-style PSPNet state_dict (``layerN``, ``ppm``, ``cls``, ``aux``) from ours."""
    state = {}
    for key, tensor in model.state_dict().items():
        if key.split(".", 1)[0] in TEMPORAL_PARTS:
            continue
        key = key.replace("encoder.layer", "layer", 1).replace("decoder.cls.", "cls.", 1)
        state[key] = tensor.clone()
    state["cls.4.weight"] = torch.randn(classes, 512, 1, 1, dtype=state["cls.4.weight"].dtype)
    state["cls.4.bias"] = torch.randn(classes, dtype=state["cls.4.bias"].dtype)
    state["aux.0.weight"] = torch.randn(256, 1024, 3, 3)
    for name, shape in (("weight", (256,)), ("bias", (256,)), ("running_mean", (256,)),
                        ("running_var", (256,))):
        state[f"aux.1.{name}"] = torch.rand(shape)
    state["aux.1.num_batches_tracked"] = torch.tensor(7)
    state["aux.4.weight"] = torch.randn(classes, 256, 1, 1)
    state["aux.4.bias"] = torch.randn(classes)
    return state


@pytest.fixture(scope="module")
def semseg_file(tmp_path_factory, pspnet):
    """A semseg training checkpoint as torch.save writes it: DDP keys in a state_dict wrapper."""
    path = tmp_path_factory.mktemp("semseg") / "train_epoch_200.pth"
    state = {f"module.{k}": v.float() for k, v in semseg_state(pspnet).items()}
    torch.save({"epoch": 200, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}},
               path)
    return path, state


def test_semseg_checkpoint_loads_into_pspnet101(semseg_file):
    path, state = semseg_file
    model = build_model("pspnet101")
    report = load_checkpoint(model, path)
    assert report.layout == "semseg" and report.wrapper == "state_dict"
    assert report.stripped_prefixes == ("module.",) and "semseg layout" in report.summary()
    assert not (report.missing or report.unexpected or report.initialised)
    assert sorted(report.ignored) == sorted(k[len("module."):] for k in state if ".aux." in k)
    ours = model.state_dict()
    assert len(report.loaded) == len(ours)
    assert torch.equal(ours["encoder.layer0.0.weight"], state["module.layer0.0.weight"])
    assert torch.equal(ours["encoder.layer3.22.conv2.weight"],
                       state["module.layer3.22.conv2.weight"])
    assert torch.equal(ours["ppm.features.3.2.running_var"],
                       state["module.ppm.features.3.2.running_var"])
    assert torch.equal(ours["decoder.cls.4.bias"], state["module.cls.4.bias"])


def test_semseg_checkpoint_loads_into_lmanet_pspnet101_leaving_the_memory_initialised(
        semseg_file):
    path, state = semseg_file
    model = build_model("lmanet_pspnet101")
    before = model.kv_M_r4.Key.weight.clone()
    report = load_checkpoint(model, path)
    assert report.layout == "semseg" and report.initialised == TEMPORAL_PARTS
    assert not (report.missing or report.unexpected)
    assert torch.equal(model.kv_M_r4.Key.weight, before)
    assert torch.equal(model.state_dict()["decoder.cls.0.weight"], state["module.cls.0.weight"])


def test_semseg_checkpoint_that_does_not_fit_names_keys_and_shapes(pspnet):
    model = build_model("pspnet50")
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.layer3\.6\.") as error:
        load_checkpoint(model, semseg_state(pspnet))
    assert "encoder.layer3.22.bn3.weight" in error.value.unexpected
    state = semseg_state(pspnet, classes=21)
    del state["ppm.features.0.1.weight"]
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(build_model("pspnet101"), state)
    assert error.value.missing == ("ppm.features.0.1.weight",)
    assert ("decoder.cls.4.weight", (21, 512, 1, 1), (19, 512, 1, 1)) in error.value.mismatched
    assert "decoder.cls.4.weight (checkpoint [21, 512, 1, 1], model [19, 512, 1, 1])" in str(
        error.value)


def test_released_lmanet_layout_loads_natively(lmanet):
    state = {f"module.{k}": v for k, v in lmanet.state_dict().items()}
    model = build_model("lmanet_pspnet101").double()
    report = load_checkpoint(model, state)
    assert report.layout is None and not (report.initialised or report.missing or report.ignored)


def test_checkpoint_normalisation_metadata_must_match_the_model(pspnet):
    assert normalisation_metadata(pspnet) == {"mean": list(IMAGENET_MEAN),
                                              "std": list(IMAGENET_STD)}
    state = dict(semseg_state(pspnet))
    model = build_model("pspnet101")
    with pytest.raises(CheckpointError, match="normalisation"):
        load_checkpoint(model, {"state_dict": state, "meta": {"normalisation": None}})
    stated = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # tuples equal the JSON lists
    report = load_checkpoint(model, {"state_dict": state, "meta": {"normalisation": stated}})
    assert report.metadata["normalisation"] == stated


def test_saved_metadata_states_the_normalisation(tmp_path):
    from lmanet_ros.models import save_checkpoint
    from lmanet_ros.models.erfnet import ERFNetDecoder, ERFNetEncoder

    model = SingleFrameSegmenter("normalised", ERFNetEncoder(), ERFNetDecoder(5), num_classes=5,
                                 mean=IMAGENET_MEAN, std=IMAGENET_STD)
    path = save_checkpoint(model, tmp_path / "n.safetensors")
    report = load_checkpoint(model, path)
    assert report.metadata["normalisation"] == normalisation_metadata(model)
    with pytest.raises(ValueError, match="normalisation"):
        save_checkpoint(model, tmp_path / "m.safetensors", metadata={"normalisation": None})
    erfnet = build_model("erfnet")
    path = save_checkpoint(erfnet, tmp_path / "e.safetensors")
    assert load_checkpoint(erfnet, path).metadata["normalisation"] is None


# ---------------------------------------------------------------------------------- pipeline
def test_pipeline_runs_pspnet_checkpoints_at_any_frame_size(semseg_file):
    path, _ = semseg_file
    pipeline = SegmentationPipeline.from_pretrained("lmanet_pspnet101", path, device="cpu")
    assert pipeline.memory_length == 3 and pipeline.model.memory_length == 3
    assert pipeline.load_report.layout == "semseg"
    rng = np.random.default_rng(0)
    sizes = [(30, 50), (33, 65), (30, 50), (30, 50), (30, 50)]
    results = [pipeline.process([Frame("cam", rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                                       60_000_000 * index, "cam")])[0]
               for index, size in enumerate(sizes)]
    assert [r.labels.shape for r in results] == sizes
    assert all(r.labels.max() < 19 for r in results)
    assert [r.memory_fill for r in results] == [1, 1, 1, 2, 3]  # a new size resets the memory


# ------------------------------------------------------------------------------ 512 x 1024
MEASURE = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
from lmanet_ros.models import build_model
model = build_model("lmanet_pspnet101").eval()
x = torch.rand(1, 3, 512, 1024)
memory, seconds = None, []
with torch.inference_mode():
    for _ in range(4):  # memory 0, 1, 2, 3 frames
        start = time.perf_counter()
        logits, memory = model.step(x, memory)
        seconds.append(time.perf_counter() - start)
ok = tuple(logits.shape) == (1, 20, 512, 1024) and bool(torch.isfinite(logits).all())
print(json.dumps({"ok": ok, "seconds": seconds, "threads": torch.get_num_threads(),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


@pytest.mark.slow
def test_lmanet_pspnet101_512x1024_step_on_cpu_within_8_gb():
    threads = os.environ.get("LMANET_TEST_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", MEASURE, threads], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"lmanet_pspnet101 512x1024 CPU ({result['threads']} threads): step times "
          f"{', '.join(f'{s:.1f}' for s in result['seconds'])} s (memory 0..3 frames), "
          f"peak RSS {result['peak_rss_gb']:.2f} GB")
    assert result["ok"]
    assert result["peak_rss_gb"] < 8.0
