#!/usr/bin/env python3
"""Soak of ``lmanet_node`` over real DDS: many frames, several cameras, every output subscribed,
parameter changes and memory resets sprinkled in at random (issue 17).

One ``lmanet_node`` process (random-weight lmanet_erfnet on the CPU, ``num_threads`` 1 so that
the whole inference runs on the node's processing thread, processing_mode latest, reliable input
of depth 10 so that every frame reaches the node) serves ``--cameras`` cameras. This process
publishes ``--frames`` frames in all (round robin over the cameras, ``--size`` pixels, stamps
1/rate apart) at ``--rate`` Hz per camera (default: 80 % of the rate the node sustained in a
lock-step warm-up), now and then a burst of three frames at once (the node keeps the newest:
drops), and subscribes to labels, color, overlay and confidence of every camera. At random
moments (``--seed``) it sets a parameter (overlay_alpha, memory.max_gap, memory.stride,
memory.length: the last resets every memory, reason ``parameter``) or calls a reset service
(``~/reset_memory`` or ``~/<camera>/reset_memory``: reason ``request``). These events fall
between the first and the last ``--window`` frames, and ``RESTORE_MARGIN`` frames before the
last window the parameters are set back to their values at start: the two windows compared run
the same configuration with full memories (memory.length and resets change the work per frame).

Sampled all along: the node's resident memory, thread count and open file descriptors (psutil,
every 0.25 s), the CPU time of its processing thread (``worker_cpu_s`` of its /diagnostics: the
worker's ``time.thread_time()``), labels latency (publish -> labels received, same host), drops
and resets by reason (/diagnostics). Printed: first versus last ``--window`` (1000) frames.

Figures (exit status 1 when one is missed): the node never crashes (alive at the end, exit code
0 on SIGINT, no traceback or "processing failed" in its log); resident memory growth (largest
sample of the last window minus that of the first) at most 20 MB; the largest thread count of
the last window equal to that of the first; per-frame CPU time of the processing thread within
10 % of the first window's; every frame published (its labels and every other output received)
or counted by the node as dropped (replaced by a newer one), undecodable, failed or lost before
it took it (``delivery_lost``: its publisher's sequence numbers skipped); resets only for
``request``, ``parameter`` (and ``gap``, after a stall longer than memory.max_gap). The CPU drift
is a speed
figure (``kind`` ``speed`` in the JSON): on a loaded machine it may be missed for reasons outside
the node.

Example (issue 17: 20,000 frames; CI runs the 2,000-frame form, test/benchmarks/test_soak.py)::

    python benchmarks/soak.py --frames 20000 --json /tmp/soak.json --plot /tmp/soak.png
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# node_latency also puts the repository on sys.path (for lmanet_ros)
from node_latency import Client, NodeUnderTest, percentile, setup_environment

from lmanet_ros.sizes import parse_size
from lmanet_ros.stamps import seconds_to_ns, split_ns

#: Issue 17's bounds.
MAX_RSS_GROWTH_MB = 20.0
MAX_CPU_DRIFT = 0.10
OUTPUTS = ("labels", "color", "overlay", "confidence")
#: Reset reasons the soak causes (request, parameter) or that a stall may cause (gap).
EXPECTED_RESETS = ("request", "parameter", "gap")
#: Chance per published frame of a parameter change, of a reset request, of a burst.
EVENT_P = {"parameter": 0.004, "reset": 0.004, "burst": 0.003}
#: Parameter values the soak sets (each one keeps the frames' cost about the same).
PARAMETER_CHOICES: dict[str, tuple[Any, ...]] = {
    "overlay_alpha": (0.3, 0.5, 0.7), "memory.max_gap": (1.0, 2.0, 5.0),
    "memory.stride": (1, 2), "memory.length": (3, 4)}
#: Frames (all cameras) between restoring the parameters and the last window: the memories
#: refill after the reset that a memory.length change makes.
RESTORE_MARGIN = 100
SAMPLE_PERIOD_S = 0.25
DIAGNOSTICS_PERIOD_S = 0.25
LOG_FAILURES = ("Traceback", "processing failed", "Fatal Python", "Aborted")


# --------------------------------------------------------------------------- bookkeeping
@dataclass
class Sample:
    """The node process at one moment: ``frame`` frames published so far."""

    time: float
    frame: int
    rss_mb: float
    threads: int
    fds: int


@dataclass
class DiagSample:
    """One /diagnostics message of the node: per camera totals, the worker's CPU time."""

    time: float
    cameras: dict[str, dict[str, str]]

    def total(self, key: str) -> int:
        return sum(int(values.get(key) or 0) for values in self.cameras.values())

    def resets(self) -> dict[str, int]:
        """Resets by reason, summed over the cameras."""
        counts: dict[str, int] = {}
        for values in self.cameras.values():
            for key, value in values.items():
                if key.startswith("resets."):
                    counts[key[len("resets."):]] = counts.get(key[len("resets."):], 0) + int(value)
        return counts

    def worker_cpu_s(self) -> float | None:
        """The processing thread's CPU time (the newest of the cameras' values), or None."""
        values = [float(v["worker_cpu_s"]) for v in self.cameras.values() if v.get("worker_cpu_s")]
        return max(values) if values else None


@dataclass
class Run:
    """Everything recorded during a soak."""

    cameras: list[str]
    sent: list[tuple[str, int, float]] = field(default_factory=list)
    """(camera, stamp ns, monotonic publish time) per frame, in publish order."""
    samples: list[Sample] = field(default_factory=list)
    diagnostics: list[DiagSample] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def camera_names(count: int) -> list[str]:
    """``cam0``, ``cam1``... (one camera: ``''``, the node's single camera on ``image``)."""
    return [f"cam{index}" for index in range(count)] if count > 1 else [""]


def key_of(camera: str) -> str:
    """The node's stream name of a camera (its diagnostics name)."""
    return camera or "image"


def prefixed(camera: str, name: str) -> str:
    return f"{camera}/{name}" if camera else name


# ------------------------------------------------------------------------------ the run
class Soak:
    """The node under test, its publishers, output subscriptions, samplers and service clients."""

    def __init__(self, client: Client, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.client = client
        self.cameras = camera_names(args.cameras)
        self.run = Run(self.cameras)
        params = {"num_threads": 1, "processing_mode": "latest", "input.reliability": "reliable",
                  "input.depth": 10, "publish.confidence": True,
                  "diagnostics_period": DIAGNOSTICS_PERIOD_S}
        if self.cameras != [""]:
            params["cameras"] = self.cameras
        self.node = NodeUnderTest(client, "soak", params, workdir)
        try:
            self._connect()
        except BaseException:
            self.node.stop()
            raise
        height, width = args.size
        self.frames = make_images(height, width)
        self.stamps = {camera: 1000.0 for camera in self.cameras}
        self.rng = random.Random(args.seed)
        self.answers: list[Any] = []
        self.restored = False

    def _connect(self) -> None:
        """Wait for the node; subscribe to its outputs and /diagnostics; publishers, clients."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_srvs.srv import Trigger
        self.node.wait_ready()
        self.node.subscribe(tuple(prefixed(c, o) for c in self.cameras for o in OUTPUTS))
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        ros = self.client.node
        self.publishers = {}
        for camera in self.cameras:
            pub = ros.create_publisher(Image, f"{self.node.launch.namespace}/"
                                              f"{prefixed(camera, 'image')}", qos)
            wait(lambda p=pub: p.get_subscription_count() >= 1, 30.0, "the node's input")
            self.publishers[camera] = pub
        time.sleep(0.5)  # the node sees our subscriptions (it renders only what is subscribed)
        fqn = self.node.fqn
        self.set_parameters = ros.create_client(SetParameters, f"{fqn}/set_parameters")
        self.resets = {camera: ros.create_client(Trigger, f"{fqn}/"
                                                 f"{prefixed(camera, 'reset_memory')}")
                       for camera in {"", *self.cameras}}
        for service in [self.set_parameters, *self.resets.values()]:
            if not service.wait_for_service(timeout_sec=30.0):
                raise RuntimeError(f"service {service.srv_name} not available")
        ros.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.initial = self._current_parameters()

    def _current_parameters(self) -> dict[str, Any]:
        """The node's values of the parameters the soak changes."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        client = self.client.node.create_client(GetParameters, f"{self.node.fqn}/get_parameters")
        try:
            if not client.wait_for_service(timeout_sec=30.0):
                raise RuntimeError(f"service {client.srv_name} not available")
            names = sorted(PARAMETER_CHOICES)
            future = client.call_async(GetParameters.Request(names=names))
            wait(future.done, 30.0, "get_parameters")
            values = future.result().values
            return {name: parameter_value_to_python(value) for name, value in zip(names, values)}
        finally:
            self.client.node.destroy_client(client)

    # ------------------------------------------------------------------ sampling
    def _on_diagnostics(self, msg) -> None:
        prefix = f"{self.node.fqn}: camera "
        cameras = {status.name[len(prefix):]: {kv.key: kv.value for kv in status.values}
                   for status in msg.status if status.name.startswith(prefix)}
        if cameras:
            with self.run.lock:
                self.run.diagnostics.append(DiagSample(time.monotonic(), cameras))

    def sample(self) -> None:
        """Record the node process's resident memory, threads and descriptors now."""
        import psutil
        process = psutil.Process(self.node.proc.pid)
        with process.oneshot():
            sample = Sample(time.monotonic(), len(self.run.sent),
                            process.memory_info().rss / 2**20, process.num_threads(),
                            process.num_fds())
        with self.run.lock:
            self.run.samples.append(sample)

    def _sampler(self, stop: threading.Event) -> None:
        while not stop.wait(SAMPLE_PERIOD_S):
            try:
                self.sample()
            except Exception:  # the process ended: the crash figure says so
                return

    # ------------------------------------------------------------------ frames
    def publish(self, camera: str, record: bool = True) -> int:
        """Publish the next frame of ``camera``; its stamp in ns."""
        stamp = self.stamps[camera] = self.stamps[camera] + 1.0 / self.args.rate
        msg = self.frames[len(self.run.sent) % len(self.frames)]
        msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(seconds_to_ns(stamp))
        msg.header.frame_id = f"{camera or 'camera'}_optical"
        key = seconds_to_ns(stamp)
        now = time.monotonic()
        self.publishers[camera].publish(msg)
        if record:
            with self.run.lock:
                self.run.sent.append((camera, key, now))
        return key

    def lock_step_rate(self, rounds: int) -> float:
        """Warm-up: ``rounds`` frames per camera, each round once every output arrived; the
        rate per camera the node sustained (Hz). These frames are not counted."""
        self.args.rate = self.args.rate or 30.0
        timed = rounds - rounds // 2  # the first half (first-call costs) is not timed
        for index in range(rounds):
            if index == rounds - timed:
                start = time.monotonic()
            keys = {camera: self.publish(camera, record=False) for camera in self.cameras}
            for camera, key in keys.items():
                for output in OUTPUTS:
                    if self.node.outputs[prefixed(camera, output)].wait(key, 60.0) is None:
                        raise RuntimeError(f"warm-up: no {output} of camera '{camera}'")
        return timed / (time.monotonic() - start)

    def event(self) -> None:
        """Maybe a parameter change or a reset request (not waited for), between the first and
        the last window; the parameters restored ``RESTORE_MARGIN`` frames before the last."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        from std_srvs.srv import Trigger
        frame, restore_at = len(self.run.sent), self.args.frames - self.args.window - \
            RESTORE_MARGIN
        if frame < self.args.window or frame >= restore_at:
            if frame >= restore_at and not self.restored:
                self.restored = True
                request = SetParameters.Request(parameters=[
                    Parameter(name, value=value).to_parameter_msg()
                    for name, value in self.initial.items()])
                kind = {"kind": "parameter", "restore": self.initial, "frame": frame}
                self.run.events.append(kind)
                self.answers.append((kind, self.set_parameters.call_async(request)))
            return
        draw = self.rng.random()
        kind = None
        if draw < EVENT_P["parameter"]:
            name = self.rng.choice(sorted(PARAMETER_CHOICES))
            value = self.rng.choice(PARAMETER_CHOICES[name])
            request = SetParameters.Request(
                parameters=[Parameter(name, value=value).to_parameter_msg()])
            future = self.set_parameters.call_async(request)
            kind = {"kind": "parameter", "name": name, "value": value}
        elif draw < EVENT_P["parameter"] + EVENT_P["reset"]:
            camera = self.rng.choice(sorted(self.resets))
            future = self.resets[camera].call_async(Trigger.Request())
            kind = {"kind": "reset", "camera": camera or "(all)"}
        if kind is not None:
            kind["frame"] = len(self.run.sent)
            self.run.events.append(kind)
            self.answers.append((kind, future))

    def stream(self) -> None:
        """Publish ``--frames`` frames at ``--rate`` Hz per camera with the random events."""
        stop = threading.Event()
        sampler = threading.Thread(target=self._sampler, args=(stop,), daemon=True)
        self.sample()
        sampler.start()
        period = 1.0 / self.args.rate
        start = time.monotonic()
        tick = progress = 0
        try:
            while len(self.run.sent) < self.args.frames:
                delay = start + tick * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1.0:  # we fell behind (a loaded machine): no catch-up burst
                    start -= delay
                tick += 1
                if len(self.run.sent) // self.args.window > progress:
                    progress = len(self.run.sent) // self.args.window
                    print(f"{len(self.run.sent)} frames published, "
                          f"{time.monotonic() - start:.0f} s", flush=True)
                for camera in self.cameras:
                    repeat = 3 if self.rng.random() < EVENT_P["burst"] else 1
                    for _ in range(repeat):
                        if len(self.run.sent) < self.args.frames:
                            self.publish(camera)
                    self.event()
                if self.node.proc.poll() is not None:
                    break
            self.settle()
        finally:
            stop.set()
            sampler.join(2.0)
        self.sample()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the node's counters account for every frame (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.node.proc.poll() is None:
            if all(self.accounting(c)["unaccounted"] == 0 for c in self.cameras) and \
                    all(future.done() for _, future in self.answers):
                time.sleep(2 * DIAGNOSTICS_PERIOD_S)
                return
            time.sleep(0.2)

    # ------------------------------------------------------------------ results
    def last_diagnostics(self, camera: str) -> dict[str, str]:
        with self.run.lock:
            for sample in reversed(self.run.diagnostics):
                if key_of(camera) in sample.cameras:
                    return sample.cameras[key_of(camera)]
        return {}

    def accounting(self, camera: str) -> dict[str, int]:
        """One camera's frames: sent, received by the node, published (labels came back),
        counted by the node as dropped (replaced by a newer frame), bad, failed or lost (its
        publisher's sequence numbers skipped: lost before the node took them, e.g. its reader's
        history of 10 overwritten while the executor was starved), complete (every output came
        back) and unaccounted (neither published nor counted)."""
        with self.run.lock:
            keys = [key for cam, key, _ in self.run.sent if cam == camera]
        labels = self.node.outputs[prefixed(camera, "labels")]
        with labels.cond:
            published = sum(1 for key in keys if key in labels.times)
        complete = 0
        for key in keys:
            if all(key in self.node.outputs[prefixed(camera, o)].times for o in OUTPUTS):
                complete += 1
        values = self.last_diagnostics(camera)
        counted = {name: int(values.get(key) or 0) for name, key in (
            ("dropped", "drops"), ("bad_inputs", "bad_inputs"), ("errors", "processing_errors"),
            ("lost", "delivery_lost"), ("received", "frames_received"),
            ("processed", "frames_processed"))}
        # the warm-up frames are counted by the node too: all published, none dropped
        warm = self.args.warmup
        counted["received"] -= warm
        counted["processed"] -= warm
        unaccounted = len(keys) - published - counted["dropped"] - counted["bad_inputs"] - \
            counted["errors"] - counted["lost"]
        return {"sent": len(keys), "published": published, "complete": complete, **counted,
                "unaccounted": unaccounted}

    def stop(self) -> tuple[int, str]:
        """SIGINT the node: (exit code, its log)."""
        code = self.node.stop()
        return code, self.node.log_path.read_text(errors="replace")


def make_images(height: int, width: int, count: int = 4):
    """``count`` rgb8 Image messages of random pixels (stamps set when published)."""
    import array

    import numpy as np
    from sensor_msgs.msg import Image
    rng = np.random.default_rng(0)
    messages = []
    for _ in range(count):
        msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
        msg.data = array.array("B", rng.integers(0, 256, (height, width, 3),
                                                 dtype=np.uint8).tobytes())
        messages.append(msg)
    return messages


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------------------ windows
def window_rows(soak: Soak, size: int) -> list[dict[str, Any]]:
    """One row per ``size`` frames published (the last one may be shorter)."""
    run = soak.run
    labels = {camera: soak.node.outputs[prefixed(camera, "labels")] for camera in run.cameras}
    rows = []
    for first in range(0, len(run.sent), size):
        frames = run.sent[first:first + size]
        begin, end = frames[0][2], frames[-1][2]
        latencies = [(labels[cam].times[key] - sent) * 1e3 for cam, key, sent in frames
                     if key in labels[cam].times]
        samples = [s for s in run.samples if first <= s.frame <= first + len(frames)]
        diags = [d for d in run.diagnostics if begin <= d.time <= end + SAMPLE_PERIOD_S]
        row: dict[str, Any] = {
            "first_frame": first, "frames": len(frames), "published": len(latencies),
            **{f"latency_p{q}_ms": percentile(latencies, q) for q in (50, 95, 99)},
            "rss_max_mb": max((s.rss_mb for s in samples), default=float("nan")),
            "threads_max": max((s.threads for s in samples), default=0),
            "fds_max": max((s.fds for s in samples), default=0),
            "cpu_ms_per_frame": float("nan"), "drops": 0, "resets": {}}
        with_cpu = [d for d in diags if d.worker_cpu_s() is not None]
        if len(with_cpu) >= 2:
            processed = with_cpu[-1].total("frames_processed") - \
                with_cpu[0].total("frames_processed")
            if processed > 0:
                row["cpu_ms_per_frame"] = (with_cpu[-1].worker_cpu_s() -
                                           with_cpu[0].worker_cpu_s()) / processed * 1e3
        if len(diags) >= 2:
            row["drops"] = diags[-1].total("drops") - diags[0].total("drops")
            before, after = diags[0].resets(), diags[-1].resets()
            row["resets"] = {reason: after[reason] - before.get(reason, 0) for reason in after
                             if after[reason] - before.get(reason, 0)}
        rows.append(row)
    return rows


def figures(rows: list[dict], accounting: dict[str, dict], exit_code: int, log: str,
            alive: bool, resets: dict[str, int], refused: int) -> dict[str, dict]:
    """Issue 17's figures: value, limit, met, kind (``correctness`` or ``speed``)."""
    first, last = rows[0], rows[-1]
    failures = [mark for mark in LOG_FAILURES if mark in log]
    growth = last["rss_max_mb"] - first["rss_max_mb"]
    drift = last["cpu_ms_per_frame"] / first["cpu_ms_per_frame"] - 1.0
    unaccounted = sum(a["unaccounted"] for a in accounting.values())
    incomplete = sum(a["published"] - a["complete"] for a in accounting.values())
    lost = sum(a["sent"] - a["received"] for a in accounting.values())
    counted_lost = sum(a["lost"] for a in accounting.values())
    unexpected = {r: n for r, n in resets.items() if r not in EXPECTED_RESETS and n}
    return {
        "crashes": {"value": 0 if alive and exit_code == 0 and not failures else 1,
                    "limit": 0, "detail": f"alive at the end {alive}, exit code {exit_code}, "
                                          f"log marks {failures}", "kind": "correctness"},
        "rss_growth_mb": {"value": growth, "limit": MAX_RSS_GROWTH_MB, "kind": "correctness"},
        "thread_growth": {"value": last["threads_max"] - first["threads_max"], "limit": 0,
                          "kind": "correctness"},
        "cpu_drift": {"value": drift, "limit": MAX_CPU_DRIFT, "kind": "speed", "abs": True},
        "frames_unaccounted": {"value": unaccounted, "limit": 0, "kind": "correctness",
                               "detail": f"{lost} lost before the node ({counted_lost} "
                                         f"counted by it), {incomplete} published without "
                                         f"every output"},
        "outputs_missing": {"value": incomplete, "limit": 0, "kind": "correctness"},
        "unexpected_resets": {"value": sum(unexpected.values()), "limit": 0,
                              "detail": str(unexpected), "kind": "correctness"},
        "refused_requests": {"value": refused, "limit": 0, "kind": "correctness"},
    }


def met(figure: dict) -> bool:
    value = abs(figure["value"]) if figure.get("abs") else figure["value"]
    return value == value and value <= figure["limit"]  # NaN: missed


def format_table(rows: list[dict], figs: dict[str, dict]) -> str:
    first, last = rows[0], rows[-1]
    keys = ("frames", "published", "drops", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
            "rss_max_mb", "threads_max", "fds_max", "cpu_ms_per_frame")
    lines = [f"{'metric':<18} {'first ' + str(first['frames']):>12} "
             f"{'last ' + str(last['frames']):>12}"]
    lines.append("-" * len(lines[0]))
    for key in keys:
        lines.append(f"{key:<18} {first[key]:>12.4g} {last[key]:>12.4g}")
    lines.append(f"{'resets':<18} {str(first['resets']):>12} {str(last['resets']):>12}")
    lines.append("")
    lines.append(f"{'figure':<20} {'value':>10} {'limit':>8}  result")
    for name, fig in figs.items():
        verdict = "PASS" if met(fig) else "FAIL"
        lines.append(f"{name:<20} {fig['value']:>10.4g} {fig['limit']:>8.4g}  {verdict} "
                     f"({fig['kind']}){'  ' + fig['detail'] if fig.get('detail') else ''}")
    return "\n".join(lines)


def plot(rows: list[dict], soak: Soak, path: Path) -> None:
    """RSS, threads, descriptors over frames; CPU per frame, latency, drops per window."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    samples = soak.run.samples
    frames = [s.frame for s in samples]
    centres = [row["first_frame"] + row["frames"] / 2 for row in rows]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharex=True)
    panels = [
        (axes[0, 0], [("RSS MB", frames, [s.rss_mb for s in samples])]),
        (axes[0, 1], [("threads", frames, [s.threads for s in samples])]),
        (axes[0, 2], [("open fds", frames, [s.fds for s in samples])]),
        (axes[1, 0], [("worker CPU ms/frame", centres, [r["cpu_ms_per_frame"] for r in rows])]),
        (axes[1, 1], [(f"latency p{q} ms", centres, [r[f"latency_p{q}_ms"] for r in rows])
                      for q in (50, 95, 99)]),
        (axes[1, 2], [("drops", centres, [r["drops"] for r in rows]),
                      ("resets", centres, [sum(r["resets"].values()) for r in rows])]),
    ]
    for axis, series in panels:
        for label, xs, ys in series:
            axis.plot(xs, ys, marker="." if xs is centres else None, label=label)
        axis.set_title(", ".join(label for label, *_ in series))
        axis.grid(True, alpha=0.3)
        if len(series) > 1:
            axis.legend()
    for axis in axes[1]:
        axis.set_xlabel("frames published")
    fig.suptitle(f"lmanet_node soak: {len(soak.run.sent)} frames, {len(soak.cameras)} camera(s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--frames", type=int, default=20000,
                        help="frames published in all cameras together (default 20000)")
    parser.add_argument("--cameras", type=int, default=2, help="cameras (default 2)")
    parser.add_argument("--size", type=parse_size, default="64x128",
                        help="frame size HxW in pixels (default 64x128)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="frames per second per camera; 0 (default): 80 %% of the rate the "
                             "node sustained in the lock-step warm-up")
    parser.add_argument("--warmup", type=int, default=20,
                        help="lock-step frames per camera before the soak (not counted)")
    parser.add_argument("--window", type=int, default=1000,
                        help="frames per row of the first-versus-last table (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random events")
    parser.add_argument("--fastdds-shm", action="store_true",
                        help="use config/fastdds_shm.xml (shared memory) in every process")
    parser.add_argument("--json", type=Path, help="write rows, samples and figures here")
    parser.add_argument("--plot", type=Path, help="write a PNG plot here (matplotlib)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 3 * args.window + RESTORE_MARGIN:
        parser.error(f"--frames must be at least 3 x --window + {RESTORE_MARGIN} "
                     f"({3 * args.window + RESTORE_MARGIN}): the events fall between the "
                     f"first and the last window")
    if args.cameras < 1 or args.warmup < 1:
        parser.error("--cameras and --warmup must be at least 1")
    import tempfile
    _, _lock = setup_environment(args)
    client = Client()
    workdir = Path(tempfile.mkdtemp(prefix="lmanet_soak_"))
    started = time.monotonic()
    soak = None
    try:
        asked_rate = args.rate
        soak = Soak(client, args, workdir)
        print(f"node ready after {time.monotonic() - started:.0f} s; log: {soak.node.log_path}",
              flush=True)
        sustained = soak.lock_step_rate(args.warmup)
        args.rate = asked_rate or 0.8 * sustained
        print(f"lock-step warm-up: {sustained:.1f} Hz per camera; publishing at "
              f"{args.rate:.1f} Hz per camera", flush=True)
        soak.stream()
        alive = soak.node.proc.poll() is None
        accounting = {key_of(c): soak.accounting(c) for c in soak.cameras}
        resets_total: dict[str, int] = {}
        for camera in soak.cameras:
            for key, value in soak.last_diagnostics(camera).items():
                if key.startswith("resets."):
                    reason = key[len("resets."):]
                    resets_total[reason] = resets_total.get(reason, 0) + int(value)
        refused = sum(1 for kind, future in soak.answers if kind["kind"] == "parameter" and
                      future.done() and not all(r.successful for r in future.result().results))
        unanswered = sum(1 for _, future in soak.answers if not future.done())
        exit_code, log = soak.stop()
    finally:
        if soak is not None:
            soak.node.stop()  # also after an error or Ctrl-C
        client.close()
    rows = window_rows(soak, args.window)
    figs = figures(rows, accounting, exit_code, log, alive, resets_total, refused + unanswered)
    for fig in figs.values():
        fig["met"] = met(fig)
    print(f"{len(soak.run.sent)} frames, {args.cameras} camera(s) of {args.size[0]}x"
          f"{args.size[1]}, {args.rate:.1f} Hz per camera (lock-step warm-up sustained "
          f"{sustained:.1f} Hz), {len(soak.run.events)} events, "
          f"{time.monotonic() - started:.0f} s; node log: {soak.node.log_path}")
    print(format_table(rows, figs))
    for camera, values in accounting.items():
        print(f"camera {camera}: {values}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "setup": {"frames": args.frames, "cameras": args.cameras, "size": list(args.size),
                      "rate_hz": args.rate, "sustained_hz": sustained, "seed": args.seed,
                      "window": args.window, "seconds": time.monotonic() - started},
            "figures": figs, "accounting": accounting, "resets": resets_total,
            "rows": rows, "events": soak.run.events,
            "samples": [vars(s) for s in soak.run.samples]}, indent=2))
    if args.plot:
        plot(rows, soak, args.plot)
    return 0 if all(fig["met"] for fig in figs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
