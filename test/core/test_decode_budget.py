"""The pixel budget of one frame at the decode layer (issue 17): a frame whose header states more
pixels than the budget is refused before anything is decoded, in bounded memory, whatever its
compressed size (an 8192x8192 PNG of zeros is 79 KB; a 64x96 JPEG whose SOF claims 8000x8000 is
8 KB), and the next good frame decodes as usual. Peak memory is measured in a child process
(``VmHWM``: ``ru_maxrss`` survives exec, so a child forked from a large pytest process would start
at its parent's peak), against a control run without the budget that must show the growth."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fault_helpers import lying_jpeg
from lmanet_ros import imaging
from lmanet_ros.imaging import ImageError, ImageTooLarge

#: The node's default budget (max_frame_pixels): 3840x2160.
BUDGET = 3840 * 2160
#: Peak RSS growth allowed for refused frames, bytes; one decoded 8192x8192 RGB image is 192 MiB.
REFUSED_GROWTH_LIMIT = 64 << 20


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """The issue's frames as files: an 8192x8192 PNG of zeros, a lying 8000x8000 JPEG."""
    directory = tmp_path_factory.mktemp("bombs")
    ok, png = cv2.imencode(".png", np.zeros((8192, 8192), np.uint8))
    assert ok and len(png) < 100_000
    paths = {"png_8192": directory / "zeros_8192.png", "jpeg_8000": directory / "lying.jpg",
             "png_8192_sevens": directory / "sevens_8192.png"}
    paths["png_8192"].write_bytes(png.tobytes())
    ok, sevens = cv2.imencode(".png", np.full((8192, 8192), 7, np.uint8))
    paths["png_8192_sevens"].write_bytes(sevens.tobytes())
    paths["jpeg_8000"].write_bytes(lying_jpeg(8000, 8000))
    return paths


_PEAK_SCRIPT = """
import json, sys
import numpy as np
from lmanet_ros import imaging

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

good = imaging.encode_compressed(np.full((64, 128, 3), 7, np.uint8), "png")
imaging.decode_compressed("png", good)  # codecs loaded before the baseline
base = peak()
outcomes = []
for path in sys.argv[2:]:
    try:
        rgb = imaging.decode_compressed("", open(path, "rb").read(), max_pixels=int(sys.argv[1]))
        outcomes.append(f"decoded {rgb.shape[1]}x{rgb.shape[0]}")
    except imaging.ImageTooLarge as exc:
        outcomes.append(f"refused: {exc}")
after = imaging.decode_compressed("png", good)
print(json.dumps({"growth": peak() - base, "outcomes": outcomes,
                  "next": [int(after.shape[0]), int(after.shape[1]), int(after[0, 0, 0])]}))
"""


def _peak(max_pixels: int, *paths: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(max_pixels),
                           *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_frames_over_budget_are_refused_in_bounded_memory(bombs):
    result = _peak(BUDGET, bombs["png_8192"], bombs["jpeg_8000"])
    print(f"refused: peak RSS growth {result['growth'] / 2**20:.1f} MiB")
    assert [o.split(":")[0] for o in result["outcomes"]] == ["refused", "refused"]
    assert "png image too large: 8192x8192 = 67108864 pixels exceeds 8294400" in \
        result["outcomes"][0]
    assert "jpeg image too large: 8000x8000" in result["outcomes"][1]
    assert result["growth"] < REFUSED_GROWTH_LIMIT
    assert result["next"] == [64, 128, 7]  # the next good frame decodes


def test_without_the_budget_the_same_frames_cost_their_decoded_size(bombs):
    # the control: the measurement sees what decoding such a frame costs (192 MiB of RGB, part
    # of it reused from freed memory), well above what refused frames may
    # cost; pixels of 7, not zeros, so that no page could stay the kernel's zero page
    result = _peak(imaging.MAX_PIXELS, bombs["png_8192_sevens"])
    print(f"decoded: peak RSS growth {result['growth'] / 2**20:.1f} MiB")
    assert result["outcomes"] == ["decoded 8192x8192"]
    assert result["growth"] > REFUSED_GROWTH_LIMIT


def test_budget_is_checked_against_the_header_before_the_data():
    # raw: a header over budget is refused before its (here absent) bytes are looked at
    with pytest.raises(ImageTooLarge, match="8192x8192 = 67108864 pixels exceeds 8294400") as info:
        imaging.decode_image("rgb8", 8192, 8192, 8192 * 3, b"\x00" * 16, max_pixels=BUDGET)
    assert (info.value.width, info.value.height, info.value.limit) == (8192, 8192, BUDGET)
    # exactly the budget passes, one pixel less refuses
    rgb = np.random.default_rng(1).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    step, data = imaging.encode_image(rgb, "bgr8")
    assert np.array_equal(imaging.decode_image("bgr8", 64, 128, step, data, max_pixels=8192), rgb)
    with pytest.raises(ImageTooLarge):
        imaging.decode_image("bgr8", 64, 128, step, data, max_pixels=8191)
    for fmt in ("png", "jpeg"):
        encoded = imaging.encode_compressed(rgb, fmt)
        assert imaging.decode_compressed(fmt, encoded, max_pixels=8192).shape == (64, 128, 3)
        with pytest.raises(ImageTooLarge, match=f"{fmt} image too large: 128x64 = 8192"):
            imaging.decode_compressed(fmt, encoded, max_pixels=8191)
    # the per-side limit stays whatever the budget
    with pytest.raises(ImageTooLarge, match="exceeds 16384 pixels per side"):
        imaging.decode_image("mono8", 1, 20000, 20000, b"\x00" * 20000, max_pixels=10**6)


def test_a_lying_header_within_budget_decodes_at_the_header_size_quickly():
    # libjpeg fills what the 64x96 data lacks; what it allocates is the header's 1500x2000
    data = lying_jpeg(1500, 2000)
    rgb = imaging.decode_compressed("jpeg", data, max_pixels=BUDGET)
    assert rgb.shape == (1500, 2000, 3)


def test_a_decoded_size_that_is_not_the_headers_is_refused(monkeypatch):
    # no codec here disagrees with its own header; a decoder that did is simulated
    data = imaging.encode_compressed(np.zeros((64, 128, 3), np.uint8), "png")
    monkeypatch.setattr(imaging.cv2, "imdecode",
                        lambda buf, flags: np.zeros((32, 128, 3), np.uint8))
    with pytest.raises(ImageError, match="decoded 128x32, the header says 128x64"):
        imaging.decode_compressed("png", data)


# ------------------------------------------------------------------ the node's FrameBudget
messages = pytest.importorskip("lmanet_ros.node.messages", reason="needs sensor_msgs")


def _compressed(data: bytes, fmt: str = "png"):
    from sensor_msgs.msg import CompressedImage
    msg = CompressedImage()
    msg.format, msg.data = fmt, data
    return msg


def _raw(height: int, width: int, data: bytes = b""):
    from sensor_msgs.msg import Image
    msg = Image()
    msg.encoding, msg.height, msg.width, msg.step, msg.data = "rgb8", height, width, width * 3, data
    return msg


def test_frame_budget_names_the_parameter_that_refused(bombs):
    budget = messages.FrameBudget(max_frame_pixels=BUDGET, max_network_pixels=2048 * 1024,
                                  network_size=(128, 256))
    with pytest.raises(ImageTooLarge, match=r"frame 8192x8192 \(67108864 pixels\) is over "
                                            r"max_frame_pixels 8294400: refused before decoding"):
        messages.decode(_compressed(bombs["png_8192"].read_bytes()), budget)
    with pytest.raises(ImageTooLarge, match="over max_frame_pixels"):
        messages.decode(_compressed(bombs["jpeg_8000"].read_bytes(), "jpeg"), budget)
    with pytest.raises(ImageTooLarge, match="over max_frame_pixels"):
        messages.decode(_raw(4096, 4096), budget)
    # the network at each frame's own size: max_network_pixels bounds the frame too
    own = messages.FrameBudget(BUDGET, 4096, (0, 0))
    assert own.frame_limit() == 4096
    frame = np.zeros((64, 128, 3), np.uint8)
    with pytest.raises(ImageTooLarge, match="over max_network_pixels 4096 and the network runs "
                                            "at each frame's own size"):
        messages.decode(_compressed(imaging.encode_compressed(frame, "png")), own)
    fixed = messages.FrameBudget(BUDGET, 4096, (32, 64))
    assert messages.decode(_compressed(imaging.encode_compressed(frame, "png")), fixed).shape \
        == (64, 128, 3)
    # a fixed network input over budget (a checkpoint's trained size) refuses every frame
    with pytest.raises(ImageTooLarge, match=r"network input 64x128 \(height x width, 8192 "
                                            r"pixels\) is over max_network_pixels 4096"):
        messages.decode(_raw(2, 2, b"\x00" * 12), messages.FrameBudget(BUDGET, 4096, (64, 128)))
    # the default budget is imaging's hard limit; per-side refusals keep their own words
    assert messages.FrameBudget().frame_limit() == imaging.MAX_PIXELS
    with pytest.raises(ImageTooLarge, match="pixels per side"):
        messages.decode(_raw(1, 20000), budget)


def test_the_network_budget_is_validated_with_the_input_size():
    from lmanet_ros.node.params import MAX_BUDGET_PIXELS, SPEC_BY_NAME, Settings, validate

    assert MAX_BUDGET_PIXELS == imaging.MAX_PIXELS  # the parameters' range is imaging's limit
    assert SPEC_BY_NAME["max_frame_pixels"].int_range == (1, imaging.MAX_PIXELS)
    current = Settings().as_dict()
    assert current["max_frame_pixels"] == BUDGET and current["max_network_pixels"] == 2097152
    reason = validate({"input_height": 8192, "input_width": 8192}, current)
    assert reason.startswith("network input 8192x8192 (input_height x input_width) = 67108864 "
                             "pixels is over max_network_pixels 2097152")
    assert validate({"input_height": 1024, "input_width": 2048}, current) is None
    # one side at a time: the product only counts once both are set
    assert validate({"input_height": 8192}, current) is None
    assert validate({"max_network_pixels": 1000},
                    {**current, "input_height": 64, "input_width": 128}) is not None
    assert validate({"max_network_pixels": 8192},
                    {**current, "input_height": 64, "input_width": 128}) is None
    # at start every value is a change: the same rule
    assert validate({**current, "input_height": 4096, "input_width": 4096}, {}) is not None


def test_refusals_are_counted_apart_in_diagnostics():
    from lmanet_ros.node.diagnostics import camera_status
    from lmanet_ros.node.stats import CameraStats

    stats = CameraStats()
    stats.on_bad_input("corrupt png data")
    stats.on_bad_input("frame 8192x8192 (67108864 pixels) is over max_frame_pixels 8294400",
                       over_budget=True)
    snap = stats.roll()
    assert (snap.bad_inputs, snap.over_budget, snap.period_bad) == (2, 1, 2)
    status = camera_status("/lmanet", "image", "/image", snap, queued=0, memory_length=4,
                           period=1.0, waited_s=0.0)
    values = {kv.key: kv.value for kv in status.values}
    assert (values["frames_over_budget"], values["bad_inputs"]) == ("1", "2")
    assert "over max_frame_pixels" in status.message
