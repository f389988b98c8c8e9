"""lmanet_node under faults over real DDS (issue 17), each followed by a correct output for the
next good frame (labels and overlay of that frame: its header, its size, the overlay of its image
and labels):

- the camera publisher restarts (killed, then a new process: a new participant, same topic): the
  node resumes without a restart;
- a reliable subscriber of the outputs stalls (its process frozen with SIGSTOP): the other
  subscribers should keep at least 90 % of the rate and resident memory grow at most 20 MB over
  1,000 frames (slow: about 4 minutes; met in three runs on 2026-12-03, 0.94x to 1.43x the
  rate, +5 to +7 MB; the slowdown one earlier run measured, ~22 to ~211 ms a round trip, did not
  come back);
- use_sim_time with a /clock that starts at 0, pauses and jumps back (a bag loop): the memory is
  reset (reason ``time_jump_back``), no crash, diagnostics go on;
- the system clock of the node's process jumps back an hour and forward again (a preloaded shim
  moves CLOCK_REALTIME, as libfaketime would; libfaketime itself is not installed here): frames
  go on being segmented, diagnostics go on;

The two process-level faults of the issue (a second node with the same name; the node's outputs
remapped onto its input) are tested in test_node_process_faults.py.
"""
from __future__ import annotations

import statistics
import time

import psutil
import pytest

from fault_helpers import (ClockStream, assert_correct_outputs, build_clock_shim, camera_image,
                           set_clock_offset, shifted_time, start_camera, start_subscriber)
from process_helpers import failure_marks
from ros_helpers import Rig, make_image, resets, stamp_of, wait_until

pytestmark = pytest.mark.ros

SHAPE = (32, 64)
OUTPUTS = ("labels", "overlay")
#: Frames of the stalled-subscriber test, and its bounds (issue 17).
STALL_FRAMES = 1000
MIN_RATE_KEPT = 0.9
MAX_RSS_GROWTH_MB = 20.0
#: Participant lease of the stalling subscriber, seconds: the node keeps a frozen reader matched
#: this long (Fast DDS's default, 20 s, ends the stall before 1,000 frames on a slow machine).
STALL_LEASE_S = 600
#: Alternating blocks (subscriber running, then frozen) and their frames, for the rates.
RATE_BLOCKS = 3
RATE_BLOCK_FRAMES = 100
#: The 1,000 frozen frames fail early when they take this many times longer than before.
STALL_SLOWDOWN_LIMIT = 4.0


def send_good_frame(rig: Rig, stamp: float, seed: int = 5, frame_id: str = "good",
                    first: bool = False) -> dict:
    """Publish one frame and check its outputs (:func:`assert_correct_outputs`); the outputs.
    ``first``: the node's first frame, resent until it arrives (a best-effort sample written
    before the just-started node's reader matched this writer is lost: it failed CI runs)."""
    image = camera_image(SHAPE, seed)
    out = rig.send(make_image(image, stamp=stamp, frame_id=frame_id),
                   resend_every=2.0 if first else None)
    assert_correct_outputs(out, image, stamp, frame_id)
    return out


def assert_alive_and_clean(process) -> None:
    """The node runs and its log shows no traceback, abort or failed frame."""
    log = process.log()
    assert process.alive(), f"the node exited with {process.popen.returncode}:\n{log[-3000:]}"
    assert not failure_marks(log) and "processing failed" not in log, log[-3000:]


def stop(process) -> None:
    """SIGINT a node this test started; it must exit 0."""
    code = process.interrupt()
    process.expected_exit = True
    assert code == 0, process.log()[-3000:]


@pytest.fixture(scope="module")
def rig(ros, node_factory):
    """One node (live defaults) for the camera and subscriber faults."""
    node = node_factory(params={"diagnostics_period": 0.2})
    rig = Rig(ros, node, outputs=OUTPUTS)
    send_good_frame(rig, 1.0, first=True)
    return rig


def test_camera_publisher_restart_resumes_without_restart(rig):
    topic, pid = rig.node.input_topic(), rig.node.popen.pid
    labels = rig.outputs["labels"]
    first = start_camera(topic, SHAPE, start=100.0, rate=20.0, seed=1)
    try:
        labels.wait_for(3, 60.0, lambda m: 100.0 <= stamp_of(m) < 200.0)
    finally:
        first.kill()  # crashed: no goodbye on DDS
    second = start_camera(topic, SHAPE, start=200.0, rate=20.0, seed=2)
    try:
        resumed = labels.wait_for(3, 60.0, lambda m: stamp_of(m) >= 200.0)
    finally:
        second.kill()
    assert rig.node.popen.pid == pid
    assert_alive_and_clean(rig.node)
    overlays = {stamp_of(m): m for m in rig.outputs["overlay"].wait_for(
        1, 10.0, lambda m: stamp_of(m) == stamp_of(resumed[-1]))}
    assert_correct_outputs({"labels": resumed[-1], "overlay": overlays[stamp_of(resumed[-1])]},
                           camera_image(SHAPE, 2), stamp_of(resumed[-1]), "fault_camera")
    send_good_frame(rig, 300.0)


def round_trips(rig: Rig, frames: int, start: float) -> list[float]:
    """Seconds from publishing each of ``frames`` frames to the arrival of its outputs (the
    next frame sent once the previous one's arrived)."""
    image = camera_image(SHAPE, 3)
    times = []
    for index in range(frames):
        began = time.monotonic()
        rig.send(make_image(image, stamp=start + index * 0.05, frame_id="rate"))
        times.append(time.monotonic() - began)
    return times


@pytest.mark.slow
def test_stalled_reliable_subscriber_does_not_slow_the_others(rig, tmp_path):
    process = psutil.Process(rig.node.popen.pid)
    topics = [rig.node.topic(output) for output in OUTPUTS]
    stalled = start_subscriber(*topics, directory=tmp_path, lease_s=STALL_LEASE_S)
    try:
        wait_until(lambda: all(rig.ros.node.count_subscribers(t) >= 2 for t in topics), 20.0,
                   what="the stalling subscriber matched")
        before = round_trips(rig, RATE_BLOCK_FRAMES, start=400.0)  # its readers took frames
        stalled.freeze()
        rss_before = process.memory_info().rss / 2**20
        # 1,000 frames, unless they come far slower than before the stall (then fail, not wait)
        budget = STALL_FRAMES * statistics.mean(before) * STALL_SLOWDOWN_LIMIT
        began = time.monotonic()
        for block in range(0, STALL_FRAMES, 10):
            round_trips(rig, 10, start=500.0 + block * 0.05)
            elapsed = time.monotonic() - began
            assert elapsed <= budget, (
                f"with a frozen reliable subscriber, {block + 10} frames took {elapsed:.0f} s: "
                f"{(block + 10) / elapsed:.1f} Hz against {1 / statistics.mean(before):.1f} Hz "
                f"before it froze")
        rss_after = process.memory_info().rss / 2**20
        still_matched = all(rig.ros.node.count_subscribers(t) >= 2 for t in topics)
        # the rates with and without the stall, in alternating blocks: the load of a shared
        # machine changes over a minute, not between two blocks
        running, frozen = [], []
        for block in range(RATE_BLOCKS):
            stalled.thaw()
            time.sleep(0.3)
            running += round_trips(rig, RATE_BLOCK_FRAMES, start=600.0 + block * 20.0)
            stalled.freeze()
            frozen += round_trips(rig, RATE_BLOCK_FRAMES, start=610.0 + block * 20.0)
    finally:
        stalled.kill()
    kept = sum(running) / sum(frozen)  # rate = frames / time, the same frames in each
    print(f"node RSS {rss_before:.1f} -> {rss_after:.1f} MB over {STALL_FRAMES} frames with a "
          f"frozen reliable subscriber; lock-step rate with it frozen {kept:.2f}x the rate with "
          f"it running (round trip median {statistics.median(frozen) * 1e3:.0f} ms vs "
          f"{statistics.median(running) * 1e3:.0f} ms, longest {max(frozen) * 1e3:.0f} ms vs "
          f"{max(running) * 1e3:.0f} ms)")
    assert still_matched, "the frozen subscriber was unmatched during the test: no stall measured"
    assert rss_after - rss_before <= MAX_RSS_GROWTH_MB
    assert kept >= MIN_RATE_KEPT
    assert_alive_and_clean(rig.node)
    send_good_frame(rig, 700.0)


def test_sim_time_clock_from_zero_pausing_and_jumping_back(ros, node_factory):
    node = node_factory(params={"diagnostics_period": 0.2}, launch={"use_sim_time": "true"})
    clock = ClockStream(ros)  # from 0 s: the first frames are stamped 0.0x s
    try:
        rig = Rig(ros, node, outputs=OUTPUTS)
        image = camera_image(SHAPE, 4)

        def play(frames: int, resend_every: float | None = None) -> None:
            for _ in range(frames):  # frames stamped with the bag's clock
                rig.send(make_image(image, stamp=clock.now(), frame_id="bag"),
                         resend_every=resend_every)
                time.sleep(0.05)
        # the node has just started: its first frame is resent until it arrives (a lost first
        # sample failed one CI run; the node then logged the publisher matched, no image)
        play(1, resend_every=2.0)
        play(9)
        clock.pause()  # no /clock and no frames for a while
        time.sleep(1.5)
        clock.resume()
        play(5)
        before = resets(rig.status(lambda v: int(v["frames_processed"]) >= 15)[1],
                        "time_jump_back")
        clock.jump(0.0)  # the bag loops
        play(3)
        send_good_frame(rig, round(clock.now(), 3), frame_id="bag")
        values = rig.status(lambda v: resets(v, "time_jump_back") > before, timeout=10.0)[1]
        assert resets(values, "time_jump_back") == before + 1
        assert "memory reset (time_jump_back)" in node.log()
        assert_alive_and_clean(node)
    finally:
        clock.close()
    stop(node)


def _clock_jumps(ros, node_factory, tmp_path, monkeypatch, offsets: tuple[float, ...],
                 diagnostics: bool) -> None:
    """Start a node under the clock shim; for each offset (seconds from real time): move its
    system clock there, check the shim moved, and that the next good frame's outputs are
    correct; ``diagnostics``: also that the node's /diagnostics arrive stamped with its moved
    clock."""
    shim = build_clock_shim(tmp_path)
    if shim is None:
        pytest.skip("no C compiler to build the clock shim (and libfaketime is not installed)")
    library, offset_file = shim
    assert abs(shifted_time(library, offset_file) - time.time()) < 5.0
    monkeypatch.setenv("LD_PRELOAD", str(library))  # only the node started now inherits them
    monkeypatch.setenv("LMANET_CLOCK_OFFSET_FILE", str(offset_file))
    node = node_factory(params={"diagnostics_period": 0.2})
    monkeypatch.delenv("LD_PRELOAD")
    rig = Rig(ros, node, outputs=OUTPUTS)
    send_good_frame(rig, 10.0, first=True)

    def node_clock_offsets(since: int) -> list[float]:
        """Header stamp - real time now (seconds; the messages are at most seconds old) of
        this node's /diagnostics after the first ``since``."""
        now = time.time()
        return [stamp_of(m) - now for m in rig.diagnostics.messages[since:]
                if any(status.name.startswith(node.fqn) for status in m.status)]

    for step, offset in enumerate(offsets):
        set_clock_offset(offset_file, offset)
        assert abs(shifted_time(library, offset_file) - (time.time() + offset)) < 5.0
        time.sleep(0.5)
        count = len(rig.diagnostics)
        send_good_frame(rig, 11.0 + step)  # correct outputs of the next good frame
        if diagnostics:
            wait_until(lambda: len(node_clock_offsets(count)) >= 3, 10.0,
                       what=f"/diagnostics after the node's clock moved to {offset:+.0f} s")
            assert abs(node_clock_offsets(count)[-1] - offset) < 5.0, offset
    assert_alive_and_clean(node)
    stop(node)


def test_system_clock_jumps_in_the_node_process(ros, node_factory, tmp_path, monkeypatch):
    _clock_jumps(ros, node_factory, tmp_path, monkeypatch, (-3600.0, 3600.0, 0.0),
                 diagnostics=False)


def test_diagnostics_follow_the_clock_back(ros, node_factory, tmp_path, monkeypatch):
    _clock_jumps(ros, node_factory, tmp_path, monkeypatch, (-3600.0, 0.0), diagnostics=True)


def test_diagnostics_follow_the_clock_forward(ros, node_factory, tmp_path, monkeypatch):
    _clock_jumps(ros, node_factory, tmp_path, monkeypatch, (3600.0,), diagnostics=True)
