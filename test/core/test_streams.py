"""Reset rules of a stream's memory (lmanet_ros.streams), without a model."""
import threading

import pytest

from lmanet_ros.stamps import seconds_to_ns as ns
from lmanet_ros.streams import MemoryPolicy, StreamState

SIZE = (64, 128)


def feed(state: StreamState, stamps, policy=MemoryPolicy(), size=SIZE, frame_id="cam"):
    """Admit frames at ``stamps`` (seconds); fill the memory with a marker after each; return
    admissions."""
    out = []
    for stamp in stamps:
        out.append(state.admit(ns(stamp), size, frame_id, policy))
        state.memory = "filled"
    return out


def test_first_frame_has_no_reset_and_is_stored():
    state = StreamState("cam")
    (admission,) = feed(state, [10.0])
    assert admission.reset_reason is None and admission.store and not admission.duplicate
    assert state.stats.processed == 1 and state.stats.resets == {}


@pytest.mark.parametrize("stamps, reason", [
    ([10.0, 10.05, 9.0], "time_jump_back"),
    ([10.0, 10.05, 11.5], "gap"),
])
def test_time_rules(stamps, reason):
    state = StreamState("cam")
    admissions = feed(state, stamps)
    assert [a.reset_reason for a in admissions] == [None, None, reason]
    assert state.stats.resets == {reason: 1}


def test_gap_rule_follows_policy_and_can_be_disabled():
    assert feed(StreamState("a"), [0.0, 2.9], MemoryPolicy(max_gap=3.0))[1].reset_reason is None
    assert feed(StreamState("b"), [0.0, 100.0], MemoryPolicy(max_gap=0.0))[1].reset_reason is None
    assert feed(StreamState("c"), [0.0, 0.31], MemoryPolicy(max_gap=0.3))[1].reset_reason == "gap"


def test_size_and_frame_id_changes_reset():
    state = StreamState("cam")
    assert state.admit(ns(0.0), SIZE, "cam", MemoryPolicy()).reset_reason is None
    assert state.admit(ns(0.1), (32, 64), "cam", MemoryPolicy()).reset_reason == "size_change"
    assert state.admit(ns(0.2), (32, 64), "other", MemoryPolicy()).reset_reason == "frame_id_change"
    assert state.stats.resets == {"size_change": 1, "frame_id_change": 1}


def test_reset_clears_memory_and_duplicates_are_counted_without_reset():
    state = StreamState("cam")
    feed(state, [1.0, 1.0])
    assert state.stats.duplicates == 1 and state.stats.resets == {}
    state.request_reset("request")
    assert state.memory == "filled"          # applied before the next frame, not at once
    admission = state.admit(ns(1.1), SIZE, "cam", MemoryPolicy())
    assert admission.reset_reason == "request" and state.memory is None


def test_stride_stores_every_kth_frame_counted_from_the_reset():
    state = StreamState("cam")
    policy = MemoryPolicy(stride=3)
    stored = [a.store for a in feed(state, [0.1 * i for i in range(7)], policy)]
    assert stored == [True, False, False, True, False, False, True]
    state.request_reset("request")
    assert state.admit(ns(0.8), SIZE, "cam", policy).store


def test_request_reset_from_other_threads_is_safe():
    state = StreamState("cam")
    threads = [threading.Thread(target=state.request_reset, args=("request",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert state.admit(ns(0.0), SIZE, "cam", MemoryPolicy()).reset_reason == "request"
    assert state.stats.resets == {"request": 1}


@pytest.mark.parametrize("kwargs", [{"stride": 0}, {"stride": -2}])
def test_policy_validation(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MemoryPolicy(**kwargs)


def test_stamps_are_compared_exactly_in_nanoseconds():
    """Frames 1 ns and 100 ns apart are distinct frames; a stamp 1 ns earlier is a jump back."""
    state = StreamState("cam")
    t0 = 1_700_000_000_123_456_789  # a wall-clock stamp, beyond float64's ns resolution
    admissions = [state.admit(t, SIZE, "cam", MemoryPolicy()) for t in (t0, t0 + 1, t0 + 101)]
    assert [a.duplicate for a in admissions] == [False, False, False]
    assert [a.reset_reason for a in admissions] == [None, None, None]
    assert state.admit(t0 + 101, SIZE, "cam", MemoryPolicy()).duplicate
    assert state.admit(t0 + 100, SIZE, "cam", MemoryPolicy()).reset_reason == "time_jump_back"
    assert state.stats.duplicates == 1


def test_gap_rule_in_nanoseconds_is_exact_at_the_limit():
    policy = MemoryPolicy(max_gap=0.5)
    assert policy.max_gap_ns == 500_000_000
    assert feed(StreamState("a"), [0.0, 0.5], policy)[1].reset_reason is None
    state = StreamState("b")
    state.admit(0, SIZE, "cam", policy)
    assert state.admit(500_000_001, SIZE, "cam", policy).reset_reason == "gap"
