"""Weights as data: the records, checkpoint resolution, the memory-length and input-size rules."""
import pytest
from safetensors import safe_open

from lmanet_ros.classes import ClassSet
from lmanet_ros.models import build_model, list_models, load_checkpoint
from lmanet_ros.models.checkpoint import file_sha256
from lmanet_ros.models.registry import model_entry
from lmanet_ros.models.weights import (DEMO, Weights, get_weights, list_weights,
                                       memory_length_origin, models_with_weights,
                                       register_weights, resolve_checkpoint,
                                       resolve_memory_length, trained_input_size, weights_tags)


@pytest.mark.parametrize("record", list_weights(), ids=lambda w: f"{w.model}:{w.tag}")
def test_every_record_says_what_its_file_says(record: Weights):
    """The record is data about the file: classes, palette, size, T, normalisation agree."""
    with safe_open(str(record.path), "pt") as handle:
        raw = handle.metadata()
    report = load_checkpoint(build_model(record.model), record.path, strict=True)
    meta = report.metadata
    assert meta["model"] == record.model
    classes = ClassSet.from_metadata(meta["classes"])
    assert classes.names == record.class_names
    assert [tuple(c) for c in classes.colors.tolist()] == list(record.palette)
    assert trained_input_size(meta) == record.input_size
    assert resolve_memory_length(record.model, None, meta) == record.memory_length
    assert meta.get("normalisation") == record.normalisation
    assert "memory_length" in raw and record.source and record.description


def test_demo_tag_names_the_packaged_files():
    assert DEMO in weights_tags()
    assert models_with_weights(DEMO) == ["erfnet", "lmanet_erfnet", "stf_delayed_erfnet",
                                         "stf_erfnet", "stf_mar_delayed_erfnet",
                                         "stf_mar_erfnet", "tdnet_erfnet", "tmanet_erfnet"]
    path, record = resolve_checkpoint("lmanet_erfnet", "demo")
    assert record is get_weights("lmanet_erfnet", DEMO) and path == record.path
    assert path.is_file() and path.parent.name == DEMO
    assert resolve_checkpoint("lmanet_erfnet", " demo ")[1] is record


@pytest.mark.parametrize("value", [None, "/w/x.pth", {"a": 1}])
def test_other_checkpoint_values_pass_through(value):
    assert resolve_checkpoint("erfnet", value) == (value, None)


def test_a_tag_without_weights_for_the_model_names_the_models_that_have_it():
    with pytest.raises(FileNotFoundError, match=r"no demo weights for model 'pspnet101' "
                                                r"\(demo weights exist for: erfnet, lmanet_erf"):
        resolve_checkpoint("pspnet101", "demo")


def test_register_refuses_duplicates_unknown_models_and_short_palettes():
    record = get_weights("erfnet", DEMO)
    with pytest.raises(ValueError, match="already registered"):
        register_weights(record)
    with pytest.raises(ValueError, match="unknown model"):
        register_weights(Weights(**{**record.__dict__, "model": "no_such_net"}))
    with pytest.raises(ValueError, match="19 classes but 2 colours"):
        register_weights(Weights(**{**record.__dict__, "tag": "x", "palette": ((0, 0, 0),) * 2}))


@pytest.mark.parametrize("model", list_models())
def test_memory_length_explicit_then_metadata_then_the_model(model):
    entry = model_entry(model)
    if not entry.temporal:
        assert resolve_memory_length(model, 5, {"memory_length": 3}) == 0
        return
    assert resolve_memory_length(model, 5, {"memory_length": 3}) == 5
    assert resolve_memory_length(model, 0, {"memory_length": 3}) == 3
    assert resolve_memory_length(model, None, {"memory_length": 2}) == 2
    assert resolve_memory_length(model, None, {"memory_length": 0}) == entry.default_memory_length
    assert resolve_memory_length(model, None, {}) == entry.default_memory_length
    assert resolve_memory_length(model, None, None) == entry.default_memory_length


@pytest.mark.parametrize("explicit, meta, match", [
    (-1, None, "memory_length must be an integer >= 0"),
    (None, {"memory_length": "3"}, "checkpoint metadata memory_length"),
    (None, {"memory_length": True}, "checkpoint metadata memory_length"),
])
def test_memory_length_refuses_bad_values(explicit, meta, match):
    with pytest.raises(ValueError, match=match):
        resolve_memory_length("lmanet_erfnet", explicit, meta)


@pytest.mark.parametrize("meta, expected", [
    ({"input_size": [128, 256]}, (128, 256)), ({}, None), (None, None),
    ({"input_size": None}, None)])
def test_trained_input_size(meta, expected):
    assert trained_input_size(meta) == expected


@pytest.mark.parametrize("value", [[128], [0, 256], "128x256", [128.0, 256]])
def test_trained_input_size_refuses_bad_metadata(value):
    with pytest.raises(ValueError, match="input_size must be"):
        trained_input_size({"input_size": value})


def test_record_files_hash_like_the_loader_reports():
    record = get_weights("erfnet", DEMO)
    report = load_checkpoint(build_model("erfnet"), record.path)
    assert report.sha256 == file_sha256(record.path)


def test_a_built_models_own_t_and_the_origin_of_the_answer():
    """The rule also takes a built model (its own T is the one it was built with) and says
    where its answer came from, for the node's log."""
    info = build_model("lmanet_erfnet", memory_length=2).info
    assert resolve_memory_length(info, None, None) == 2
    assert resolve_memory_length(info, None, {"memory_length": 3}) == 3
    assert resolve_memory_length(info, 5, {"memory_length": 3}) == 5
    assert memory_length_origin(info, 5, {"memory_length": 3}) == "explicit"
    assert memory_length_origin(info, 0, {"memory_length": 3}) == "checkpoint metadata"
    assert memory_length_origin(info, None, {}) == "the model's own"
    assert memory_length_origin("erfnet", 4, None) == "single frame"
