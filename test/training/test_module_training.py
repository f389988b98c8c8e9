"""Training the temporal-module family (TMANet, TDNet, STF, STF+MAR on ERFNet): the losses of
their recipes, TDNet's path rotation and initialisation, the pass-through starts."""
import math

import pytest
import torch
import torch.nn.functional as F

from lmanet_ros import training
from lmanet_ros.models import build_model, load_checkpoint, model_entry, save_checkpoint
from lmanet_ros.training import TrainingError, train
from lmanet_ros.training.passthrough_init import passthrough_initialise, supports_passthrough
import training_helpers
from training_helpers import read_log

data = training_helpers.data
erfnet_init = training_helpers.erfnet_init
one_thread = training_helpers.one_thread  # autouse

FAMILY = ("tmanet_erfnet", "tdnet_erfnet", "stf_erfnet", "stf_mar_erfnet")


def config(data, out, **overrides):
    """The shared one-epoch config, TDNet unless ``model=``."""
    return training_helpers.train_config(data, out, **{"model": "tdnet_erfnet", **overrides})


# --------------------------------------------------------------------------- losses

def test_distillation_kl_is_the_float64_formula():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 20, 3, 4), torch.randn(2, 20, 3, 4)
    p = F.softmax(teacher.double(), 1)
    expected = (p * (p.log() - F.log_softmax(student.double(), 1))).sum(1).mean()
    assert math.isclose(training.distillation_kl(student, teacher).item(), expected.item(),
                        rel_tol=1e-6)
    assert training.distillation_kl(teacher, teacher).abs().item() < 1e-6
    with pytest.raises(ValueError, match="differ in shape"):
        training.distillation_kl(student, teacher[:, :19])


def test_clip_loss_weighs_outputs_and_adds_the_teacher_per_output():
    torch.manual_seed(1)
    targets = torch.randint(0, 20, (2, 3, 4))
    weights = torch.rand(20) + 0.5
    out, sub, teacher = (torch.randn(2, 20, 3, 4) for _ in range(3))
    nll = training.weighted_nll
    plain = training.clip_loss({"out": out}, targets, weights)
    assert torch.allclose(plain, nll(out, targets, weights))
    both = training.clip_loss({"out": out, "sub": sub}, targets, weights, {"sub": 0.5}, teacher)
    kl = training.distillation_kl
    expected = (nll(out, targets, weights) + kl(out, teacher)
                + 0.5 * (nll(sub, targets, weights) + kl(sub, teacher)))
    assert torch.allclose(both, expected)
    with pytest.raises(ValueError, match="lack"):
        training.clip_loss({"out": out}, targets, weights, {"sub": 0.5})


# --------------------------------------------------------------------------- model side

def test_clip_outputs_equal_the_plain_forward_for_every_family_member():
    torch.manual_seed(2)
    clip = torch.rand(2, 3, 3, 32, 64)
    for name in FAMILY + ("lmanet_erfnet", "erfnet"):
        model = build_model(name, memory_length=2 if name != "lmanet_erfnet" else 2).eval()
        with torch.no_grad():
            outputs = model(clip, outputs=True)
            assert torch.equal(outputs["out"], model(clip)), name
        extra = set(outputs) - {"out"}
        expected = set(model.temporal_module.auxiliary_loss_weights) if name != "erfnet" else set()
        assert extra == expected, name


def test_tdnet_rotation_trains_every_path_on_the_labelled_frame():
    model = build_model("tdnet_erfnet", memory_length=3).eval()
    module = model.temporal_module
    assert module.training_rotation == 4
    for iteration in range(8):
        memory = module.training_memory(iteration, frames_before=3)
        assert (memory.counter + 3) % 4 == iteration % 4
    clip = torch.rand(1, 4, 3, 32, 64)
    with torch.no_grad():
        outputs = model(clip, outputs=True, iteration=2)
        # the labelled frame ran path 2 with the full chain; "sub" is its cold-start output
        memory = module.training_memory(2, 3)
        for index in range(3):
            _, memory = model.step(clip[:, index], memory)
        assert memory.counter == 2
        logits, _ = model.step(clip[:, 3], memory, update_memory=False)
        torch.testing.assert_close(outputs["out"], logits)
        cold, _ = model.step(clip[:, 3], module.empty_memory(2))
        torch.testing.assert_close(outputs["sub"], cold)


# --------------------------------------------------------------------------- pass-through starts

@pytest.mark.parametrize("name", ["tmanet_erfnet", "stf_erfnet", "stf_mar_erfnet"])
def test_passthrough_start_hands_the_decoder_nearly_its_features(name):
    """After the start, the module's fused output of a full memory is close to the encoder
    features it would pass on an empty memory (eval mode, damped memory terms included)."""
    torch.manual_seed(3)
    model = build_model(name, memory_length=2).eval()
    module = model.temporal_module
    assert supports_passthrough(module)
    frames = torch.rand(6, 3, 64, 128)
    with torch.no_grad():
        features = model.encoder(model._prepare(frames))
        before = module.read(features, module.memory_type().append(
            module.memory_entry(features), 2).append(module.memory_entry(features), 2))
        summary = passthrough_initialise(module, features)
        after = module.read(features, module.memory_type().append(
            module.memory_entry(features), 2).append(module.memory_entry(features), 2))
    assert "relative error" in summary

    def error(fused):
        return float(((fused - features) ** 2).mean() / features.var())

    assert error(after) < 0.3 and error(after) < error(before) / 3, (error(before), error(after))


def test_passthrough_start_of_tdnet_makes_values_identity_and_hops_small():
    torch.manual_seed(4)
    model = build_model("tdnet_erfnet", memory_length=3).eval()
    module = model.temporal_module
    frames = model._prepare(torch.rand(4, 3, 64, 128))
    hop_norm = module.hops[1][0].weight.norm().item()
    summary = passthrough_initialise(module, frames)
    assert "TDNet values = identity" in summary
    z = torch.rand(1, 128, 4, 4)
    for path in range(4):
        torch.testing.assert_close(module.encodings[path].value(z), z)
        assert module.hops[path][0].bias.abs().max() == 0
    assert math.isclose(module.hops[1][0].weight.norm().item(), 0.1 * hop_norm, rel_tol=1e-5)
    with pytest.raises(ValueError, match="no pass-through start"):
        passthrough_initialise(build_model("lmanet_erfnet").temporal_module, frames)


# --------------------------------------------------------------------------- the trainer

def test_tdnet_trains_from_single_frame_erfnet_with_its_recipe(data, erfnet_init, tmp_path):
    """--init erfnet weights: ERFNet's encoder in every path; every path's hops, norms and
    encodings train (rotation), and the decoder with them (the release trains its heads); the
    sub loss and distillation are on."""
    settings = config(data, tmp_path / "td", init=erfnet_init, distill=erfnet_init,
                      max_images=4)
    trainer = training.Trainer(settings, training.RankContext(0, 1, 0))
    assert trainer.fusion_init_used == "passthrough"
    assert trainer.auxiliary_weights == {"sub": 0.5} and trainer.teacher is not None
    erfnet = build_model("erfnet")
    load_checkpoint(erfnet, erfnet_init)
    state = trainer.model.state_dict()
    for path in range(4):
        torch.testing.assert_close(state[f"subnets.{path}.initial_block.conv.weight"],
                                   erfnet.state_dict()["encoder.initial_block.conv.weight"])
    torch.testing.assert_close(state["decoder.output_conv.weight"],
                               erfnet.state_dict()["decoder.output_conv.weight"])
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    for path in range(4):
        assert f"norms.{path}.weight" in trainable
        assert f"hops.{path}.0.weight" in trainable
        assert f"encodings.{path}.value.weight" in trainable
    assert "decoder.output_conv.weight" in trainable and not trainer.frozen_parts
    trainer._set_train_mode()
    assert trainer.model.decoder.training
    assert "single-frame weights mapped" in trainer.init_report
    result = trainer.run()
    assert result.images_seen == 4 and trainer.state["steps"] == 2
    metadata = load_checkpoint(build_model("tdnet_erfnet"), result.weights).metadata
    assert metadata["distill"] == str(erfnet_init)
    assert metadata["auxiliary_loss_weights"] == {"sub": 0.5}
    assert math.isfinite(read_log(result.log.parent)[-1]["loss"])


def test_distillation_moves_the_loss(data, erfnet_init, tmp_path):
    """The same first step with and without a teacher: the teacher's terms add to the loss."""
    losses = {}
    for label, distill in (("plain", None), ("distilled", erfnet_init)):
        torch.manual_seed(0)
        trainer = training.Trainer(config(data, tmp_path / label, model="tmanet_erfnet",
                                          init=erfnet_init, distill=distill, max_images=2),
                                   training.RankContext(0, 1, 0))
        losses[label] = trainer.run().history[-1]["loss"]
    assert losses["distilled"] > losses["plain"]


def test_recipe_settings_are_checked_and_stored(data, erfnet_init, tmp_path):
    assert config(data, tmp_path, model="stf_erfnet").grad_clip == 0.1  # STF's release
    assert config(data, tmp_path, model="tmanet_erfnet").grad_clip == 0.0
    assert config(data, tmp_path, model="stf_erfnet", grad_clip=0).grad_clip == 0.0
    with pytest.raises(ValueError, match="grad_clip"):
        config(data, tmp_path, grad_clip=-1.0)
    with pytest.raises(TrainingError, match="--distill: no file"):
        training.Trainer(config(data, tmp_path / "a", init=erfnet_init,
                                distill=tmp_path / "none.safetensors"),
                         training.RankContext(0, 1, 0))
    lmanet = tmp_path / "lmanet.safetensors"
    save_checkpoint(build_model("lmanet_erfnet", num_classes=20), lmanet)
    with pytest.raises(TrainingError, match="--distill needs single-frame erfnet weights"):
        training.Trainer(config(data, tmp_path / "b", init=erfnet_init, distill=lmanet),
                         training.RankContext(0, 1, 0))
    with pytest.raises(TrainingError, match="does not apply"):
        training.Trainer(config(data, tmp_path / "c", init=erfnet_init, fusion_init="pca"),
                         training.RankContext(0, 1, 0))
    assert model_entry("tdnet_erfnet").single_frame_init is not None
    assert model_entry("tmanet_erfnet").single_frame_init is None


@pytest.mark.parametrize("name", ["tmanet_erfnet", "stf_mar_erfnet"])
def test_family_member_trains_and_saves(name, data, erfnet_init, tmp_path):
    result = train(config(data, tmp_path / name, model=name, init=erfnet_init, max_images=2))
    model = build_model(name, memory_length=2)
    report = load_checkpoint(model, result.weights)
    assert report.metadata["fusion_init"] == "passthrough"
    assert report.metadata["model"] == name


def test_a_delayed_model_trains_on_clips_that_end_after_their_target(data, erfnet_init, tmp_path):
    """stf_delayed_erfnet labels frame N-2 of a clip: the trainer's clips end one frame after
    the labelled one (and the causal STF's at it)."""
    for name, future in (("stf_delayed_erfnet", 1), ("stf_erfnet", 0)):
        trainer = training.Trainer(config(data, tmp_path / name, model=name, init=erfnet_init,
                                          max_images=2), training.RankContext(0, 1, 0))
        assert trainer.model.output_delay_frames == future
        for clip in trainer.train_set.clips:
            assert f"_{clip.frame + future:06d}_" in clip.frames[-1].name
            assert f"_{clip.frame:06d}_" in clip.label.name
