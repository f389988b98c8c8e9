"""benchmarks/gpu_check.sh parses, and benchmarks/gpu_pipeline.py runs on the CPU (tiny frames,
CUDA rows skipped) with the rows and bounds issue 16 asks for. Timings themselves are not
checked."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_pipeline  # noqa: E402


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for needed in ("python3 --version", "nvidia-smi", "pip list", "LMANET_WHEELS", "timeout",
                   "test_attention_triton.py", "test_pipeline_cuda.py", "gpu_pipeline.py"):
        assert needed in text


def test_benchmark_runs_on_the_cpu_with_cuda_rows_skipped(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert gpu_pipeline.main(["--device", "cpu", "--size", "64x128", "--warmup", "1",
                              "--repeats", "2", "--memory-length", "2", "--json",
                              str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {row["row"]: row for row in report["rows"]}
    assert set(rows) == {"erfnet fp32 eager labels", "erfnet fp32 eager all",
                         "lmanet_erfnet fp32 eager all", "cuda rows",
                         "cpu render (colour, overlay, mono8 confidence)"}
    for name in ("erfnet fp32 eager labels", "erfnet fp32 eager all"):
        row = rows[name]
        assert row["step_ms"] > 0 and row["wall_ms"] >= row["step_ms"]
        assert row["fps"] > 0 and row["pipelined_fps"] > 0
        assert row["host_ms"] == pytest.approx(row["wall_ms"] - row["step_ms"], abs=5.0)
        assert "fps_bound" not in row and "host_pass" not in row  # GPU bounds only
    assert "adds_ms" in rows["lmanet_erfnet fp32 eager all"]
    assert rows["cuda rows"]["skipped"] and report["environment"]["device"] == "cpu"
    assert "cuda rows: skipped" in capsys.readouterr().out


def test_gpu_bounds_apply_to_fp16_graph_rows_with_every_output():
    row = {"precision": "fp16", "cuda_graphs": True, "outputs": "all", "model": "erfnet",
           "step_ms": 2.0, "host_ms": 1.0, "fps": 300.0, "pipelined_fps": 400.0}
    gpu_pipeline.check_limits(row, True, (512, 1024))
    assert row["fps_bound"] == pytest.approx(450.0) and not row["fps_pass"]
    assert row["host_limit_ms"] == 3.0 and row["host_pass"]
    eager = dict(row, cuda_graphs=False, fps=500.0)
    for key in ("fps_bound", "fps_pass", "host_limit_ms", "host_pass"):
        eager.pop(key)
    gpu_pipeline.check_limits(eager, True, (512, 1024))
    assert "fps_bound" not in eager
    small = {k: row[k] for k in ("precision", "cuda_graphs", "outputs", "model", "step_ms",
                                 "host_ms", "fps", "pipelined_fps")}
    gpu_pipeline.check_limits(small, True, (256, 512))
    assert "fps_bound" in small and "host_limit_ms" not in small
