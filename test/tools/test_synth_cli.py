"""Tests of the ``lmanet synth`` command (lmanet_ros.tools.synth): its parser and what it writes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lmanet_ros import bags
from lmanet_ros import synthetic as synth
from lmanet_ros.bags import list_image_topics, pair_images_and_labels
from lmanet_ros.synthetic import HELDOUT_SEEDS, SEQUENCE_GAP_S, SynthSequence
from lmanet_ros.tools import cli
from lmanet_ros.tools import synth as synth_tool
import synthetic_helpers
from synthetic_helpers import H, W


def _cli(*argv: str) -> int:
    return cli.main(["synth", *argv])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_cli_writes_bag_and_folder(tmp_path, storage, capsys):
    out = tmp_path / "data"
    frames = 6
    assert _cli(str(out), "--frames", str(frames), "--size", f"{H}x{W}", "--sequences", "2",
                "--seed", "40", "--storage", storage, "--corruption", "standard") == 0
    printed = capsys.readouterr().out
    bag = out / "bag_synth00040"
    assert str(bag) in printed and "sequences.json" in printed
    assert (bag / "metadata.yaml").is_file()
    assert list(bag.glob("*.mcap" if storage == "mcap" else "*.db3"))

    topics = list_image_topics(bag)
    # a corrupted recipe also records each frame's clean version (the evaluation's reference)
    assert topics == {synth.IMAGE_TOPIC: ("sensor_msgs/msg/Image", 2 * frames),
                      synth.IMAGE_TOPIC + "_clean": ("sensor_msgs/msg/Image", 2 * frames),
                      synth.LABEL_TOPIC: ("sensor_msgs/msg/Image", 2 * frames)}
    pairs = list(pair_images_and_labels(bag, synth.IMAGE_TOPIC, synth.LABEL_TOPIC))
    assert len(pairs) == 2 * frames
    stamps = [record.stamp_ns for record, _ in pairs]
    gaps = np.diff(stamps) / 1e9
    assert np.all(gaps > 0)
    assert gaps[frames - 1] >= SEQUENCE_GAP_S and np.all(np.delete(gaps, frames - 1) < 0.1)
    for position, (record, label) in enumerate(pairs):
        assert record.frame_id == "camera" and record.encoding == "rgb8"
        assert label is not None and label.shape == (H, W)
        seq_name = f"synth{40 + position // frames:05d}"
        stem = f"{seq_name}/{seq_name}_{position % frames:06d}"
        image = cv2.imread(str(out / "leftImg8bit" / "train" / f"{stem}_leftImg8bit.png"))
        labels = cv2.imread(str(out / "gtFine" / "train" / f"{stem}_gtFine_labelTrainIds.png"),
                            cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), record.image)
        np.testing.assert_array_equal(labels, label)
        expected = SynthSequence(40 + position // frames, height=H, width=W, n_frames=frames,
                                 corruption="standard").frame(position % frames)
        np.testing.assert_array_equal(expected.image, record.image)
        np.testing.assert_array_equal(expected.labels, label)

    description = json.loads((out / "sequences.json").read_text())
    (run,) = description["runs"]
    assert run["size"] == [H, W] and run["rate_hz"] == 17.0 and run["corruption"] == "standard"
    assert run["corruption_recipe"] == synth.CORRUPTION_RECIPE
    assert run["storage"] == storage and run["bag"] == "bag_synth00040"
    assert [s["seed"] for s in run["sequences"]] == [40, 41]
    assert run["sequences"][0]["first_stamp_ns"] == stamps[0]
    assert run["train_seeds"] == [0, 1000] and run["heldout_seeds"] == [10000, 10016]


def test_cli_merges_a_heldout_run_and_refuses_repeats(tmp_path, capsys):
    out = tmp_path / "data"
    assert _cli(str(out), "--frames", "3", "--size", f"{H}x{W}", "--no-bag") == 0
    assert _cli(str(out), "--frames", "3", "--size", f"{H}x{W}", "--seed",
                str(HELDOUT_SEEDS[0]), "--no-folder") == 0
    assert _cli(str(out), "--frames", "3", "--size", f"{H}x{W}", "--seed",
                str(HELDOUT_SEEDS[1]), "--no-bag") == 0
    assert (out / "leftImg8bit" / "train" / "synth00000").is_dir()
    assert (out / "gtFine" / "val" / "synth10001").is_dir()
    assert not (out / "bag_synth00000").exists()
    assert (out / f"bag_synth{HELDOUT_SEEDS[0]:05d}" / "metadata.yaml").is_file()
    assert (out / f"bag_synth{HELDOUT_SEEDS[0]:05d}.json").is_file()
    runs = json.loads((out / "sequences.json").read_text())["runs"]
    assert [r["sequences"][0]["split"] for r in runs] == ["train", "val"]
    capsys.readouterr()
    # The same sequence again: refused, nothing overwritten.
    assert _cli(str(out), "--frames", "3", "--size", f"{H}x{W}", "--no-bag") == 2
    assert "already" in capsys.readouterr().err
    assert _cli(str(out), "--frames", "3", "--size", f"{H}x{W}", "--seed",
                str(HELDOUT_SEEDS[0]), "--no-folder") == 2
    assert "exists already" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--no-bag", "--no-folder"], "nothing to write"),
    (["--size", "16x16"], "height"),
])
def test_cli_rejects_bad_requests(tmp_path, argv, message, capsys):
    assert _cli(str(tmp_path / "x"), "--frames", "2", *argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--frames", "0"], ["--size", "64"], ["--seed", "-3"],
                                  ["--rate", "0"], ["--storage", "bag"], ["--corr", "none"]])
def test_parser_rejects_bad_flags(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["synth", "out", *argv])
    assert exit_info.value.code == 2


def test_parser_defaults():
    args = cli.build_parser().parse_args(["synth", "out"])
    assert args.handler is synth_tool.run
    assert (args.frames, args.size, args.sequences, args.seed) == (300, (256, 512), 1, 0)
    assert (args.storage, args.corruption, args.rate) == ("mcap", "none", 17.0)
    assert not args.no_bag and not args.no_folder


def test_flake8_clean():
    test_root = Path(__file__).resolve().parents[1]
    files = [*sorted(Path(synth.__file__).parent.glob("*.py")), Path(synth_tool.__file__),
             Path(__file__), *test_root.rglob("test_synth.py"), Path(synthetic_helpers.__file__),
             *test_root.rglob("test_bags.py"), Path(bags.__file__)]
    result = subprocess.run([sys.executable, "-m", "flake8", *map(str, files)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
