#!/usr/bin/env python3
"""End-to-end latency of ``lmanet_node`` over DDS against the bare ``model.step``.

Scenarios (each starts ``lmanet_node`` as a process, exactly as the launch file would, in a DDS
domain of its own kept on this host):

- ``latency``: frames published one at a time (the next once every output of the previous one
  arrived); image published -> labels received, median and p95, with colour, overlay and
  confidence subscribed; compared with the bare ``model.step`` on the same input size measured in
  this process (memory full, same thread count). Target: median <= 1.15x the step.
- ``latest``: a camera at ``--rate`` Hz (30) for ``--frames`` frames (300), processing_mode latest:
  latency median/p95 of the processed frames (target p95 <= 2x the step), flatness (median of the
  last third / first third), drops.
- ``all``: the same burst with processing_mode all and reliable KEEP_ALL on both ends: frames
  lost, order, the node's resident memory (start, max, end).
- ``soak`` (``--soak``): ``--soak-frames`` (2000) frames at ``--soak-size`` (128x256), one at a
  time: the node's resident memory growth after the first 10 % of the frames (target <= 20 MB).

``--backend onnxruntime|openvino`` runs the node and the bare step on the graphs exported from
``--checkpoint`` (required then: random weights differ per process, and each process would export
its own) at the frame size, from one graph cache; ``--backend torch`` (the default) runs PyTorch.

Example::

    python benchmarks/node_latency.py --json /tmp/node_latency.json
    python benchmarks/node_latency.py --scenarios latency --backend onnxruntime --checkpoint demo
    python benchmarks/node_latency.py --scenarios latency --height 512 --width 1024 --fastdds-shm
    python benchmarks/node_latency.py --scenarios soak --soak
"""
from __future__ import annotations

import argparse
import array
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lmanet_ros.ros_env import isolate, teardown
from lmanet_ros.sizes import parse_size
from lmanet_ros.stamps import seconds_to_ns, split_ns, stamp_ns

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("latency", "latest", "all", "soak")


# ------------------------------------------------------------------------------ environment
def setup_environment(args: argparse.Namespace):
    """Own domain, localhost only, the launch file's DDS profile (or the loopback SHM one);
    before rclpy is imported.

    Returns (domain id, the lock file that holds it: keep it open while the run lasts)."""
    lock = isolate()
    from lmanet_ros.node.launch_args import dds_environment
    os.environ.update(dds_environment("loopback_shm" if args.fastdds_shm else "auto"))
    return int(os.environ["ROS_DOMAIN_ID"]), lock


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ------------------------------------------------------------------------------- bare step
class BareStep:
    """``model.step`` of the same network on a (1, 3, height, width) input, memory full.

    Like the node: the model is built and warmed up on the calling (main) thread, then the
    measured steps run on one dedicated thread, as the node's worker runs them. With PyTorch's
    OpenMP backend, where the steps run changed their time by up to 4x on this loaded 2-core
    machine (the main thread's team spinning under contention; a fresh thread slow until the
    main thread had run parallel work), so the bare step is measured the way the node runs it.
    ``main_thread=True`` measures on the calling thread instead.
    """

    def __init__(self, args: argparse.Namespace, main_thread: bool = False) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import torch

        from lmanet_ros.runtime import load_model
        height, width, threads = args.height, args.width, args.num_threads
        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.threads = threads
        # the node's model: its backend, weights and memory length rule (metadata, own T)
        loaded = load_model(args.model, args.checkpoint or None, backend=args.backend,
                            input_size=(height, width), num_threads=threads)
        loaded.apply_memory_length(None)
        self.model = loaded.model.eval()
        self.x = torch.rand(1, 3, height, width)
        self.memory = None
        self.pool = None
        for _ in range(6):  # first-call costs, memory filled: on this thread, as the node does
            self._step()
        if not main_thread:
            self.pool = ThreadPoolExecutor(max_workers=1)
            for _ in range(2):
                self.step_ms()

    def _step(self) -> float:
        if self.threads > 0:
            self.torch.set_num_threads(self.threads)
        with self.torch.inference_mode():
            start = time.perf_counter()
            _, self.memory = self.model.step(self.x, self.memory)
            return (time.perf_counter() - start) * 1e3

    def step_ms(self) -> float:
        """One step; its wall time in milliseconds."""
        if self.pool is None:
            return self._step()
        return self.pool.submit(self._step).result()

    def times(self, repeats: int) -> list[float]:
        return [self.step_ms() for _ in range(repeats)]


# ------------------------------------------------------------------------------- ROS side
class Client:
    """A node spinning in the background that publishes frames and timestamps outputs."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(f"lmanet_bench_{os.getpid()}", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from lmanet_ros.ros_env import spin
        spin(self.executor)

    def close(self) -> None:
        teardown([self.node], executor=self.executor, context=self.context)


class Arrivals:
    """Arrival time (monotonic) of each output message, keyed by header stamp (ns)."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self.order: list[int] = []
        self.cond = threading.Condition()

    def __call__(self, msg) -> None:
        now = time.monotonic()
        key = stamp_ns(msg.header)
        with self.cond:
            self.times.setdefault(key, now)
            self.order.append(key)
            self.cond.notify_all()

    def wait(self, key: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while key not in self.times:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)
            return self.times[key]

    def wait_count(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.times) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return True


class NodeUnderTest:
    """An ``lmanet_node`` process started like the launch file does, with its outputs."""

    def __init__(self, client: Client, name: str, params: dict, workdir: Path,
                 reader_limit: int = 0, shm: bool = False) -> None:
        import yaml

        from lmanet_ros.node.launch_args import resolve
        data = yaml.safe_load((ROOT / "config" / "lmanet.yaml").read_text())
        data["/**"]["ros__parameters"].update(params)
        params_file = workdir / f"{name}.yaml"
        params_file.write_text(yaml.safe_dump(data, sort_keys=False))
        self.launch = resolve({"namespace": f"/lmanet_bench_{os.getpid()}_{name}",
                               "params_file": str(params_file)})
        env = dict(os.environ)
        if reader_limit:
            profile = workdir / f"{name}_fastdds.xml"
            profile.write_text(reader_limit_profile(f"{self.launch.namespace}/image",
                                                    reader_limit, shm))
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        executable = Path(sys.executable).parent / "lmanet_node"
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.launch.command(str(executable)), stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        self.client = client
        self.fqn = self.launch.fully_qualified_name
        self.outputs: dict[str, Arrivals] = {}

    def wait_ready(self, timeout: float = 180.0) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from lmanet_ros.msg import LabelInfo
        ready = threading.Event()
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        sub = self.client.node.create_subscription(LabelInfo, f"{self.fqn}/label_info",
                                                   lambda _m: ready.set(), qos)
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lmanet_node not ready:\n{self.log_path.read_text()[-3000:]}")
        self.client.node.destroy_subscription(sub)

    def subscribe(self, names: tuple[str, ...]) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for name in names:
            arrivals = Arrivals()
            sub = self.client.node.create_subscription(Image, f"{self.fqn}/{name}", arrivals, qos)
            self.outputs[name] = arrivals
            deadline = time.monotonic() + 30
            while sub.get_publisher_count() < 1 and time.monotonic() < deadline:
                time.sleep(0.02)

    def collect_diagnostics(self) -> dict[str, list[float]]:
        """Start collecting the node's own figures from /diagnostics (inference time, latency
        from message arrival to outputs published); returns the dict of lists that fills up."""
        from diagnostic_msgs.msg import DiagnosticArray
        keys = ("inference_ms_mean", "latency_ms_mean", "latency_ms_max", "frames_received",
                "input_delay_ms_mean", "input_delay_ms_max")
        values: dict[str, list[float]] = {key: [] for key in keys}
        name = f"{self.fqn}: camera image"

        def on_diagnostics(msg) -> None:
            for status in msg.status:
                if status.name == name:
                    for kv in status.values:
                        if kv.key in values and kv.value:
                            values[kv.key].append(float(kv.value))
        self.client.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
        return values

    def publisher(self, qos):
        from sensor_msgs.msg import Image
        namespace = self.launch.namespace
        pub = self.client.node.create_publisher(Image, f"{namespace}/image", qos)
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # let the node see our subscriptions too (it renders only if subscribed)
        return pub

    def rss_mb(self) -> float:
        import psutil
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def reader_limit_profile(topic: str, samples: int, shm: bool) -> str:
    """A Fast DDS profile file giving the node's input reader ``samples`` slots at most.

    With a keep-all reliable input, samples the node has not taken yet wait in its DDS reader;
    resource limits bound them there, and the (keep-all) publisher keeps the rest instead. The
    profile is found by the fully qualified topic name. With ``shm`` the transports of
    config/fastdds_shm.xml are included.
    """
    transports = ""
    if shm:
        text = (ROOT / "config" / "fastdds_shm.xml").read_text()
        transports = text[text.index("<transport_descriptors>"):text.index("</profiles>")]
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    {transports}
    <data_reader profile_name="{topic}">
      <topic>
        <resourceLimitsQos>
          <max_samples>{samples}</max_samples>
          <max_instances>1</max_instances>
          <max_samples_per_instance>{samples}</max_samples_per_instance>
          <allocated_samples>{samples}</allocated_samples>
        </resourceLimitsQos>
      </topic>
    </data_reader>
  </profiles>
</dds>
"""


def make_frames(count: int, height: int, width: int, start: float = 1.0, period: float = 1 / 30):
    """Pre-built rgb8 Image messages with increasing stamps (building is not measured)."""
    import numpy as np
    from sensor_msgs.msg import Image
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
    frames = []
    for index in range(count):
        msg = Image()
        msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
        data = array.array("B")
        data.frombytes(pixels[index % 4].tobytes())
        msg.data = data
        msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(
            seconds_to_ns(start + index * period))
        msg.header.frame_id = "bench_camera"
        frames.append(msg)
    return frames


def key_of(msg) -> int:
    """The header stamp of ``msg`` in integer nanoseconds (the key of :class:`Arrivals`)."""
    return stamp_ns(msg.header)


# ------------------------------------------------------------------------------- scenarios
def model_params(args: argparse.Namespace, size: tuple[int, int] | None = None) -> dict:
    """The node's parameters of the model: backend, checkpoint, threads and the network input
    size: the frame size ``size`` (default ``--height`` x ``--width``; no resize, as the bare
    step; a graph backend's fixed size)."""
    height, width = size or (args.height, args.width)
    return {"backend": args.backend, "checkpoint": args.checkpoint,
            "num_threads": args.num_threads, "input_height": height, "input_width": width}


def run_latency(client, args, workdir, bare: BareStep) -> dict:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    node = NodeUnderTest(client, "latency", {"publish.confidence": True, **model_params(args)},
                         workdir)
    try:
        node.wait_ready()
        node.subscribe(("labels", "color", "overlay", "confidence"))
        pub = node.publisher(QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        frames = make_frames(args.warmup + args.latency_frames, args.height, args.width,
                             period=0.1)
        diagnostics = node.collect_diagnostics()
        latencies, all_outputs, paired_steps = [], [], []
        for index, msg in enumerate(frames):
            key = key_of(msg)
            sent = time.monotonic()
            pub.publish(msg)
            arrived = node.outputs["labels"].wait(key, 60.0)
            if arrived is None:
                raise RuntimeError(f"labels of frame {index} never arrived")
            last = max(node.outputs[name].wait(key, 60.0) or float("inf")
                       for name in node.outputs)
            if index >= args.warmup:
                latencies.append((arrived - sent) * 1e3)
                all_outputs.append((last - sent) * 1e3)
                # the bare step right after, while the node is idle: the two see the same
                # machine load, so their ratio is fair even on a busy machine
                paired_steps.append(bare.step_ms())
            time.sleep(0.02)
        ratios = [lat / step for lat, step in zip(latencies, paired_steps)]
        return {"frames": len(latencies),
                "labels_median_ms": statistics.median(latencies),
                "labels_p95_ms": percentile(latencies, 95),
                "all_outputs_median_ms": statistics.median(all_outputs),
                "paired_bare_step_median_ms": statistics.median(paired_steps),
                "paired_ratio_median": statistics.median(ratios),
                "node_inference_ms_median": _median(diagnostics["inference_ms_mean"]),
                "node_internal_latency_ms_median": _median(diagnostics["latency_ms_mean"]),
                "node_input_delay_ms_median": _median(diagnostics["input_delay_ms_mean"]),
                "exit_code": node.stop()}
    finally:
        node.stop()


def run_burst(client, args, workdir, mode: str) -> dict:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    params = {**model_params(args), "processing_mode": mode}
    if mode == "all":
        params.update({"input.reliability": "reliable", "input.depth": 0})
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL,
                         reliability=ReliabilityPolicy.RELIABLE)
    else:
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    node = NodeUnderTest(client, f"burst_{mode}", params, workdir,
                         reader_limit=args.reader_limit if mode == "all" else 0,
                         shm=args.fastdds_shm)
    try:
        node.wait_ready()
        node.subscribe(("labels", "color", "overlay"))
        pub = node.publisher(qos)
        frames = make_frames(args.frames, args.height, args.width, start=100.0,
                             period=1.0 / args.rate)
        # warm the node at this size (allocator, memory full) before the baseline is taken
        for msg in make_frames(args.warmup, args.height, args.width, start=50.0, period=0.05):
            pub.publish(msg)
            node.outputs["labels"].wait(key_of(msg), 120.0)
        with node.outputs["labels"].cond:
            node.outputs["labels"].times.clear()
            node.outputs["labels"].order.clear()
        diagnostics = node.collect_diagnostics()
        sent: dict[int, float] = {}
        rss = [node.rss_mb()]
        rss_start = rss[0]
        stop_sampling = threading.Event()

        def sample():
            while not stop_sampling.wait(0.25):
                try:
                    rss.append(node.rss_mb())
                except Exception:
                    return
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        for index, msg in enumerate(frames):
            deadline = start + index / args.rate
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[key_of(msg)] = time.monotonic()
            pub.publish(msg)
        publish_s = time.monotonic() - start
        labels = node.outputs["labels"]
        if mode == "all":
            step_guess = 10.0
            labels.wait_count(len(frames), timeout=len(frames) * step_guess)
        else:
            labels.wait(key_of(frames[-1]), 60.0)
        time.sleep(0.5)
        stop_sampling.set()
        sampler.join(2.0)
        with labels.cond:
            order = list(labels.order)
            arrivals = dict(labels.times)
        keys = [key_of(m) for m in frames]
        received = [k for k in order if k in sent]
        latencies = [(arrivals[k] - sent[k]) * 1e3 for k in received]
        third = max(len(latencies) // 3, 1)
        result = {
            "frames_published": len(frames), "publish_seconds": publish_s,
            "frames_processed": len(set(received)),
            "frames_lost": len(set(keys) - set(received)),
            "order_kept": received == sorted(received),
            "latency_median_ms": statistics.median(latencies) if latencies else float("nan"),
            "latency_p95_ms": percentile(latencies, 95),
            "latency_first_third_median_ms": statistics.median(latencies[:third])
            if latencies else float("nan"),
            "latency_last_third_median_ms": statistics.median(latencies[-third:])
            if latencies else float("nan"),
            "rss_start_mb": rss_start, "rss_max_mb": max(rss), "rss_end_mb": rss[-1],
            "node_inference_ms_median": _median(diagnostics["inference_ms_mean"]),
            "node_internal_latency_ms_median": _median(diagnostics["latency_ms_mean"]),
            "node_internal_latency_ms_max": max(diagnostics["latency_ms_max"] or [float("nan")]),
            "node_frames_received": int(max(diagnostics["frames_received"] or [0])),
            "node_input_delay_ms_median": _median(diagnostics["input_delay_ms_mean"]),
            "node_input_delay_ms_max": max(diagnostics["input_delay_ms_max"] or [float("nan")]),
            "latencies_ms": [round(v, 1) for v in latencies],
        }
        result["exit_code"] = node.stop()
        return result
    finally:
        node.stop()


def run_soak(client, args, workdir) -> dict:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    height, width = parse_size(args.soak_size)
    node = NodeUnderTest(client, "soak", model_params(args, (height, width)), workdir)
    try:
        node.wait_ready()
        node.subscribe(("labels", "color", "overlay"))
        pub = node.publisher(QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        frames = make_frames(8, height, width)
        baseline_at = max(args.soak_frames // 10, 1)
        rss_baseline = None
        samples = []
        start = time.monotonic()
        for index in range(args.soak_frames):
            msg = frames[index % len(frames)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(
                seconds_to_ns(1.0 + index / 30.0))
            pub.publish(msg)
            if node.outputs["labels"].wait(key_of(msg), 60.0) is None:
                raise RuntimeError(f"soak frame {index} lost")
            if index + 1 == baseline_at:
                rss_baseline = node.rss_mb()
            if (index + 1) % 100 == 0:
                samples.append(round(node.rss_mb(), 1))
        end_rss = node.rss_mb()
        return {"frames": args.soak_frames, "size": f"{height}x{width}",
                "seconds": time.monotonic() - start,
                "rss_after_first_10pct_mb": rss_baseline, "rss_end_mb": end_rss,
                "rss_growth_mb": end_rss - rss_baseline, "rss_every_100_frames_mb": samples,
                "exit_code": node.stop()}
    finally:
        node.stop()


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="node_latency.py", allow_abbrev=False,
        description="lmanet_node latency over DDS versus the bare model.step (CPU by default).")
    parser.add_argument("--scenarios", default="latency,latest,all",
                        help="comma-separated subset of: " + ", ".join(SCENARIOS))
    parser.add_argument("--model", default="lmanet_erfnet", help="network")
    parser.add_argument("--checkpoint", default="",
                        help="weights file or tag (demo) of the node and the bare step; "
                        "default: random weights (torch backend only)")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "openvino"),
                        help="what runs the network in the node and the bare step "
                        "(default: %(default)s)")
    parser.add_argument("--height", type=int, default=256, help="frame height in pixels")
    parser.add_argument("--width", type=int, default=512, help="frame width in pixels")
    parser.add_argument("--latency-frames", type=int, default=30,
                        help="measured frames of the latency scenario")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured first frames")
    parser.add_argument("--frames", type=int, default=300, help="frames of the burst scenarios")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate of the bursts, Hz")
    parser.add_argument("--step-repeats", type=int, default=20,
                        help="bare model.step repetitions before and after the node runs")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="torch threads of the node and the bare step (0 = torch default)")
    parser.add_argument("--soak", action="store_true", help="also run the memory soak")
    parser.add_argument("--soak-frames", type=int, default=2000, help="frames of the soak")
    parser.add_argument("--soak-size", default="128x256", help="HxW of the soak frames")
    parser.add_argument("--fastdds-shm", action="store_true",
                        help="use config/fastdds_shm.xml (shared memory) in every process")
    parser.add_argument("--reader-limit", type=int, default=0, metavar="N",
                        help="all scenario: give the node's input DDS reader N sample slots "
                             "(Fast DDS resource limits by topic name) so that a backlog waits "
                             "in the publisher, not in the node; 0 = Fast DDS defaults")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def print_table(results: dict) -> None:
    rows = []
    for section, values in results.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, float):
                value = f"{value:.2f}"
            elif isinstance(value, list):
                value = " ".join(str(v) for v in value[:10]) + (" ..." if len(value) > 10
                                                                else "")
            rows.append((section, key, str(value)))
    widths = [max(len(row[i]) for row in rows + [("scenario", "metric", "value")])
              for i in range(3)]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format("scenario", "metric", "value"))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.soak and "soak" not in scenarios:
        scenarios.append("soak")
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.backend != "torch" and not args.checkpoint:
        print(f"--backend {args.backend} needs --checkpoint (e.g. demo): random weights differ "
              f"per process, so the node's graphs would not be the bare step's", file=sys.stderr)
        return 2
    domain, _lock = setup_environment(args)
    import torch
    results: dict = {"setup": {
        "model": args.model, "size": f"{args.height}x{args.width}",
        "backend": args.backend, "checkpoint": args.checkpoint or "random",
        "torch_threads": args.num_threads or torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "fastdds_shm": args.fastdds_shm, "reader_limit": args.reader_limit,
        "ros_domain_id": domain,
        "load_average_start": os.getloadavg()[0]}}
    bare = BareStep(args)
    step_before = bare.times(args.step_repeats)
    main_thread_steps = BareStep(args, main_thread=True).times(max(args.step_repeats // 2, 3))
    client = Client()
    workdir = Path(tempfile.mkdtemp(prefix="lmanet_bench_"))
    try:
        if "latency" in scenarios:
            results["latency"] = run_latency(client, args, workdir, bare)
        if "latest" in scenarios:
            results["latest"] = run_burst(client, args, workdir, "latest")
        if "all" in scenarios:
            results["all"] = run_burst(client, args, workdir, "all")
        if "soak" in scenarios:
            results["soak"] = run_soak(client, args, workdir)
    finally:
        client.close()
    step_after = bare.times(args.step_repeats)
    steps = step_before + step_after
    step = statistics.median(steps)
    results["bare_step"] = {"median_ms": step, "p95_ms": percentile(steps, 95),
                            "median_before_ms": statistics.median(step_before),
                            "median_after_ms": statistics.median(step_after),
                            "main_thread_median_ms": statistics.median(main_thread_steps)}
    results["setup"]["load_average_end"] = os.getloadavg()[0]
    targets = {}
    if "latency" in results:
        ratio = results["latency"]["labels_median_ms"] / step
        targets["latency_median_over_step"] = ratio
        targets["latency_paired_ratio_median"] = results["latency"]["paired_ratio_median"]
        targets["latency_target_1.15x_met"] = results["latency"]["paired_ratio_median"] <= 1.15
    if "latest" in results:
        latest = results["latest"]
        targets["latest_p95_over_step"] = latest["latency_p95_ms"] / step
        targets["latest_p95_over_node_inference"] = (latest["latency_p95_ms"]
                                                     / latest["node_inference_ms_median"])
        targets["latest_target_2x_met"] = latest["latency_p95_ms"] <= 2 * step
        targets["latest_flatness_last_over_first"] = (latest["latency_last_third_median_ms"]
                                                      / latest["latency_first_third_median_ms"])
    if "all" in results:
        burst = results["all"]
        targets["all_no_frame_lost_in_order"] = burst["frames_lost"] == 0 and burst["order_kept"]
        targets["all_rss_growth_mb"] = burst["rss_max_mb"] - burst["rss_start_mb"]
    if "soak" in results:
        targets["soak_rss_growth_mb"] = results["soak"]["rss_growth_mb"]
        targets["soak_target_20mb_met"] = results["soak"]["rss_growth_mb"] <= 20.0
    results["targets"] = targets
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
