"""TDNet's released TD4-PSP18 and TD2-PSP50 (``td4_psp18``, ``td2_psp50``): the released
checkpoint layout (the reference TSVs), strict loading of ``.pkl`` files, streaming against an
offline computation written the release's way, and the LayerNorm resize."""
import ast

import pytest
import torch
import torch.nn.functional as F
from models_helpers import REFERENCE, one_cpu_thread, require  # noqa: F401 (autouse fixture)
from torch import nn

from lmanet_ros.models import CheckpointError, build_model, list_models, load_checkpoint
from lmanet_ros.models import tdnet_psp  # noqa: F401 (registers td4_psp18 and td2_psp50)
from lmanet_ros.models.registry import model_entry
from lmanet_ros.models.tdnet import SpatialNorm

MODELS = ("td4_psp18", "td2_psp50")
#: The released Testing models' paths (m) and memory lengths (m - 1).
PATHS = {"td4_psp18": 4, "td2_psp50": 2}
#: (counter, paths of the entries held) after each of 6 frames from a reset.
ROTATION = {
    "td4_psp18": [(1, (0,)), (2, (0, 1)), (3, (0, 1, 2)), (0, (1, 2, 3)), (1, (2, 3, 0)),
                  (2, (3, 0, 1))],
    "td2_psp50": [(1, (0,)), (0, (1,)), (1, (0,)), (0, (1,)), (1, (0,)), (0, (1,))],
}


def released_layout(name):
    """{key: (shape, dtype name)} of the released checkpoint, read from the reference TSV."""
    layout = {}
    for line in require(REFERENCE / f"{name}_state_dict.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            layout[key] = (tuple(ast.literal_eval(shape)), dtype)
    return layout


def in_released_names(model):
    """The model's state_dict under the release's names."""
    return {model.published_name(key): tensor for key, tensor in model.state_dict().items()}


def released_file(name, path, generator):
    """A ``.pkl`` in the released layout: a random tensor of each TSV shape (large ones one
    random value broadcast, so that the file stays small), torch.save'd; the state written."""
    state = {}
    for index, (key, (shape, dtype)) in enumerate(released_layout(name).items()):
        if dtype == "int64":
            state[key] = torch.tensor(index, dtype=torch.int64).expand(shape)
        elif torch.Size(shape).numel() <= 1 << 16:
            state[key] = torch.rand(shape, generator=generator)
        else:
            state[key] = torch.rand((), generator=generator).expand(shape)
    torch.save(state, path)
    return state


# ------------------------------------------------------------------------ layout and loading
@pytest.mark.parametrize("name", MODELS)
def test_state_dict_is_the_released_keys_shapes_and_dtypes(name):
    expected = released_layout(name)
    ours = {key: (tuple(tensor.shape), str(tensor.dtype).replace("torch.", ""))
            for key, tensor in in_released_names(build_model(name)).items()}
    assert len(ours) == len(expected) == {"td4_psp18": 728, "td2_psp50": 776}[name]
    assert ours == expected


def test_hops_are_named_by_target_path_and_key_path_as_released():
    """temporal-modules.md 3.1: path 1 uses atn1_2, atn1_3, atn1_4 for hops 1, 2, 3; path 2
    atn2_3, atn2_4, atn2_1; ... (keys from the frames of paths p+1, p+2, p+3); TD2: atn{p}."""
    td4, td2 = build_model("td4_psp18"), build_model("td2_psp50")
    names = {(p, j): td4.published_name(f"hops.{p}.{j}.weight") for p in range(4)
             for j in range(3)}
    assert [names[0, j] for j in range(3)] == [f"atn1_{q}.fc.0.conv.weight" for q in (2, 3, 4)]
    assert [names[1, j] for j in range(3)] == [f"atn2_{q}.fc.0.conv.weight" for q in (3, 4, 1)]
    assert [names[3, j] for j in range(3)] == [f"atn4_{q}.fc.0.conv.weight" for q in (1, 2, 3)]
    assert td2.published_name("hops.1.0.bias") == "atn2.fc.0.conv.bias"
    assert td4.published_name("encodings.2.query.1.running_var") == \
        "enc3.w_qs.0.bn.running_var"
    assert td4.published_name("subnets.1.ppm.conv4.1.weight") == "psp2.conv4.1.weight"


@pytest.mark.parametrize("name", MODELS)
def test_a_released_pkl_loads_strictly_and_broken_ones_name_the_key(name, tmp_path):
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / f"{name.replace('_', '-')}.pkl"
    state = released_file(name, path, generator)
    model = build_model(name)
    report = load_checkpoint(model, path)
    assert report.layout == "tdnet" and report.format == "torch"
    assert len(report.loaded) == len(state) and not report.missing and not report.ignored
    loaded = in_released_names(model)
    assert all(torch.equal(loaded[key], tensor) for key, tensor in state.items())

    broken = dict(state)
    del broken["pretrained2.layer2.0.downsample.1.running_mean"]
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=r"1 missing keys: "
                                              r"subnets\.1\.backbone\.layer2\.0\.downsample"):
        load_checkpoint(build_model(name), path)
    broken = {**state, "layer_norm2.ln.weight": torch.ones(65, 129)}
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=r"norms\.1\.weight \(checkpoint \[65, 129\], "
                                              r"model \[97, 193\]\)"):
        load_checkpoint(build_model(name), path)
    torch.save({**state, "pretrained1.extra.weight": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys: pretrained1\.extra\.weight"):
        load_checkpoint(build_model(name), path)


def test_training_checkpoints_auxiliary_heads_are_ignored(tmp_path):
    """The release's training files keep ``auxlayer{p}.*`` (feinanshan/TDNet#20); unwrapped
    and without ``module.``, they load, the auxiliary heads reported as ignored."""
    path = tmp_path / "td2-psp50-train.pkl"
    state = released_file("td2_psp50", path, torch.Generator().manual_seed(1))
    aux = {"auxlayer1.conv5.0.weight": torch.ones(256, 1024, 3, 3),
           "auxlayer2.conv5.4.bias": torch.zeros(19)}
    torch.save({f"module.{key}": tensor for key, tensor in {**state, **aux}.items()}, path)
    report = load_checkpoint(build_model("td2_psp50"), path)
    assert report.ignored == tuple(aux) and report.stripped_prefixes == ("module.",)


def test_registered_with_the_released_memory_lengths_and_normalisation():
    for name in MODELS:
        model = build_model(name)
        assert name in list_models() and model_entry(name).temporal
        assert model.memory_length == model_entry(name).default_memory_length == PATHS[name] - 1
        assert model.info.mean == (0.485, 0.456, 0.406)  # the release's dataloader
        assert model.info.std == (0.229, 0.224, 0.225)
        assert model.info.padded_size(769, 1537) == (769, 1537)  # the release's input: as is
        with pytest.raises(ValueError, match="holds exactly"):
            model.memory_length = PATHS[name]


# ------------------------------------------------------------------------------- streaming
def random_model(name, seed=0):
    """``name`` in float64, eval mode, with random batch-norm statistics and LayerNorm affines,
    and queries and keys scaled up so that the attention is far from uniform."""
    torch.manual_seed(seed)
    model = build_model(name).double().eval()
    module, generator = model.temporal_module, torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2, generator=generator)
            bn.running_var.uniform_(0.5, 1.5, generator=generator)
        for norm in module.norms:
            norm.weight.uniform_(0.8, 1.2, generator=generator)
            norm.bias.uniform_(-0.2, 0.2, generator=generator)
        for encoding in module.encodings:
            encoding.query[3].weight.mul_(30.0)
            encoding.key[3].weight.mul_(30.0)
    return model


def tokens(x):
    """(B, C, h, w) -> (B, h*w, C), the release's token layout."""
    return x.flatten(2).transpose(1, 2)


def release_attention(weights, prefix, key, value, query):
    """The release's ``Attention``: ``softmax(q k^T / sqrt(64)) v``, then its 1x1 ``fc``."""
    affinity = torch.softmax(query @ key.transpose(1, 2) / 8.0, dim=2)
    fc_weight = weights[f"{prefix}.fc.0.conv.weight"][:, :, 0, 0]
    return (affinity @ value) @ fc_weight.T + weights[f"{prefix}.fc.0.conv.bias"]


def offline_reference(model, clip):
    """The logits of every frame of ``clip``, computed as the release's test loop does: frame t
    on path ``t mod m``, a queue of the last m-1 frames' subsampled (q, k, v) tokens, the hop
    modules picked by the release's names (``atn{p}_{q}``: q the path of the keys' frame), the
    LayerNorm affine resized to the feature size, logits up-sampled with align_corners."""
    module, m = model.temporal_module, model.temporal_module.paths
    weights = in_released_names(model)
    queue, outputs = [], []  # queue: (path, q~, k~, v~) of past frames, oldest first
    for t, x in enumerate(clip):
        path = t % m
        z = module.subnets[path](model._prepare(x))
        encoding = module.encodings[path]
        v_cur = encoding.value(z)
        y = v_cur
        if len(queue) == m - 1:
            propagated = None
            for hop, (source, _, key, value) in enumerate(queue):
                query = queue[hop + 1][1] if hop < m - 2 else tokens(encoding.query(z))
                prefix = f"atn{path + 1}" + ("" if m == 2 else f"_{source + 1}")
                propagated = release_attention(weights, prefix, key, value if propagated is None
                                               else value + propagated, query)
            y = propagated.transpose(1, 2).reshape(v_cur.shape) + v_cur
        affine = [F.interpolate(weights[f"layer_norm{path + 1}.ln.{p}"][None, None],
                                size=y.shape[2:], mode="bilinear", align_corners=True)[0, 0]
                  for p in ("weight", "bias")]
        logits = module.heads[path](F.layer_norm(y, y.shape[2:], *affine, eps=1e-5))
        height, width = logits.shape[2:]
        logits = F.interpolate(logits, size=(8 * height - 7, 8 * width - 7), mode="bilinear",
                               align_corners=True)
        outputs.append(F.pad(logits, (0, 0, 0, 0, 0, 1))[:, :, :x.shape[2], :x.shape[3]])
        sub = z[:, :, ::4, ::4]
        entry = (path, *(tokens(f(sub)) for f in (encoding.query, encoding.key, encoding.value)))
        queue = (queue + [entry])[-(m - 1):]
    return torch.stack(outputs)


@pytest.mark.parametrize("name", MODELS)
def test_streaming_six_frames_equals_the_offline_computation(name):
    model = random_model(name)
    clip = torch.rand(6, 1, 3, 30, 60, generator=torch.Generator().manual_seed(2),
                      dtype=torch.float64)  # padded to 33 x 65: 5 x 9 features, 2 x 3 keys
    ran = []
    for index, subnet in enumerate(model.temporal_module.subnets):
        subnet.register_forward_hook(lambda *_, index=index: ran.append(index))
    memory, logits, states = None, [], []
    with torch.no_grad():
        for x in clip:
            before = memory
            out, memory = model.step(x, memory)
            logits.append(out)
            states.append((memory.counter, memory.paths))
        assert ran == [t % PATHS[name] for t in range(6)]
        expected = offline_reference(model, clip)
        last = model.last_frame_outputs(clip[-1], before)
    assert states == ROTATION[name]
    logits = torch.stack(logits)
    assert logits.shape == (6, 1, 20, 30, 60) and torch.all(logits[:, :, 19] == 0)
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)
    # The propagated term matters: the last frame's "sub" output (no propagation) differs.
    torch.testing.assert_close(last["out"], logits[-1], rtol=1e-12, atol=1e-12)
    assert (last["sub"] - last["out"]).abs().max() > 1e-3


def test_memory_holds_the_projected_subsampled_entries_and_their_paths():
    """(64 + 64 + 512) values per subsampled position per entry; at 512 x 1024 (65 x 129
    features, 17 x 33 kept) 1.37 MiB a frame."""
    model = build_model("td4_psp18").eval()
    memory = None
    with torch.inference_mode():
        for _ in range(4):
            _, memory = model.step(torch.rand(1, 3, 40, 72), memory)  # 41 x 73: 6 x 10 -> 2 x 3
    assert memory.counter == 0 and memory.paths == (1, 2, 3)
    assert memory.nbytes == 3 * (64 + 64 + 512) * 2 * 3 * 4
    assert (64 + 64 + 512) * 17 * 33 * 4 / 2 ** 20 == pytest.approx(1.37, abs=0.005)


# ------------------------------------------------------------------------ LayerNorm resize
def random_layer_norm(seed=0):
    norm = SpatialNorm(size=(97, 193))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(97, 193, generator=generator) + 0.5)
        norm.bias.copy_(torch.rand(97, 193, generator=generator) - 0.5)
    return norm


def test_layer_norm_is_the_releases_at_its_size():
    norm = random_layer_norm()
    release = nn.LayerNorm([97, 193])
    release.load_state_dict(norm.state_dict())
    x = 3 * torch.randn(2, 4, 97, 193) + 1
    weight, bias = norm.affine((97, 193))
    assert weight is norm.weight and bias is norm.bias  # no resize at the native size
    with torch.no_grad():
        assert torch.equal(norm(x), release(x))


def test_layer_norm_resizes_its_affine_to_other_feature_sizes_and_caches_it():
    norm = random_layer_norm()
    with torch.no_grad():
        weight, bias = norm.affine((65, 129))  # 512 x 1024 input (513 x 1025 padded)
        assert weight.shape == bias.shape == (65, 129)
        # align_corners=True: 96 / 64 = 192 / 128 = 1.5, every other pixel is a native one.
        assert torch.equal(weight[::2, ::2], norm.weight[::3, ::3])
        assert torch.equal(bias[::2, ::2], norm.bias[::3, ::3])
        assert norm.affine((65, 129))[0] is weight  # cached
        x = torch.randn(1, 3, 65, 129)
        assert torch.equal(norm(x), F.layer_norm(x, (65, 129), weight, bias, eps=1e-5))
        norm.load_state_dict(random_layer_norm(seed=1).state_dict())  # new values: new resize
        assert not torch.equal(norm.affine((65, 129))[0], weight)
    out = norm(torch.randn(1, 2, 20, 30))  # with a gradient to compute: not cached
    out.square().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0
    assert (20, 30) not in norm._affine_cache


def test_one_model_runs_at_several_input_sizes():
    model = build_model("td2_psp50").eval()
    with torch.inference_mode():
        for size in [(33, 65), (48, 100)]:
            memory = None  # a new input size needs a fresh memory
            for _ in range(3):
                logits, memory = model.step(torch.rand(1, 3, *size), memory)
            assert logits.shape == (1, 20, *size) and torch.isfinite(logits).all()
        with pytest.raises(ValueError, match="frame size"):
            model.step(torch.rand(1, 3, 33, 65), memory)
