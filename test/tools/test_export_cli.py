"""`lmanet export` (lmanet_ros.tools.export): the command writes verified ONNX graphs with
metadata; the library behind it is tested in test/runtime."""
from __future__ import annotations

from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.runtime import read_metadata
from lmanet_ros.tools import cli


def test_export_writes_the_graph_and_prints_its_path(tmp_path, capsys):
    out = tmp_path / "erfnet.onnx"
    assert cli.main(["export", "erfnet", "--checkpoint", "demo", "--format", "onnx", "--out",
                     str(out), "--input-size", "64x128"]) == 0
    assert capsys.readouterr().out.split() == [str(out)]
    meta = read_metadata(out)
    assert meta["input_size"] == [64, 128] and meta["fill_levels"] == [0]


def test_export_errors_exit_2_with_the_reason(tmp_path, capsys):
    assert cli.main(["export", "erfnet", "--checkpoint", str(tmp_path / "missing.pt"),
                     "--out", str(tmp_path / "x.onnx")]) == 2
    assert "lmanet export: error:" in capsys.readouterr().err
