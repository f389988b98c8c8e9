"""Progress where no terminal is (plain periodic lines) and the default CPU thread count."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eval_helpers import IMAGE, LABELS, write_scene_bag

from lmanet_ros import progress as progress_module
from lmanet_ros.progress import INTERVAL_ENV, PlainProgress, progress
from lmanet_ros.threads import (MAX_DEFAULT_THREADS, available_cpus, default_cpu_threads,
                                physical_cores, resolve_cpu_threads)


class FakeClock:
    """Seconds that advance only when told (the progress lines' timing, exactly)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_start_every_interval_and_end():
    clock, out = FakeClock(), io.StringIO()
    bar = PlainProgress(400, "eval", interval=10.0, stream=out, clock=clock)
    for _ in range(119):
        clock.now += 0.25
        bar.update(1)
    assert len(out.getvalue().splitlines()) == 3  # started, at 10 s, at 20 s (29.75 s now)
    clock.now += 0.25
    bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0] == "eval: started, 400 frames"
    assert lines[-1] == ("eval: 120/400 frames (30 %), 4.0 frames/s, 30 s elapsed, "
                         "about 1 min 10 s left")
    bar.set_postfix(loss="0.41")
    bar.close()
    bar.close()  # once only
    lines = out.getvalue().splitlines()
    assert len(lines) == 5
    assert lines[-1] == "eval: 120/400 frames (30 %), 4.0 frames/s, 30 s elapsed, loss 0.41, done"


def test_unknown_total_and_no_periodic_lines():
    clock, out = FakeClock(), io.StringIO()
    with PlainProgress(None, "replay", interval=0, stream=out, clock=clock) as bar:
        for _ in range(1000):
            clock.now += 1.0
            bar.update()
    assert out.getvalue().splitlines() == [
        "replay: started", "replay: 1000 frames, 1.0 frames/s, 16 min 40 s elapsed, done"]


def test_progress_is_plain_when_stderr_is_no_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    bar = progress(3, "synth")
    assert isinstance(bar, PlainProgress) and bar.interval == 2.5
    monkeypatch.setenv(INTERVAL_ENV, "not a number")
    assert progress(3, "synth").interval == progress_module.DEFAULT_INTERVAL_S


def test_a_piped_eval_prints_progress_lines(tmp_path: Path):
    """`lmanet eval` with stderr into a pipe (a CI log) says how far it is while it runs."""
    bag = write_scene_bag(tmp_path / "bag", n=6)
    env = dict(os.environ, **{INTERVAL_ENV: "0.001"})
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lmanet"), "eval", str(bag), "--out",
         str(tmp_path / "out"), "--model", "erfnet", "--checkpoint", "demo", "--no-video",
         "--image-topic", IMAGE, "--label-topic", LABELS,
         "--no-plots", "--num-threads", "1"],
        capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("eval: ")]
    assert lines[0] == "eval: started, 6 frames", done.stderr
    assert any(line.startswith("eval: 3/6 frames (50 %)") for line in lines), lines
    assert lines[-1].startswith("eval: 6/6 frames (100 %)") and lines[-1].endswith(", done")


def test_physical_cores_count_hyperthread_siblings_once(tmp_path: Path):
    # cpu0/cpu2 and cpu1/cpu3 are siblings of cores 0 and 1 of one package.
    for cpu, core in ((0, 0), (1, 1), (2, 0), (3, 1)):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "core_id").write_text(f"{core}\n")
        (topology / "physical_package_id").write_text("0\n")
    assert physical_cores([0, 1, 2, 3], tmp_path) == 2
    assert physical_cores([0, 2], tmp_path) == 1
    assert physical_cores([0, 1, 7], tmp_path) == 3  # no topology for cpu7: count CPUs


def test_default_threads_follow_affinity_and_cap():
    expected = max(1, min(MAX_DEFAULT_THREADS, physical_cores(available_cpus())))
    assert default_cpu_threads() == expected
    assert resolve_cpu_threads(0) == expected
    assert resolve_cpu_threads(3) == min(3, len(available_cpus()))  # at most the CPUs
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        resolve_cpu_threads(-1)
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from lmanet_ros.threads import default_cpu_threads, apply_cpu_threads; "
            "import torch; print(default_cpu_threads(), apply_cpu_threads(0), "
            "torch.get_num_threads())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split() == ["1", "1", "1"]  # one CPU allowed: one thread
