"""``benchmarks/soak.py`` in its 2,000-frame form (issue 17; CI runs it, about 1.5 min here): two
cameras of 64x128 through a real ``lmanet_node`` over DDS, every output subscribed, parameter
changes and resets at random. Its correctness figures must be met (no crash, resident memory
growth at most 20 MB and a flat thread count from the first to the last 500 frames, windows
without events; every frame published or counted as dropped, only the resets it caused); the
CPU drift of the processing thread is a speed figure, reported but not asserted. Also: the
processing thread's CPU time that the node's counters record (``worker_cpu_s`` of
/diagnostics)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ros_helpers import ROOT, child_env
from lmanet_ros.node.stats import CameraStats
from lmanet_ros.streams import StreamStats

FRAMES = 2000


@pytest.mark.ros
def test_soak_of_2000_frames_meets_the_correctness_figures(tmp_path):
    out, picture = tmp_path / "soak.json", tmp_path / "soak.png"
    # a fixed rate (per camera) bounds the run (~75 s): the automatic rate, measured at start,
    # fell to a few Hz on a loaded machine and the run past its time limit
    command = [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--frames", str(FRAMES),
               "--rate", "14", "--window", "500", "--json", str(out), "--plot", str(picture)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=child_env(), cwd=str(tmp_path), start_new_session=True) as running:
        try:
            stdout, stderr = running.communicate(timeout=280)
        except subprocess.TimeoutExpired:
            os.killpg(running.pid, signal.SIGKILL)  # the soak and the node it started
            raise
    proc = subprocess.CompletedProcess(command, running.returncode, stdout, stderr)
    print(proc.stdout[-4000:])
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    figures = result["figures"]
    missed = {name: fig for name, fig in figures.items()
              if fig["kind"] == "correctness" and not fig["met"]}
    assert not missed, missed
    assert (proc.returncode == 0) == all(fig["met"] for fig in figures.values())
    accounting = result["accounting"]
    assert set(accounting) == {"cam0", "cam1"}
    assert sum(camera["sent"] for camera in accounting.values()) == FRAMES
    for camera in accounting.values():
        assert camera["received"] + camera["lost"] == camera["sent"]
        assert camera["sent"] == camera["published"] + camera["dropped"] + camera["lost"]
        assert camera["complete"] == camera["published"] == camera["processed"]
    rows = result["rows"]
    assert [row["frames"] for row in rows] == [500] * 4
    assert all(row["cpu_ms_per_frame"] > 0 and row["threads_max"] > 0 for row in rows)
    events = result["events"]
    assert {event["kind"] for event in events} <= {"parameter", "reset"}
    # the first and the last window are quiet; the parameters are restored once before the last
    assert all(500 <= event["frame"] < 2000 - 500 for event in events), events
    restores = [event for event in events if "restore" in event]
    assert len(restores) == 1 and restores[0]["frame"] >= 2000 - 500 - soak_module().RESTORE_MARGIN
    assert restores[0]["restore"]["memory.stride"] == 1
    assert len(result["samples"]) > 10
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "first 500" in proc.stdout and "frames_unaccounted" in proc.stdout


def test_worker_cpu_time_is_the_processing_threads():
    """``on_processed`` records the CPU time of the thread that calls it, not of the process."""
    stats = CameraStats()
    assert stats.roll().worker_cpu_s is None
    recorded = {}

    def worker() -> None:
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:  # 50 ms of CPU on this thread
            pass
        stats.on_processed(1, 1.0, 1.0, 1.0, StreamStats())
        recorded["cpu_s"] = time.thread_time()

    thread = threading.Thread(target=worker)
    idle_main = time.thread_time()
    thread.start()
    thread.join()
    value = stats.roll().worker_cpu_s
    assert 0.05 <= value <= recorded["cpu_s"]
    assert time.thread_time() - idle_main < 0.05  # the main thread only waited


def soak_module():
    """``benchmarks/soak.py`` as a module."""
    sys.path.insert(0, str(Path(ROOT) / "benchmarks"))
    import soak
    return soak


def test_soak_refuses_too_few_frames_for_quiet_first_and_last_windows():
    with pytest.raises(SystemExit):
        soak_module().main(["--frames", "3000"])  # 3 windows of 1000 + the restore margin
