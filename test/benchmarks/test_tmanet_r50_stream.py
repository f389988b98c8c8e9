"""``benchmarks/tmanet_r50_stream.py`` on a tiny run (33x65, 3 frames, one round): its rows, the
no-memory network's logits shape, the JSON. Timings themselves are not checked."""
import json
import sys
from pathlib import Path

import torch
from models_helpers import one_cpu_thread  # noqa: F401 (autouse fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import tmanet_r50_stream  # noqa: E402


def test_tiny_run_prints_the_rows_and_writes_json(tmp_path, capsys):
    path = tmp_path / "tmanet.json"
    assert tmanet_r50_stream.main(["--size", "33x65", "--frames", "3", "--repeats", "1",
                                   "--warmup", "0", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stream" in out and "no-memory" in out and "offline" in out
    result = json.loads(path.read_text())
    assert [row["row"] for row in result["rows"]] == ["stream", "no-memory", "offline"]
    assert result["stream"]["frames"] == 3
    assert result["stream"]["memory_bytes"] == 3 * (64 + 256) * 5 * 9 * 4  # T(T+1)/2 projections
    assert result["rows"][1]["ratio"] == 1.0 and "ratio_pass" in result["rows"][0]


def test_no_memory_network_gives_logits_of_the_input_size():
    model = tmanet_r50_stream.build_tmanet_r50().eval()
    with torch.inference_mode():
        logits = tmanet_r50_stream.no_memory_step(model, torch.rand(1, 3, 20, 30))
    assert logits.shape == (1, 20, 20, 30)
