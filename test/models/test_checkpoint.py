"""Checkpoint loading and saving: formats, prefixes, wrappers, strict reports, unsafe pickles."""
import hashlib
import pickle

import pytest
import torch

from lmanet_ros.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from lmanet_ros.models.checkpoint import UnsafeCheckpointError
from models_helpers import load_golden
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

TEMPORAL_PARTS = ("kv_M_r4", "kv_Q_r4", "memory_fusion")


def randomised(name, seed):
    torch.manual_seed(seed)
    model = build_model(name)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5)
    return model


def assert_same_weights(model, state):
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[key].to(tensor.dtype)), key


@pytest.fixture
def source_model():
    return randomised("lmanet_erfnet", seed=1)


@pytest.fixture
def target_model():
    return randomised("lmanet_erfnet", seed=2)


# ---------------------------------------------------------------------------- good sources
@pytest.mark.parametrize("layout", ["plain", "ddp", "compiled", "compiled ddp", "state_dict",
                                    "model", "model_state"])
def test_mapping_layouts(source_model, target_model, layout):
    state = source_model.state_dict()
    if "ddp" in layout:
        state = {f"module.{k}": v for k, v in state.items()}
    if "compiled" in layout:
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    if layout in ("state_dict", "model", "model_state"):  # model_state: TDNet's training files
        state = {"epoch": 3, "arch": "lmanet", "best_acc": 0.7, layout: state}
    report = load_checkpoint(target_model, state)
    assert_same_weights(target_model, source_model.state_dict())
    assert report.format == "mapping" and report.sha256 is None
    assert len(report.loaded) == len(source_model.state_dict())
    assert not (report.missing or report.unexpected or report.initialised)
    assert report.wrapper == (layout if layout in ("state_dict", "model", "model_state")
                              else None)
    assert set(report.stripped_prefixes) == {
        "plain": set(), "ddp": {"module."}, "compiled": {"_orig_mod."},
        "compiled ddp": {"module.", "_orig_mod."}}.get(layout, set())


@pytest.mark.parametrize("suffix", [".pth", ".pth.tar", ".pt"])
def test_torch_files_with_wrapper_and_metadata(tmp_path, source_model, target_model, suffix):
    path = tmp_path / f"weights{suffix}"
    meta = {"classes": ["road", "sidewalk"], "memory_length": 3}
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in
                                           source_model.state_dict().items()},
                "meta": meta}, path)
    report = load_checkpoint(target_model, path)
    assert_same_weights(target_model, source_model.state_dict())
    assert report.format == "torch" and report.source == str(path)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.metadata == meta
    assert report.wrapper == "state_dict" and report.stripped_prefixes == ("module.",)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_safetensors_roundtrip_with_metadata(tmp_path, source_model, target_model, dtype):
    path = tmp_path / "weights.safetensors"
    palette = [[128, 64, 128], [244, 35, 232]]
    save_checkpoint(source_model, path, metadata={"classes": ["road", "sidewalk"],
                                                  "palette": palette, "memory_length": 3},
                    dtype=dtype)
    report = load_checkpoint(target_model, str(path))
    expected = {k: (v.to(dtype).float() if dtype is not None and v.is_floating_point() else v)
                for k, v in source_model.state_dict().items()}
    assert_same_weights(target_model, expected)
    assert report.format == "safetensors"
    assert report.metadata == {"classes": ["road", "sidewalk"], "palette": palette,
                               "memory_length": 3, "model": "lmanet_erfnet", "num_classes": 20,
                               "normalisation": None}
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_saved_file_is_smaller_in_fp16(tmp_path, source_model):
    full = save_checkpoint(source_model, tmp_path / "a.safetensors")
    half = save_checkpoint(source_model, tmp_path / "b.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size


def test_single_frame_erfnet_into_lmanet(target_model):
    erfnet = randomised("erfnet", seed=3)
    before = {k: v.clone() for k, v in target_model.state_dict().items()}
    state = {"state_dict": {f"module.{k}": v for k, v in erfnet.state_dict().items()}}
    report = load_checkpoint(target_model, state)
    assert report.initialised == TEMPORAL_PARTS
    assert set(report.ignored) == {"encoder.output_conv.weight", "encoder.output_conv.bias"}
    assert not report.missing and not report.unexpected
    for key, tensor in target_model.state_dict().items():
        if key.split(".")[0] in TEMPORAL_PARTS:
            assert torch.equal(tensor, before[key]), key
        else:
            assert torch.equal(tensor, erfnet.state_dict()[key]), key
    assert "left initialised: kv_M_r4, kv_Q_r4, memory_fusion" in report.summary()


def test_golden_state_dict_loads_strictly():
    data = load_golden("lmanet_erfnet_T4_96x160.pt")
    model = build_model("lmanet_erfnet")
    report = load_checkpoint(model, data["state_dict"])
    assert len(report.loaded) == len(data["state_dict"]) and not report.initialised


# ---------------------------------------------------------------------------- error paths
def _one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_keys_are_named(source_model, target_model):
    state = source_model.state_dict()
    del state["decoder.output_conv.bias"], state["kv_Q_r4.Key.weight"]
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(target_model, state)
    message = _one_line(error)
    assert "2 missing keys" in message and "decoder.output_conv.bias" in message
    assert set(error.value.missing) == {"decoder.output_conv.bias", "kv_Q_r4.Key.weight"}
    assert isinstance(error.value, ValueError)


def test_unexpected_keys_are_named(source_model, target_model):
    state = {**source_model.state_dict(), "aux.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="unexpected keys: aux.weight"):
        load_checkpoint(target_model, state)


def test_shape_mismatch_is_named_even_when_not_strict(target_model):
    state = build_model("lmanet_erfnet", num_classes=19).state_dict()
    for strict in (True, False):
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(target_model, state, strict=strict)
        message = _one_line(error)
        assert "decoder.output_conv.weight (checkpoint [16, 19, 2, 2], model [16, 20, 2, 2])" \
            in message
        assert ("decoder.output_conv.bias", (19,), (20,)) in error.value.mismatched


def test_not_strict_reports_missing_and_unexpected(source_model, target_model):
    state = {k: v for k, v in source_model.state_dict().items()
             if not k.startswith("memory_fusion.conv_layer_2")}
    state["extra.bias"] = torch.zeros(2)
    report = load_checkpoint(target_model, state, strict=False)
    assert set(report.missing) == {"memory_fusion.conv_layer_2.weight",
                                   "memory_fusion.conv_layer_2.bias"}
    assert report.unexpected == ("extra.bias",)


def test_partial_temporal_parts_are_not_taken_for_a_single_frame_checkpoint(source_model,
                                                                            target_model):
    state = {k: v for k, v in source_model.state_dict().items() if not k.startswith("kv_M_r4")}
    with pytest.raises(CheckpointError, match="4 missing keys: kv_M_r4"):
        load_checkpoint(target_model, state)


def test_lmanet_checkpoint_does_not_fit_single_frame_erfnet(source_model):
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(build_model("erfnet"), source_model.state_dict())
    assert "encoder.output_conv.weight" in error.value.missing
    assert "kv_M_r4.Key.weight" in error.value.unexpected


class _RunsCode:
    """Unpickling this creates a file: what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("wrapped", [False, True])
def test_pickle_that_would_run_code_is_refused(tmp_path, wrapped):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = _RunsCode(marker)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": payload} if wrapped else payload,
               path)
    with pytest.raises(UnsafeCheckpointError) as error:
        load_checkpoint(build_model("erfnet"), path)
    message = _one_line(error)
    assert str(path) in message and "weights_only" in message
    assert isinstance(error.value, CheckpointError)
    assert not marker.exists()
    # the file is a real exploit: an unsafe load does run its code
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(build_model("erfnet"), path)
    assert not marker.exists()


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(FileNotFoundError, match="checkpoint file not found: .*nowhere"):
        load_checkpoint(build_model("erfnet"), path)


@pytest.mark.parametrize("name, content", [("broken.pth", b"not a checkpoint at all"),
                                           ("text.pth", b"this is not a checkpoint" * 100),
                                           ("broken.safetensors", b"\x08\x00\x00\x00\x00\x00"
                                                                  b"\x00\x00{bad json")])
def test_corrupt_file_is_a_checkpoint_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(build_model("erfnet"), path)
    assert str(path) in _one_line(error)


@pytest.mark.parametrize("obj", [[torch.zeros(1)], {"weights": [1, 2]}, {"epoch": 3}])
def test_not_a_state_dict(tmp_path, obj):
    path = tmp_path / "odd.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_checkpoint(build_model("erfnet"), path)


@pytest.mark.parametrize("kwargs, match", [
    ({"path": "weights.pth"}, "must end with '.safetensors'"),
    ({"dtype": torch.int8}, "dtype"),
    ({"metadata": {"model": "erfnet"}}, "contradicts"),
    ({"metadata": {"num_classes": 19}}, "contradicts"),
    ({"metadata": {"bad": object()}}, "JSON"),
])
def test_save_checkpoint_errors(tmp_path, source_model, kwargs, match):
    path = tmp_path / kwargs.pop("path", "weights.safetensors")
    with pytest.raises(ValueError, match=match):
        save_checkpoint(source_model, path, **kwargs)
    assert not path.exists()
