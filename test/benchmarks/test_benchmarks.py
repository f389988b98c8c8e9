"""The benchmark scripts' options, on tiny runs (64x128, a few frames, one repeat): what issue 11's
table and stream check need (``--models all``, each model's own T, memory per stream, a T that
does not fit, TDNet's ratio bound, RSS growth PASS/FAIL). Timings themselves are not checked."""
import json
import sys
from pathlib import Path

import pytest
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

from lmanet_ros.models import list_models, model_entry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import model_latency  # noqa: E402
import stream_rss  # noqa: E402

TINY = ["--sizes", "64x128", "--device", "cpu", "--threads", "1", "--repeats", "1",
        "--warmup", "0", "--attention-cases", "none"]


def test_all_is_erfnet_and_every_temporal_model_on_it():
    everything = model_latency.build_parser().parse_args(["--models", "all"]).models
    assert everything[0] == "erfnet" and len(everything) == len(set(everything))
    temporal = [n for n in list_models() if model_entry(n).temporal and n.endswith("_erfnet")]
    assert set(everything) == {"erfnet", *temporal}
    assert {"lmanet_erfnet", "tmanet_erfnet", "tdnet_erfnet", "stf_erfnet",
            "stf_mar_erfnet"} <= set(everything)
    assert stream_rss.build_parser().parse_args(["--models", "all"]).models == everything
    assert model_latency.base_of("stf_mar_erfnet") == "erfnet"
    assert model_latency.base_of("lmanet_pspnet101") == "pspnet101"
    assert model_latency.base_of("erfnet") is None


def test_a_length_that_does_not_fit_runs_at_the_default_and_says_so():
    built = model_latency.build_models(["stf_erfnet", "tdnet_erfnet"], [1, 3])
    assert list(built) == [("stf_erfnet", 1), ("stf_erfnet", 2), ("tdnet_erfnet", 1),
                           ("tdnet_erfnet", 3)]
    assert [model.memory_length for model, _ in built.values()] == [1, 2, 1, 3]
    assert built["stf_erfnet", 2][1] == "asked T=3: does not fit, runs at its default"
    assert built["tdnet_erfnet", 3][1] == ""
    defaults = model_latency.build_models(["erfnet", "tmanet_erfnet"], None)
    assert list(defaults) == [("erfnet", 0), ("tmanet_erfnet", 2)]


def test_every_model_of_the_family_gets_a_row_with_its_memory_per_stream(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert model_latency.main(["--models", "all", "--no-memory", *TINY, "--json", str(out)]) == 0
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(model_latency.family())
    for name, row in rows.items():
        entry = model_entry(name)
        assert row["T"] == (entry.default_memory_length if entry.temporal else 0)
        assert (row["memory_bytes"] > 0) == entry.temporal
        assert row["ratio"] > 0 and (row["base"] == "erfnet") == entry.temporal
    # LMANet at T = 4, 64x128: keys (16) and values (64) of 8x16 features, float32.
    assert rows["lmanet_erfnet"]["memory_bytes"] == 4 * (16 + 64) * 8 * 16 * 4
    assert rows["tdnet_erfnet"]["ratio_limit"] == 0.6
    assert rows["tdnet_erfnet"]["ratio_pass"] == (rows["tdnet_erfnet"]["ratio"] <= 0.6)
    table = capsys.readouterr().out
    assert "stream MB" in table and "<=0.60x" in table


def test_memory_lengths_and_the_step_peak_in_one_tiny_run(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert model_latency.main(["--models", "stf_erfnet", "--memory-lengths", "3", *TINY,
                               "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["model"], row["T"]) for row in rows] == [("erfnet", 0), ("stf_erfnet", 2)]
    stf = rows[1]
    assert stf["note"] == "asked T=3: does not fit, runs at its default"
    assert stf["memory_bytes"] == 2 * 128 * 8 * 16 * 4  # two frames of raw 128-channel features
    assert stf["peak_step_mb"] > 0 and "extra_over_base_mb" in stf
    assert "does not fit" in capsys.readouterr().out


def test_stream_rss_reports_the_growth_of_each_model(tmp_path, capsys):
    out = tmp_path / "rss.json"
    assert stream_rss.main(["--models", "erfnet,tdnet_erfnet,stf_mar_erfnet", "--size", "64x128",
                            "--frames", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(row["model"], row["T"], row["frames"]) for row in rows] == [
        ("erfnet", 0, 3), ("tdnet_erfnet", 3, 3), ("stf_mar_erfnet", 2, 3)]
    assert all(row["status"] == "PASS" and row["max_growth_mb"] == 20.0 for row in rows)
    assert "< 20 MB" in capsys.readouterr().out


def test_a_failed_stream_is_an_error_row(monkeypatch):
    monkeypatch.setattr(stream_rss, "PROBE", "raise SystemExit('boom')")
    row = stream_rss.stream("erfnet", (64, 128), 3, 1, 1)
    assert (row["model"], row["status"], row["error"]) == ("erfnet", "ERROR", "boom")


def test_stream_rss_exits_1_on_growth_or_an_error(monkeypatch, capsys):
    rows = {"erfnet": {"model": "erfnet", "T": 0, "rss_warm_mb": 300.0, "rss_end_mb": 330.0,
                       "growth_mb": 30.0, "ms_per_frame": 1.0},
            "tdnet_erfnet": {"model": "tdnet_erfnet", "status": "ERROR", "error": "boom"}}
    monkeypatch.setattr(stream_rss, "stream", lambda name, *args: dict(rows[name]))
    assert stream_rss.main(["--models", "erfnet,tdnet_erfnet", "--frames", "3"]) == 1
    table = capsys.readouterr().out
    assert "FAIL" in table and "ERROR: boom" in table


@pytest.mark.parametrize("argv", [["--frames", "3", "--warmup", "3"], ["--models", "none"],
                                  ["--models", "nope"]])
def test_stream_rss_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit) as error:
        stream_rss.main(argv)
    assert error.value.code == 2
