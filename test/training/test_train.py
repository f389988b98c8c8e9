"""Training (lmanet_ros.training) on tiny synthetic folders: a few steps each.

The ``lmanet train`` command is tested in test/tools/test_train_cli.py."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmanet_ros import training
from lmanet_ros.metrics import ConfusionMatrix
from lmanet_ros.models import build_model, load_checkpoint, save_checkpoint
from lmanet_ros.training import TrainingError, build_clip_dataset, train
from lmanet_ros.training.launch import free_port
import training_helpers
from training_helpers import checkpoint_state, read_log

# The shared fixtures, bound here by name (an import would be flagged F811 at each test using it).
data = training_helpers.data
erfnet_init = training_helpers.erfnet_init
one_thread = training_helpers.one_thread  # autouse

FROZEN = ("encoder.", "decoder.")


config = training_helpers.train_config  # one epoch, erfnet unless model= is given


# --------------------------------------------------------------------------- loss and metrics

def test_weighted_nll_is_torch_nll_with_weights_and_zero_without_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 20, 4, 5)
    targets = torch.randint(0, 20, (2, 4, 5))
    weights = torch.rand(20) + 0.5
    weights[19] = 0
    expected = F.nll_loss(F.log_softmax(logits, 1), targets, weight=weights)
    assert torch.allclose(training.weighted_nll(logits, targets, weights), expected)
    void = torch.full((2, 4, 5), 19)
    assert training.weighted_nll(logits, void, weights).item() == 0.0


def test_labels_to_targets_maps_void_to_channel_19():
    labels = torch.tensor([[0, 18, 255, 19]], dtype=torch.uint8)
    assert training.labels_to_targets(labels).tolist() == [[0, 18, 19, 19]]


def test_frequency_class_weights_follow_enet_formula():
    histogram = np.zeros(19, np.int64)
    histogram[0], histogram[13] = 750, 250
    weights = training.frequency_class_weights(histogram)
    assert weights.shape == (20,) and weights[19] == 0
    assert math.isclose(weights[0].item(), 1 / math.log(1.10 + 0.75), rel_tol=1e-6)
    assert math.isclose(weights[13].item(), 1 / math.log(1.10 + 0.25), rel_tol=1e-6)
    assert math.isclose(weights[5].item(), 1 / math.log(1.10), rel_tol=1e-6)
    with pytest.raises(ValueError):
        training.frequency_class_weights(np.ones(20))


def test_class_weights_schemes(data):
    erfnet, used = training.class_weights("auto", "cityscapes")
    assert used == "erfnet" and erfnet[19] == 0
    assert math.isclose(erfnet[0].item(), 2.8149, rel_tol=1e-4)
    train_set = build_clip_dataset("synth", data, "train", clip_length=1)
    frequency, used = training.class_weights("auto", "synth", train_set)
    assert used == "frequency"
    assert frequency[10] < frequency[13]  # sky covers more pixels than the car: weighs less
    none, _ = training.class_weights("none", "synth")
    assert none[:19].eq(1).all() and none[19] == 0


def test_miou_agrees_with_metrics_confusion_matrix():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (40, 50)).astype(np.uint8)
    gt[0] = 255
    pred = np.where(rng.random((40, 50)) < 0.7, gt, rng.integers(0, 8, (40, 50))).astype(np.uint8)
    pred[gt == 255] = 3
    matrix = ConfusionMatrix()
    matrix.update(gt, pred)
    miou, iou = training.miou_from_confusion(matrix.matrix)
    assert math.isclose(miou, matrix.miou(), rel_tol=1e-12)
    assert iou[10] is None


# --------------------------------------------------------------------------- optimisation

def test_erfnet_overfits_a_fixed_batch(data):
    torch.manual_seed(0)
    model = build_model("erfnet").train()
    dataset = build_clip_dataset("synth", data, "train", clip_length=1)
    frames = torch.stack([dataset[i][0] for i in (0, 5)]).float() / 255
    targets = training.labels_to_targets(torch.stack([dataset[i][1] for i in (0, 5)]))
    weights, _ = training.class_weights("frequency", "synth", dataset)
    # The recipe's Adam at 15x its learning rate, to see the fall within ten steps.
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.999),
                                 weight_decay=1e-4)
    losses = [training.train_step(model, optimizer, frames, targets, weights) for _ in range(10)]
    assert losses[-1] < 0.75 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


@pytest.mark.parametrize("frozen_mode", ["eval", "train"])
def test_lmanet_trains_only_keys_values_and_fusion(data, erfnet_init, tmp_path, frozen_mode):
    initial = build_model("lmanet_erfnet", memory_length=3)
    load_checkpoint(initial, erfnet_init)
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    result = train(config(data, tmp_path, model="lmanet_erfnet", init=erfnet_init,
                          max_images=4, frozen_mode=frozen_mode))
    assert result.images_seen == 4 and result.stop_reason == "max_images"
    after = checkpoint_state(tmp_path)["model"]
    trainable = [k for k in after if not k.startswith(FROZEN)
                 and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert trainable and all(k.startswith(("kv_M_r4.", "kv_Q_r4.", "memory_fusion."))
                             for k in trainable)
    for key in trainable:  # every key/value/fusion weight moved
        assert not torch.equal(after[key], before[key]), key
    frozen_parameters = [k for k, _ in initial.named_parameters() if k.startswith(FROZEN)]
    for key in frozen_parameters:
        assert torch.equal(after[key], before[key]), key
    frozen_statistics = [k for k in after if k.startswith(FROZEN) and "running_" in k]
    drifted = [k for k in frozen_statistics if not torch.equal(after[k], before[k])]
    if frozen_mode == "eval":
        assert drifted == []
    else:  # the release's behaviour: BN statistics of the frozen parts follow the data
        assert len(drifted) == len(frozen_statistics)


def test_fusion_init_pca_starts_lmanet_near_its_single_frame_network(data, erfnet_init,
                                                                     tmp_path):
    """Before any step: logits of the last frame are those of the single-frame network."""
    frames, _ = build_clip_dataset("synth", data, "val", clip_length=4)[0]
    clip = frames.unsqueeze(0).float() / 255
    single = build_model("erfnet").eval()
    load_checkpoint(single, erfnet_init)
    expected = single(clip[:, -1])
    errors = {}
    for fusion_init in ("pca", "random"):
        run = train(config(data, tmp_path / fusion_init, model="lmanet_erfnet", init=erfnet_init,
                           max_images=1, lr=1e-12, fusion_init=fusion_init))
        model = build_model("lmanet_erfnet", memory_length=3).eval()
        report = load_checkpoint(model, run.weights)
        assert report.metadata["fusion_init"] == fusion_init
        with torch.no_grad():
            errors[fusion_init] = float((model(clip) - expected).abs().mean()
                                        / expected.abs().mean())
    assert errors["pca"] < 0.02 and errors["pca"] < errors["random"] / 5


def test_pspnet_lmanet_freezes_its_neck_and_refuses_a_pca_start(data, tmp_path):
    """LMANet on PSPNet: encoder, pyramid pooling and classifier frozen; `auto` starts randomly."""
    init = tmp_path / "pspnet50.safetensors"
    save_checkpoint(build_model("pspnet50"), init)
    with pytest.raises(TrainingError, match="does not apply.*choose one of random"):
        train(config(data, tmp_path / "pca", model="lmanet_pspnet50", init=init,
                     fusion_init="pca", max_images=2))
    settings = config(data, tmp_path / "auto", model="lmanet_pspnet50", init=init, max_images=2)
    trainer = training.Trainer(settings, training.RankContext(0, 1, 0))
    assert trainer.fusion_init_used == "random"
    frozen = {name for name, p in trainer.model.named_parameters() if not p.requires_grad}
    assert any(name.startswith("ppm.") for name in frozen)
    assert all(name.startswith(("encoder.", "ppm.", "decoder.", "memory_fusion.conv_layer_2"))
               for name in frozen)
    trainer._set_train_mode()
    assert not trainer.model.ppm.training and trainer.model.memory_fusion.training


def test_lmanet_needs_init_and_a_memory(data, tmp_path):
    with pytest.raises(TrainingError, match="--init"):
        train(config(data, tmp_path, model="lmanet_erfnet"))
    with pytest.raises(ValueError, match="clip_length"):
        config(data, tmp_path, model="lmanet_erfnet", clip_length=1)
    with pytest.raises(ValueError, match="memory_length"):
        config(data, tmp_path, model="lmanet_erfnet", clip_length=5, memory_length=3)


# --------------------------------------------------------------------------- budgets, resume

def test_time_budget_stops_after_the_step_that_exceeds_it(data, tmp_path):
    result = train(config(data, tmp_path, epochs=5, time_budget_min=1e-6))
    assert result.stop_reason == "time_budget" and result.images_seen == 2
    (entry,) = read_log(tmp_path)
    assert entry["complete"] is False and entry["images_seen"] == 2


def test_resume_at_epoch_end_continues_exactly(data, tmp_path):
    train(config(data, tmp_path / "full", epochs=2))
    first = train(config(data, tmp_path / "split", epochs=2, max_images=8))
    assert (first.stop_reason, first.epochs_done, first.images_seen) == ("max_images", 1, 8)
    saved = checkpoint_state(tmp_path / "split")
    assert (saved["epoch"], saved["images_seen"], saved["epoch_images"]) == (1, 8, 0)

    resumed_config = config(data, tmp_path / "split", epochs=2, resume=True)
    trainer = training.Trainer(resumed_config, training.RankContext(0, 1, 0))
    restored = trainer.optimizer.state_dict()
    assert restored["param_groups"] == saved["optimizer"]["param_groups"]
    assert restored["state"].keys() == saved["optimizer"]["state"].keys()
    for index, state in saved["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][index][name], value), (index, name)
    assert trainer.scheduler.state_dict() == saved["scheduler"]
    assert trainer.state["images_seen"] == 8 and trainer.state["epoch"] == 1
    second = trainer.run()
    assert (second.epochs_done, second.images_seen, second.stop_reason) == (2, 16, "epochs")
    assert [e["images_seen"] for e in read_log(tmp_path / "split")] == [8, 16]
    a = checkpoint_state(tmp_path / "full")["model"]
    b = checkpoint_state(tmp_path / "split")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_mid_epoch_finishes_the_epoch(data, tmp_path):
    first = train(config(data, tmp_path, max_images=4))
    assert first.epochs_done == 0 and checkpoint_state(tmp_path)["epoch_images"] == 4
    second = train(config(data, tmp_path, resume=True))
    assert (second.epochs_done, second.images_seen) == (1, 8)
    log = read_log(tmp_path)
    assert [(e["epoch"], e["complete"], e["images_seen"]) for e in log] == [
        (1, False, 4), (1, True, 8)]


def test_resume_refusals(data, tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(config(data, tmp_path, resume=True))
    train(config(data, tmp_path, max_images=2))
    with pytest.raises(TrainingError, match="--resume"):
        train(config(data, tmp_path))
    with pytest.raises(TrainingError, match="batch_size"):
        train(config(data, tmp_path, resume=True, batch_size=4))


# --------------------------------------------------------------------------- DDP

def _ddp_rank(rank, cfg, init_method, out):
    torch.set_num_threads(1)  # as training.launch._worker does: one core per process
    torch.distributed.init_process_group("gloo", init_method=init_method, rank=rank,
                                         world_size=2)
    try:
        trainer = training.Trainer(cfg, training.RankContext(rank, 2, rank))
        seen = []
        original = trainer._step

        def recording_step(frames, labels):
            seen.append(frames.flatten(1).sum(1).tolist())  # a fingerprint of each clip
            return original(frames, labels)

        trainer._step = recording_step
        result = trainer.run()
        torch.save({"model": trainer.model.state_dict(), "seen": seen,
                    "images_seen": result.images_seen}, out / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_gloo_two_processes_end_with_identical_weights(data, erfnet_init, tmp_path):
    import torch.multiprocessing as mp

    cfg = config(data, tmp_path / "run", model="lmanet_erfnet", init=erfnet_init, epochs=2,
                 max_images=12)
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(_ddp_rank, args=(cfg, f"tcp://127.0.0.1:{free_port()}", tmp_path),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
    assert ranks[0]["seen"] != ranks[1]["seen"]  # different data, same weights: gradients synced
    assert ranks[0]["images_seen"] == ranks[1]["images_seen"] == 12
    log = read_log(tmp_path / "run")  # rank 0 alone writes: one line per epoch
    assert [(e["epoch"], e["complete"], e["images_seen"]) for e in log] == [
        (1, True, 8), (2, False, 12)]
    initial = build_model("lmanet_erfnet", memory_length=3)
    load_checkpoint(initial, erfnet_init)
    trained = checkpoint_state(tmp_path / "run")["model"]
    assert torch.equal(trained["encoder.initial_block.conv.weight"],
                       initial.state_dict()["encoder.initial_block.conv.weight"])
    assert not torch.equal(trained["kv_Q_r4.Key.weight"],
                           initial.state_dict()["kv_Q_r4.Key.weight"])
