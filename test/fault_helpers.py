"""Helpers of the fault tests (test/node/test_faults.py): other DDS participants in processes of
their own (a camera that can be killed and restarted, a reliable subscriber that can be frozen
with SIGSTOP), a /clock publisher that starts at 0, pauses and jumps back, a shim that moves the
system clock of one process, the check that a frame's outputs are right, and a JPEG whose header
lies about its size (also used by the frame-budget tests).

Run as a script, this module is the child process: ``python fault_helpers.py camera TOPIC H W
START RATE SEED`` publishes frames (reliable, depth 1) from the stamp START on, RATE per second,
until killed; ``python fault_helpers.py subscriber TOPIC...`` subscribes (reliable, depth 10) to
each topic, prints ``subscribed`` and spins. Import as ``from fault_helpers import ...``; nothing
here imports rclpy at module level.
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ros_helpers import child_env, make_image, pixels_of, stamp_of, wait_until


def lying_jpeg(height: int, width: int, real: tuple[int, int] = (64, 96)) -> bytes:
    """A real ``real`` (H, W) JPEG whose SOF0 frame header claims ``height`` x ``width``."""
    from lmanet_ros import imaging
    rgb = np.random.default_rng(0).integers(0, 256, (*real, 3), dtype=np.uint8)
    data = bytearray(imaging.encode_compressed(rgb, "jpeg"))
    sof = data.find(b"\xff\xc0")
    # marker (2), length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    assert imaging.compressed_image_size(bytes(data)) == ("jpeg", width, height)
    return bytes(data)


#: The system clock shim: CLOCK_REALTIME (clock_gettime, gettimeofday, time) of a process that
#: preloads it is moved by the offset in seconds (a native double) in the file named by
#: LMANET_CLOCK_OFFSET_FILE, read through a shared mapping at every call, so another process
#: moves the clock by rewriting the file (what libfaketime does with FAKETIME_TIMESTAMP_FILE).
#: Waits until an absolute CLOCK_REALTIME time (pthread_cond_timedwait and the like) have their
#: deadline moved back by the offset, as libfaketime does, so that they wait as long as on a
#: clock that really jumped (without it, a 0.1 s wait after a jump forward of an hour lasted an
#: hour: the node's /diagnostics stopped after one message, an artefact of the shim).
CLOCK_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile double *offset_s;

__attribute__((constructor)) static void open_offset(void) {
    const char *path = getenv("LMANET_CLOCK_OFFSET_FILE");
    int fd = path ? open(path, O_RDONLY) : -1;
    if (fd < 0) return;
    void *map = mmap(NULL, sizeof(double), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map != MAP_FAILED) offset_s = (volatile double *)map;
}

static void shift(struct timespec *ts) {
    if (!offset_s) return;
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec
                   + (long long)(*offset_s * 1e9);
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) shift(ts);
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}

/* Waits until an absolute CLOCK_REALTIME deadline: the caller computed it on the moved clock,
   the kernel waits on the real one, so it is moved back (as libfaketime does; without this a
   wait of 0.1 s after a jump forward of an hour lasts an hour). */
static struct timespec unshift(const struct timespec *at) {
    struct timespec real = *at;
    if (!offset_s) return real;
    long long ns = (long long)at->tv_sec * 1000000000LL + at->tv_nsec
                   - (long long)(*offset_s * 1e9);
    if (ns < 0) ns = 0;
    real.tv_sec = ns / 1000000000LL;
    real.tv_nsec = ns % 1000000000LL;
    return real;
}

int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                           const struct timespec *at) {
    static int (*real)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
    if (!real) real = dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    if (!real) real = dlsym(RTLD_NEXT, "pthread_cond_timedwait");
    struct timespec deadline = unshift(at);
    return real(cond, mutex, &deadline);
}

int pthread_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex, clockid_t clock,
                           const struct timespec *at) {
    static int (*real)(pthread_cond_t *, pthread_mutex_t *, clockid_t, const struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "pthread_cond_clockwait");
    struct timespec deadline = clock == CLOCK_REALTIME ? unshift(at) : *at;
    return real(cond, mutex, clock, &deadline);
}

int pthread_mutex_timedlock(pthread_mutex_t *mutex, const struct timespec *at) {
    static int (*real)(pthread_mutex_t *, const struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "pthread_mutex_timedlock");
    struct timespec deadline = unshift(at);
    return real(mutex, &deadline);
}

int sem_timedwait(sem_t *sem, const struct timespec *at) {
    static int (*real)(sem_t *, const struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "sem_timedwait");
    struct timespec deadline = unshift(at);
    return real(sem, &deadline);
}
"""


# ------------------------------------------------------------------------------ the images
def camera_image(shape: tuple[int, int], seed: int) -> np.ndarray:
    """The (H, W, 3) uint8 frame a camera of ``seed`` sends (parent and child make the same)."""
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def assert_correct_outputs(out: dict, image: np.ndarray, stamp: float, frame_id: str) -> None:
    """``out`` (labels and overlay of one frame) is right for ``image``: the input header, the
    input size, class ids of the 19 Cityscapes classes, the overlay of the image and the
    labels' colours (alpha 0.5)."""
    from lmanet_ros import imaging
    from lmanet_ros.classes import CITYSCAPES_COLORS
    labels, overlay = out["labels"], out["overlay"]
    for msg in (labels, overlay):
        assert stamp_of(msg) == stamp and msg.header.frame_id == frame_id
        assert (msg.height, msg.width) == image.shape[:2]
    assert labels.encoding == "mono8" and pixels_of(labels).max() < 19
    expected = imaging.overlay(image, imaging.colorize(pixels_of(labels), CITYSCAPES_COLORS), 0.5)
    assert np.array_equal(pixels_of(overlay), expected)


# ---------------------------------------------------------------------- other participants
class Participant:
    """A child process of this module (a DDS participant of its own)."""

    def __init__(self, role: str, *args: Any, env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen([sys.executable, __file__, role, *map(str, args)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=child_env(**(env or {})), text=True)
        self._lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self._lines.append(line)

    def output(self) -> str:
        return "".join(self._lines)

    def wait_line(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text in self.output() or self.popen.poll() is not None, timeout,
                   what=f"'{text}' from the {self.popen.args[2]} process")
        assert text in self.output(), f"the child process exited:\n{self.output()}"

    def kill(self) -> None:
        """SIGKILL (no goodbye on DDS: its endpoints vanish as a crashed process's do)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
        self.popen.wait(10.0)

    def freeze(self) -> None:
        """SIGSTOP: its DDS readers stop acknowledging; the process stays matched."""
        self.popen.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: it runs again (and acknowledges what it still can)."""
        self.popen.send_signal(signal.SIGCONT)


def start_camera(topic: str, shape: tuple[int, int], start: float, rate: float,
                 seed: int) -> Participant:
    """A camera process publishing :func:`camera_image` (``shape``, ``seed``) on ``topic``,
    frame_id ``fault_camera``, stamps ``start`` + k / ``rate``."""
    return Participant("camera", topic, shape[0], shape[1], start, rate, seed)


#: A Fast DDS profile whose participant has a lease of {lease} s (other processes keep it
#: matched that long after it went silent).
LEASE_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <participant profile_name="long_lease" is_default_profile="true">
    <rtps><builtin><discovery_config>
      <leaseDuration><sec>{lease}</sec></leaseDuration>
    </discovery_config></builtin></rtps>
  </participant>
</profiles>
"""


def start_subscriber(*topics: str, directory: Path, lease_s: int) -> Participant:
    """A process subscribed (reliable, depth 10) to ``topics``, once it says so; its DDS
    participant has a lease of ``lease_s`` seconds (a profile written in ``directory``)."""
    profile = directory / f"lease_{lease_s}.xml"
    profile.write_text(LEASE_PROFILE.format(lease=lease_s))
    process = Participant("subscriber", *topics, env={"FASTDDS_DEFAULT_PROFILES_FILE":
                                                      str(profile)})
    process.wait_line("subscribed")
    return process


# ----------------------------------------------------------------------------- sim time
class ClockStream:
    """A bag player's /clock: rosgraph_msgs/Clock every 10 ms from a thread (reliable: it
    reaches any /clock subscription), running at real speed from 0 s; :meth:`pause`,
    :meth:`resume` and :meth:`jump` as a player pauses and loops."""

    def __init__(self, ros) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        self._pub = ros.publisher(Clock, "/clock",
                                  QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
                                  subscribers=0)
        self._msg_type = Clock
        self._lock = threading.Lock()
        self._base, self._since = 0.0, time.monotonic()  # clock = base + time since `since`
        self._paused = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> float:
        """The clock's time in seconds."""
        with self._lock:
            return self._base if self._paused else self._base + time.monotonic() - self._since

    def pause(self) -> None:
        """Stop the clock and its messages."""
        with self._lock:
            self._base, self._paused = self._base + time.monotonic() - self._since, True

    def resume(self) -> None:
        """Go on from the time of the pause."""
        with self._lock:
            self._since, self._paused = time.monotonic(), False

    def jump(self, seconds: float) -> None:
        """Set the clock to ``seconds`` (earlier: a bag loop)."""
        with self._lock:
            self._base, self._since = seconds, time.monotonic()

    def _run(self) -> None:
        from lmanet_ros.stamps import seconds_to_ns, split_ns
        while not self._closed.wait(0.01):
            with self._lock:
                paused = self._paused
            if not paused:
                msg = self._msg_type()
                msg.clock.sec, msg.clock.nanosec = split_ns(seconds_to_ns(self.now()))
                self._pub.publish(msg)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5.0)


# --------------------------------------------------------------------------- system clock
def build_clock_shim(directory: Path) -> tuple[Path, Path] | None:
    """Compile :data:`CLOCK_SHIM_C` into ``directory``: (the library, its offset file at 0 s),
    or None where no C compiler is installed."""
    import shutil
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source, library = directory / "clock_shim.c", directory / "clock_shim.so"
    source.write_text(CLOCK_SHIM_C)
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(source), "-ldl",
                    "-lpthread"], check=True, capture_output=True)
    offset_file = directory / "clock_offset"
    set_clock_offset(offset_file, 0.0)
    return library, offset_file


def set_clock_offset(offset_file: Path, seconds: float) -> None:
    """Move the system clock of the processes that preload the shim to real time + ``seconds``
    (rewritten in place: their mapping of the file sees it at once)."""
    mode = "r+b" if offset_file.exists() else "wb"
    with open(offset_file, mode) as handle:
        handle.write(struct.pack("d", seconds))


def shifted_time(library: Path, offset_file: Path) -> float:
    """``time.time()`` as a process that preloads the shim sees it (a check of the shim)."""
    out = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                         capture_output=True, text=True, check=True,
                         env=child_env(LD_PRELOAD=str(library),
                                       LMANET_CLOCK_OFFSET_FILE=str(offset_file)))
    return float(out.stdout)


# ------------------------------------------------------------------------------ children
def _camera(topic: str, height: str, width: str, start: str, rate: str, seed: str) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node(f"fault_camera_{os.getpid()}")
    pub = node.create_publisher(Image, topic,
                                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    image = camera_image((int(height), int(width)), int(seed))
    print("publishing", flush=True)
    stamp, period = float(start), 1.0 / float(rate)
    while True:
        pub.publish(make_image(image, stamp=stamp, frame_id="fault_camera"))
        stamp = round(stamp + period, 6)
        time.sleep(period)


def _subscriber(*topics: str) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node(f"fault_subscriber_{os.getpid()}")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    subs = [node.create_subscription(Image, topic, lambda _msg: None, qos) for topic in topics]
    wait_until(lambda: all(sub.get_publisher_count() for sub in subs), 30.0,
               what="the publishers of " + ", ".join(topics))
    print("subscribed", flush=True)
    rclpy.spin(node)


if __name__ == "__main__":
    from lmanet_ros.ros_env import isolate
    isolate(keep_domain=True)
    {"camera": _camera, "subscriber": _subscriber}[sys.argv[1]](*sys.argv[2:])
