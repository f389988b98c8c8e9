#!/usr/bin/env python3
"""Delivery of camera-sized images over DDS between processes, per Fast DDS configuration.

A publisher process (plain rclpy, sensor_msgs/Image rgb8 or a JPEG sensor_msgs/CompressedImage,
best effort, depth 5, ``--rate`` Hz) sends ``--frames`` frames of 1280x720 (``--frames-1080`` of
1920x1080) to a receiver process: a plain rclpy subscription (best effort, depth 5), or for the
rows marked ``node``, ``lmanet_node`` started by ``ros2 launch lmanet_ros lmanet.launch.py ...
checkpoint:=demo dds_profile:=...`` and a process counting its ``~/labels`` by stamp. A row
prints frames delivered (or labelled) / sent. Every process runs in a ROS domain of this run's
own with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``.

Configurations (``--configs``): the Fast DDS environment of each end, from the ``dds_profile``
names of :mod:`lmanet_ros.node.launch_args` (``default``: no Fast DDS variable), ``<name>``
on both ends, ``<name>@pub`` / ``<name>@sub`` on one end only (the other on defaults), ``jpeg``:
compressed input on defaults.

Example::

    python benchmarks/dds_delivery.py --json /tmp/dds_delivery.json
    python benchmarks/dds_delivery.py --frames 20 --frames-1080 20 --configs default,shm_udp
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "/dds_bench/image"
NODE_LABELS = "/lmanet/labels"
CONFIGS = ("default", "loopback_shm", "large_data", "large_data@sub", "large_data@pub",
           "shm_udp", "shm_udp@sub", "shm_udp@pub", "jpeg")
NODE_CONFIGS = ("default", "large_data", "shm_udp", "jpeg")
SIZES = {"1280x720": (720, 1280), "1920x1080": (1080, 1920)}


@dataclass
class Row:
    """One measured row: configuration, size, receiver, frames sent and delivered."""

    config: str
    size: str
    receiver: str
    sent: int
    delivered: int
    publisher_env: str
    receiver_env: str


# ------------------------------------------------------------------------------- child roles
def _test_image(height: int, width: int):
    """A smooth synthetic rgb8 frame (gradients and a little noise; JPEG sizes as a camera's)."""
    import numpy as np
    rows, cols = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 12, (height, width), dtype=np.uint8)
    channels = [(rows * 255 // height), (cols * 255 // width), ((rows + cols) % 256)]
    return np.stack([(c + noise).astype(np.uint8) for c in channels], axis=-1)


def _message(height: int, width: int, jpeg: bool):
    """The message the publisher sends (its stamp is set per frame)."""
    import array

    import cv2
    from sensor_msgs.msg import CompressedImage, Image
    rgb = _test_image(height, width)
    if jpeg:
        msg = CompressedImage(format="jpeg")
        msg.data = array.array("B", cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes())
        return msg
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.data = array.array("B", rgb.tobytes())
    return msg


def _qos():
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)


def run_publisher(args: argparse.Namespace) -> int:
    """Wait for a subscription, then publish ``args.frames`` frames at ``args.rate`` Hz."""
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image
    rclpy.init()
    node = rclpy.create_node("dds_bench_publisher")
    height, width = SIZES[args.size]
    msg = _message(height, width, args.jpeg)
    topic = TOPIC + "/compressed" if args.jpeg else TOPIC
    publisher = node.create_publisher(CompressedImage if args.jpeg else Image, topic, _qos())
    deadline = time.monotonic() + 60.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the reader's side of the match
    start = time.monotonic()
    for index in range(args.frames):
        time.sleep(max(0.0, start + index / args.rate - time.monotonic()))
        msg.header.stamp.sec, msg.header.frame_id = index + 1, "dds_bench"
        publisher.publish(msg)
    time.sleep(1.0)
    print(json.dumps({"sent": args.frames}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def run_receiver(args: argparse.Namespace) -> int:
    """Count distinct stamps on the topic (or the node's labels) until 'stop' on stdin."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    rclpy.init()
    node = rclpy.create_node("dds_bench_receiver")
    stamps: set[int] = set()
    ready = threading.Event()
    if args.kind == "labels":
        from lmanet_ros.msg import LabelInfo
        node.create_subscription(Image, NODE_LABELS, lambda m: stamps.add(m.header.stamp.sec),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(LabelInfo, "/lmanet/label_info", lambda _m: ready.set(),
                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))
    else:
        jpeg = args.kind == "compressed"
        node.create_subscription(CompressedImage if jpeg else Image,
                                 TOPIC + "/compressed" if jpeg else TOPIC,
                                 lambda m: stamps.add(m.header.stamp.sec), _qos())
        ready.set()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    announced = False
    while not stop.is_set():
        rclpy.spin_once(node, timeout_sec=0.05)
        if ready.is_set() and not announced:
            print("ready", flush=True)
            announced = True
    print(json.dumps({"received": len(stamps)}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ------------------------------------------------------------------------------ orchestration
def config_envs(config: str) -> tuple[dict[str, str], dict[str, str], str]:
    """(publisher env, receiver env, the node's dds_profile) of a configuration name."""
    from lmanet_ros.node.launch_args import dds_environment
    if config == "jpeg":
        return {}, {}, "default"
    name, _, end = config.partition("@")
    env = dds_environment(name)
    return (env if end in ("", "pub") else {}), (env if end in ("", "sub") else {}), \
        (name if end in ("", "sub") else "default")


def _clean_env() -> dict[str, str]:
    """This process's environment without the Fast DDS variables (each row sets its own)."""
    from lmanet_ros.node.launch_args import FASTDDS_VARIABLES
    return {k: v for k, v in os.environ.items() if k not in FASTDDS_VARIABLES}


def _child(role: list[str], env: dict[str, str], log) -> subprocess.Popen:
    """This script in a child role with the Fast DDS variables ``env``."""
    return subprocess.Popen([sys.executable, __file__, *role], env={**_clean_env(), **env},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)


def _start_node(profile: str, jpeg: bool, workdir: Path, log) -> subprocess.Popen:
    """``ros2 launch lmanet_ros lmanet.launch.py`` with the demo weights, in its own group."""
    values = {"image": TOPIC, "checkpoint": "demo", "device": "cpu", "dds_profile": profile}
    if jpeg:
        import yaml
        data = yaml.safe_load((ROOT / "config" / "lmanet.yaml").read_text())
        data["/**"]["ros__parameters"]["input.transport"] = "compressed"
        params = workdir / "compressed.yaml"
        params.write_text(yaml.safe_dump(data, sort_keys=False))
        values["params_file"] = str(params)
    return subprocess.Popen(["ros2", "launch", "lmanet_ros", "lmanet.launch.py",
                             *(f"{k}:={v}" for k, v in values.items())], env=_clean_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_group(popen: subprocess.Popen) -> None:
    try:
        os.killpg(popen.pid, signal.SIGINT)
        popen.wait(15.0)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(5.0)
    except ProcessLookupError:
        pass


def _env_text(env: dict[str, str]) -> str:
    return " ".join(f"{k}={Path(v).name if v.endswith('.xml') else v}"
                    for k, v in env.items()) or "(Fast DDS defaults)"


def measure(config: str, size: str, frames: int, rate: float, with_node: bool,
            workdir: Path) -> Row:
    """One row: start the receiver (and the node), publish, count."""
    pub_env, sub_env, profile = config_envs(config)
    jpeg = config == "jpeg"
    kind = "labels" if with_node else ("compressed" if jpeg else "raw")
    log = open(workdir / f"{config}_{size}_{kind}.log", "w")
    node = _start_node(profile, jpeg, workdir, log) if with_node else None
    receiver = _child(["--role", "receive", "--kind", kind], sub_env, log)
    try:
        line = receiver.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"receiver not ready ({line!r}); see {log.name}")
        publisher = _child(["--role", "publish", "--size", size, "--frames", str(frames),
                            "--rate", str(rate)] + (["--jpeg"] if jpeg else []), pub_env, log)
        sent = json.loads(publisher.communicate(timeout=frames / rate + 90.0)[0])["sent"]
        time.sleep(3.0 if with_node else 0.5)  # the last frames' labels
        received = json.loads(receiver.communicate("stop\n", timeout=30.0)[0])["received"]
    finally:
        if receiver.poll() is None:
            receiver.kill()
        if node is not None:
            _stop_group(node)
        log.close()
    receiver_env = f"dds_profile:={profile}" if with_node else _env_text(sub_env)
    return Row(config, size, "lmanet_node labels" if with_node else "rclpy subscriber", sent,
               received, _env_text(pub_env), receiver_env)


def print_table(rows: list[Row]) -> None:
    print("\n| configuration | size | receiver | delivered / sent | publisher env | "
          "receiver env |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.config} | {row.size} | {row.receiver} | {row.delivered}/{row.sent} | "
              f"{row.publisher_env} | {row.receiver_env} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("publish", "receive"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=("raw", "compressed", "labels"), default="raw",
                        help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=sorted(SIZES), default="1280x720",
                        help=argparse.SUPPRESS)
    parser.add_argument("--jpeg", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=100, help="frames of 1280x720 per row")
    parser.add_argument("--frames-1080", type=int, default=50, help="frames of 1920x1080")
    parser.add_argument("--rate", type=float, default=5.0, help="publishing rate, Hz")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated configurations (see above)")
    parser.add_argument("--node-configs", default=",".join(NODE_CONFIGS),
                        help="configurations also measured with lmanet_node (1280x720)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    if args.role == "publish":
        return run_publisher(args)
    if args.role == "receive":
        return run_receiver(args)

    from lmanet_ros.ros_env import isolate
    _lock = isolate()  # noqa: F841 (the domain stays ours while the run lasts)
    workdir = Path(tempfile.mkdtemp(prefix="dds_delivery_"))
    rows: list[Row] = []
    node_configs = [c for c in args.node_configs.split(",") if c]
    for config in [c for c in args.configs.split(",") if c]:
        for size, frames in (("1280x720", args.frames), ("1920x1080", args.frames_1080)):
            rows.append(measure(config, size, frames, args.rate, False, workdir))
            print(f"{config} {size}: {rows[-1].delivered}/{rows[-1].sent}", flush=True)
    for config in node_configs:
        rows.append(measure(config, "1280x720", args.frames, args.rate, True, workdir))
        print(f"{config} 1280x720 node: {rows[-1].delivered}/{rows[-1].sent}", flush=True)
    print_table(rows)
    print(f"(logs in {workdir}; ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}, "
          f"ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)")
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "rate_hz": args.rate,
                                         "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
