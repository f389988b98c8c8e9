"""The ``lmanet train`` command (lmanet_ros.tools.train) on tiny synthetic folders."""
import pytest
import torch

from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES
from lmanet_ros.models import build_model, load_checkpoint
from lmanet_ros.tools import cli
import training_helpers
from training_helpers import checkpoint_state, read_log

# The shared fixtures, bound here by name (an import would be flagged F811 at each test using it).
data = training_helpers.data
erfnet_init = training_helpers.erfnet_init
one_thread = training_helpers.one_thread  # autouse


def test_cli_trains_erfnet_then_lmanet_and_writes_loadable_fp16_weights(data, tmp_path):
    from safetensors import safe_open

    common = ["--data", str(data), "--epochs", "1", "--batch-size", "4", "--workers", "0",
              "--no-progress"]
    assert cli.main(["train", "--model", "erfnet", "--out", str(tmp_path / "e"), *common]) == 0
    erfnet_weights = tmp_path / "e" / "erfnet.safetensors"
    assert cli.main(["train", "--model", "lmanet_erfnet", "--init", str(erfnet_weights),
                     "--memory-length", "2", "--out", str(tmp_path / "l"), *common]) == 0
    weights = tmp_path / "l" / "lmanet_erfnet.safetensors"
    model = build_model("lmanet_erfnet", memory_length=2)
    report = load_checkpoint(model, weights)  # strict
    meta = report.metadata
    assert meta["model"] == "lmanet_erfnet" and meta["memory_length"] == 2
    assert meta["clip_length"] == 3 and meta["images_seen"] == 8
    assert meta["classes"]["names"] == list(CITYSCAPES_CLASS_NAMES)
    assert len(meta["classes"]["colors"]) == 19 and meta["normalisation"] is None
    assert 0.0 <= meta["val_miou"] <= 1.0
    assert meta["training_command"].startswith("lmanet train --model lmanet_erfnet --data ")
    assert f"--init {erfnet_weights}" in meta["training_command"]
    with safe_open(str(weights), "pt") as handle:
        assert handle.get_tensor("kv_M_r4.Key.weight").dtype == torch.float16
    saved = checkpoint_state(tmp_path / "l")["model"]
    loaded = model.state_dict()
    for key in saved:  # the fp16 file holds the trained weights
        assert torch.allclose(loaded[key].float(), saved[key].float(), rtol=1e-3, atol=1e-3)
    (entry,) = read_log(tmp_path / "l")
    assert set(entry) >= {"epoch", "loss", "val_miou", "lr", "images_seen", "seconds"}
    assert entry["val_miou"] == meta["val_miou"]


def test_training_command_reproduces_the_config():
    import shlex

    from lmanet_ros.tools.train import config_from_args

    argv = ["train", "--model", "lmanet_erfnet", "--data", "/data/synth x", "--out", "o",
            "--init", "e.safetensors", "--val-split", "", "--size", "64x128", "--max-images",
            "100", "--threads", "1", "--no-progress"]
    config = config_from_args(cli.build_parser().parse_args(argv))
    assert "--clip-length 4 " in config.command and "--first-target 4 " in config.command
    again = config_from_args(cli.build_parser().parse_args(shlex.split(config.command)[1:]))
    differences = {k for k, v in again.to_json().items() if config.to_json()[k] != v}
    assert differences == {"threads", "progress"}  # not part of what is trained
    assert again.command == config.command


def test_cli_reports_errors(data, tmp_path, capsys):
    assert cli.main(["train", "--model", "lmanet_erfnet", "--data", str(data),
                     "--out", str(tmp_path), "--workers", "0"]) == 2
    assert "--init" in capsys.readouterr().err
    assert cli.main(["train", "--model", "erfnet", "--data", str(tmp_path / "none"),
                     "--out", str(tmp_path), "--workers", "0"]) == 2
    assert "missing folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "erfnet", "--data", str(data), "--out", str(tmp_path),
                  "--size", "30x64"])


@pytest.mark.slow
def test_cli_ddp_procs_spawns_gloo_processes(data, erfnet_init, tmp_path):
    out = tmp_path / "ddp"
    assert cli.main(["train", "--model", "lmanet_erfnet", "--init", str(erfnet_init),
                     "--data", str(data), "--out", str(out), "--epochs", "1",
                     "--batch-size", "2", "--workers", "0", "--no-progress", "--val-split", "",
                     "--ddp-procs", "2", "--backend", "gloo"]) == 0
    (entry,) = read_log(out)
    assert (entry["epoch"], entry["complete"], entry["images_seen"]) == (1, True, 8)
    meta = load_checkpoint(build_model("lmanet_erfnet", memory_length=3),
                           out / "lmanet_erfnet.safetensors").metadata
    assert meta["images_seen"] == 8 and "--ddp-procs 2" in meta["training_command"]
