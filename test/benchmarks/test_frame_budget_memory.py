"""benchmarks/frame_budget_memory.py on a tiny run: one row per configuration, the network size
of an own-size row is the frame's, the per-pixel figures divide by the right pixel counts."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import frame_budget_memory  # noqa: E402


def test_rows_per_configuration(tmp_path, capsys):
    out = tmp_path / "budget.json"
    assert frame_budget_memory.main(["--model", "erfnet", "--frames", "128x256", "--network",
                                     "32x64", "--own", "64x128", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["frame"], r["network"]) for r in rows] == [("128x256", "32x64"),
                                                          ("64x128", "64x128")]
    for row, (frame_px, net_px) in zip(rows, [(128 * 256, 32 * 64), (64 * 128, 64 * 128)]):
        growth = row["growth_mb"] * 2**20
        assert growth >= 0
        assert abs(row["bytes_per_frame_pixel"] * frame_px - growth) < 1e-3
        assert abs(row["bytes_per_network_pixel"] * net_px - growth) < 1e-3
    assert "B/frame px" in capsys.readouterr().out
