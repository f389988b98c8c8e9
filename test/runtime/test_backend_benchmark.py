"""benchmarks/backend_latency.py on a tiny run (64x128, T = 2, one round): a row per backend and
model with the ratios to both torch rows. Timings themselves are not checked."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)
from runtime_helpers import MEMORY_LENGTH, SIZE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import backend_latency  # noqa: E402


def test_one_run_times_every_backend_with_ratios_to_torch(tmp_path, capsys, graph_cache):
    out = tmp_path / "out.json"
    assert backend_latency.main([
        "--size", f"{SIZE[0]}x{SIZE[1]}", "--memory-length", str(MEMORY_LENGTH), "--repeats",
        "1", "--warmup", "0", "--cache-dir", str(graph_cache), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["backend"]) for r in rows] == [
        (model, backend) for model in ("erfnet", "lmanet_erfnet")
        for backend in backend_latency.ROWS]
    timed = [row for row in rows if "step_ms" in row]
    assert all(row["ratio_to_torch-plain"] > 0 for row in timed)
    assert "onnxruntime" in capsys.readouterr().out
