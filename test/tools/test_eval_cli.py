"""`lmanet eval` / `replay` / `score` as commands: flags to options, exit codes and messages.
What the evaluation computes is tested on the library (test/evaluation)."""
from pathlib import Path

import pytest

from eval_helpers import IMAGE, LABELS, interrupt_at_call, load
from eval_helpers import identity  # noqa: F401 (a fixture, see usefixtures)
from eval_helpers import write_scene_bag as write_bag
from lmanet_ros.tools import cli
from lmanet_ros.tools import eval as eval_tool
from lmanet_ros.tools import replay as replay_tool


def run_eval(bag, out, *extra):
    return cli.main(["eval", str(bag), "--out", str(out), "--model", "lmanet_erfnet",
                     "--device", "cpu", "--no-video", "--no-plots", "--random-weights", *extra])


@pytest.mark.parametrize("extra, message", [
    (["--image-topic", "/nope"], "not an image topic"),
    (["--label-topic", "/nope"], "label topic '/nope'"),
    (["--image-topic", IMAGE, "--label-topic", IMAGE], "both"),
    (["--stride", "0"], "--stride"),
])
@pytest.mark.usefixtures("identity")
def test_errors_are_reported(tmp_path, capsys, extra, message):
    bag = write_bag(tmp_path / "bag", n=2)
    assert run_eval(bag, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("identity")
def test_existing_output_bag_is_refused(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", n=2)
    (tmp_path / "taken").mkdir()
    assert run_eval(bag, tmp_path / "out", "--image-topic", IMAGE,
                    "--output-bag", str(tmp_path / "taken")) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.usefixtures("identity")
def test_ctrl_c_exits_130_with_a_partial_report(tmp_path, monkeypatch, capsys):
    bag = write_bag(tmp_path / "bag", n=4)
    interrupt_at_call(monkeypatch, 3)
    assert run_eval(bag, tmp_path / "out", "--label-topic", LABELS) == 130
    assert load(tmp_path / "out")["partial"] is True
    assert "partial: interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("argv, names, hint", [
    (["--model", "erfnet"], "erfnet", "--checkpoint demo"),
    (["--model", "pspnet50"], "pspnet50", None),
    (["--model", "erfnet", "--checkpoint", "w.pth", "--compare", "lmanet_erfnet", "erfnet:x"],
     "lmanet_erfnet", "--compare lmanet_erfnet:demo"),
])
def test_models_without_weights_are_refused_with_the_way_to_the_demo(
        tmp_path, capsys, argv, names, hint):
    bag = write_bag(tmp_path / "bag", n=2)
    assert cli.main(["eval", str(bag), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint for {names}: they would run on random weights" in err
    assert "--random-weights" in err
    assert (hint in err) if hint else ("demo weights" not in err)
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("identity")
def test_random_weights_when_asked_are_warned_about(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", n=2)
    assert run_eval(bag, tmp_path / "out", "--image-topic", IMAGE, "--label-topic", LABELS) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().err


def test_eval_flags_are_the_options():
    args = cli.build_parser().parse_args(
        ["eval", "b", "--out", "o", "--model", "lmanet_erfnet", "--compare", "erfnet:demo",
         "--image-topic", "/a", "/b", "--label-topic", LABELS, "--label-ids", "--stride", "2",
         "--input-size", "64x128", "--memory-length", "3", "--max-gap", "0.5", "--no-video",
         "--output-bag", "ob"])
    options = eval_tool.options_from_args(args)
    assert (options.bag, options.out, options.output_bag) == (Path("b"), Path("o"), Path("ob"))
    assert [(s.name, s.checkpoint, s.label) for s in options.specs] == [
        ("lmanet_erfnet", None, "lmanet_erfnet"), ("erfnet", "demo", "erfnet")]
    assert options.image_topics == ["/a", "/b"] and options.label_topic == LABELS
    assert options.label_ids and options.stride == 2 and options.input_size == (64, 128)
    assert options.memory_length == 3 and options.max_gap == 0.5
    assert not options.video and options.plots
    defaults = eval_tool.options_from_args(cli.build_parser().parse_args(
        ["eval", "b", "--out", "o", "--model", "erfnet"]))
    assert defaults.input_size is None and defaults.memory_length is None
    assert (defaults.clean_topic, defaults.corruption_topic, defaults.memory_check) == (
        "auto", "auto", True)


def test_corruption_flags_are_the_options():
    args = cli.build_parser().parse_args(
        ["eval", "b", "--out", "o", "--model", "erfnet", "--clean-topic", "none",
         "--corruption-topic", "/cam/corruption", "--no-memory-check"])
    options = eval_tool.options_from_args(args)
    assert options.clean_topic is None and options.corruption_topic == "/cam/corruption"
    assert options.memory_check is False


def test_node_labels_and_ground_truth_flags_cannot_be_confused(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["replay", "b", "--node-labels-topic", "/l/labels", "/r/labels",
                              "--label-topic", LABELS, "--score-out", "o"])
    options = replay_tool.options_from_args(args)
    assert options.node_labels_topics == ["/l/labels", "/r/labels"]
    assert options.label_topic == LABELS and options.max_gap == 1.0
    assert replay_tool.options_from_args(parser.parse_args(["replay", "b"])) \
        .node_labels_topics == ["/lmanet/labels"]
    score = parser.parse_args(["score", "b", "--out", "o", "--node-labels-topic", "/n/labels"])
    assert score.node_labels_topic == "/n/labels" and score.label_topic is None
    for command in ("score", "replay"):   # the confusable old spelling is gone, not aliased
        with pytest.raises(SystemExit):
            parser.parse_args([command, "b", "--out", "o", "--labels-topic", "/n/labels"])
        assert "--labels-topic" in capsys.readouterr().err
