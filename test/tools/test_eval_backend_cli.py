"""`lmanet eval --backend`: the flag reaches the evaluation's options; a backend that cannot run
is an error line and exit code 2 (what the backends compute: test/runtime)."""
from __future__ import annotations

import sys

import pytest

from eval_helpers import IMAGE, write_scene_bag
from lmanet_ros.tools import cli
from lmanet_ros.tools import eval as eval_tool


def _args(*extra: str):
    return cli.build_parser().parse_args(["eval", "bag", "--out", "out", "--model", "erfnet",
                                          "--checkpoint", "demo", *extra])


def test_the_flag_reaches_the_options():
    assert eval_tool.options_from_args(_args()).backend == "torch"
    assert eval_tool.options_from_args(_args("--backend", "openvino")).backend == "openvino"


def test_an_unknown_backend_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exited:
        _args("--backend", "tensorrt")
    assert exited.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["--backend", "onnxruntime", "--device", "cuda"],
     "onnxruntime backend runs on the CPU, not cuda"),
    (["--backend", "onnxruntime", "--precision", "bf16"], "computes in fp32, not bf16"),
    (["--backend", "openvino", "--live"], "set its backend parameter"),
])
def test_a_backend_that_cannot_run_is_an_error_line(tmp_path, capsys, extra, words):
    bag = write_scene_bag(tmp_path / "bag", n=2)
    code = cli.main(["eval", str(bag), "--out", str(tmp_path / "out"), "--model", "erfnet",
                     "--checkpoint", "demo", "--image-topic", IMAGE, *extra])
    assert code == 2 and words in capsys.readouterr().err


def test_a_missing_backend_package_is_an_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    bag = write_scene_bag(tmp_path / "bag", n=2)
    code = cli.main(["eval", str(bag), "--out", str(tmp_path / "out"), "--model", "erfnet",
                     "--checkpoint", "demo", "--image-topic", IMAGE, "--backend", "openvino"])
    assert code == 2 and "pip install openvino" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()
