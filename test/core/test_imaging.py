"""Tests for lmanet_ros.imaging: raw and compressed decoding, encoding, rendering."""
import array
import tracemalloc

import cv2
import numpy as np
import pytest

from lmanet_ros import imaging
from lmanet_ros.imaging import (
    ImageError,
    colorize,
    compressed_image_size,
    confidence_to_mono8,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
    overlay,
)

HEIGHT, WIDTH = 48, 64
BLOCK = 8  # region size: even, so yuv pixel pairs and bayer 2x2 cells never straddle regions


def make_rgb(height=HEIGHT, width=WIDTH, block=BLOCK):
    """A (H, W, 3) image of block x block regions, each of a distinct colour."""
    rows, cols = np.mgrid[0:height, 0:width]
    region = (rows // block) * ((width + block - 1) // block) + cols // block
    rgb = np.stack([(region * 37 + 11) % 256, (region * 91 + 60) % 256, (region * 53 + 200) % 256],
                   axis=-1)
    return rgb.astype(np.uint8)


def make_grey(height=HEIGHT, width=WIDTH):
    return make_rgb(height, width)[..., 1].copy()


def interior_mask(height=HEIGHT, width=WIDTH, margin=2):
    """True on pixels at least ``margin`` pixels away from every region boundary and border."""
    rows, cols = np.mgrid[0:height, 0:width]
    row_ok = (rows % BLOCK >= margin) & (rows % BLOCK < BLOCK - margin)
    col_ok = (cols % BLOCK >= margin) & (cols % BLOCK < BLOCK - margin)
    return row_ok & col_ok


# Encodings whose colour round trip is exact.
LOSSLESS_COLOUR = ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "rgb16", "bgr16"]
MONO = ["mono8", "8UC1", "mono16"]
YUV = ["yuv422", "yuv422_yuy2"]
BAYER = ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"]
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "8UC3": 3, "rgb16": 6,
                   "bgr16": 6, "mono8": 1, "8UC1": 1, "mono16": 2, "yuv422": 2, "yuv422_yuy2": 2,
                   "bayer_rggb8": 1, "bayer_bggr8": 1, "bayer_gbrg8": 1, "bayer_grbg8": 1}


def test_every_supported_encoding_is_tested():
    assert set(imaging.SUPPORTED_ENCODINGS) == set(LOSSLESS_COLOUR + MONO + YUV + BAYER)
    assert set(imaging.SUPPORTED_ENCODINGS) == set(BYTES_PER_PIXEL)


def roundtrip(rgb, encoding, **kwargs):
    is_bigendian = kwargs.get("is_bigendian", False)
    step, data = encode_image(rgb, encoding, **kwargs)
    height, width = rgb.shape[:2]
    assert len(data) == step * height
    return decode_image(encoding, height, width, step, data, is_bigendian=is_bigendian)


def check_output(out, height=HEIGHT, width=WIDTH):
    assert out.dtype == np.uint8
    assert out.shape == (height, width, 3)
    assert out.flags.c_contiguous


# --------------------------------------------------------------------------------------------
# Raw round trips
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("is_bigendian", [False, True])
@pytest.mark.parametrize("encoding", LOSSLESS_COLOUR)
def test_lossless_colour_roundtrip(encoding, is_bigendian):
    rgb = make_rgb()
    out = roundtrip(rgb, encoding, is_bigendian=is_bigendian)
    check_output(out)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("is_bigendian", [False, True])
@pytest.mark.parametrize("encoding", MONO)
def test_mono_roundtrip_replicates_grey(encoding, is_bigendian):
    grey = make_grey()
    out = roundtrip(grey, encoding, is_bigendian=is_bigendian)
    check_output(out)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


@pytest.mark.parametrize("encoding", MONO)
def test_mono_encoding_of_rgb_uses_luma(encoding):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 1] = 200  # pure green: BT.601 luma 0.587 * 200 = 117.4
    out = roundtrip(rgb, encoding)
    np.testing.assert_allclose(out.astype(int), 117, atol=1)


@pytest.mark.parametrize("encoding", YUV)
def test_yuv_roundtrip_within_tolerance(encoding):
    rgb = make_rgb()
    out = roundtrip(rgb, encoding)
    check_output(out)
    # Regions are 8 pixels wide and start at even columns, so each pixel pair shares one colour
    # and 4:2:2 subsampling loses nothing. What remains is quantisation to 8-bit limited-range
    # Y/Cb/Cr (each off by <= 0.5) amplified by the BT.601 inverse (R = 1.164 dY + 1.596 dCr,
    # B = 1.164 dY + 2.018 dCb, at most ~1.6 levels) plus OpenCV's fixed-point rounding (0.5),
    # and clipping of values the limited range cannot reach exactly: 3 levels covers it.
    diff = np.abs(out.astype(int) - rgb.astype(int))
    assert diff.max() <= 3, diff.max()


@pytest.mark.parametrize("encoding", BAYER)
def test_bayer_roundtrip_exact_inside_regions(encoding):
    rgb = make_rgb()
    out = roundtrip(rgb, encoding)
    check_output(out)
    # Bilinear demosaicing interpolates from the 3x3 neighbourhood: inside a flat region (2 or
    # more pixels from any region edge) every neighbour has the region's colour, so the result is
    # exact up to rounding. Near edges colours bleed by design, so they are not compared.
    mask = interior_mask()
    diff = np.abs(out.astype(int) - rgb.astype(int))[mask]
    assert diff.max() <= 1, diff.max()


def ros_bayer_mosaic(colour, pattern, height=8, width=10):
    """Mosaic a uniform colour by the ROS definition, independently of the module: the pattern
    names the colours of pixels (0, 0), (0, 1), (1, 0), (1, 1)."""
    index = {"r": 0, "g": 1, "b": 2}
    raw = np.empty((height, width), np.uint8)
    for (dy, dx), letter in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern):
        raw[dy::2, dx::2] = colour[index[letter]]
    return raw


@pytest.mark.parametrize("colour", [(200, 100, 30), (20, 240, 90)])
@pytest.mark.parametrize("encoding", BAYER)
def test_bayer_known_colour_survives_demosaicing(encoding, colour):
    pattern = encoding[len("bayer_"):-1]
    raw = ros_bayer_mosaic(colour, pattern)
    out = decode_image(encoding, raw.shape[0], raw.shape[1], raw.shape[1], raw.tobytes())
    # Interior pixels: a pattern mix-up (OpenCV names differ from ROS names) would swap R and B.
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to(colour, out[2:-2, 2:-2].shape))
    # And the module's own mosaic agrees with the ROS definition.
    step, data = encode_image(np.broadcast_to(np.array(colour, np.uint8), raw.shape + (3,)).copy(),
                              encoding)
    assert data == raw.tobytes()


# Pure red in BT.601 limited range: Y = 81, Cb = 90, Cr = 240.
@pytest.mark.parametrize("encoding, pair", [
    ("yuv422", bytes([90, 81, 240, 81])),       # U Y0 V Y1
    ("yuv422_yuy2", bytes([81, 90, 81, 240])),  # Y0 U Y1 V
])
def test_yuv_byte_order(encoding, pair):
    width, height = 4, 2
    data = pair * (width // 2) * height
    out = decode_image(encoding, height, width, width * 2, data)
    np.testing.assert_allclose(out.reshape(-1, 3).astype(int), [[255, 0, 0]] * width * height,
                               atol=3)


@pytest.mark.parametrize("encoding, channels", [("mono16", 1), ("rgb16", 3), ("bgr16", 3)])
@pytest.mark.parametrize("is_bigendian", [False, True])
def test_16_bit_takes_high_byte(encoding, channels, is_bigendian):
    # Values whose low byte is 0xFF: rounding instead of v >> 8 would give the next level.
    values = np.array([0x00FF, 0x12FF, 0x7F80, 0xFFFF, 0x0100, 0xA0FF], np.uint16)
    pixels = np.resize(values, (2, 3, channels))
    data = pixels.astype(">u2" if is_bigendian else "<u2").tobytes()
    out = decode_image(encoding, 2, 3, 3 * 2 * channels, data, is_bigendian=is_bigendian)
    high = (pixels >> 8).astype(np.uint8)
    if encoding == "mono16":
        expected = np.repeat(high, 3, axis=2)
    elif encoding == "bgr16":
        expected = high[..., ::-1]
    else:
        expected = high
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------------------------
# Row padding, buffer types, views
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", [1, 5, 64])
@pytest.mark.parametrize("encoding", imaging.SUPPORTED_ENCODINGS)
def test_row_padding_is_honoured(encoding, padding):
    rgb = make_grey() if encoding in MONO else make_rgb()
    step0, data0 = encode_image(rgb, encoding)
    step, data = encode_image(rgb, encoding, row_padding=padding)
    assert step0 == WIDTH * BYTES_PER_PIXEL[encoding]
    assert step == step0 + padding
    unpadded = decode_image(encoding, HEIGHT, WIDTH, step0, data0)
    padded = decode_image(encoding, HEIGHT, WIDTH, step, data)
    check_output(padded)
    np.testing.assert_array_equal(padded, unpadded)


def test_padding_bytes_are_ignored():
    rgb = make_rgb(4, 6)
    step, data = encode_image(rgb, "rgb8", row_padding=7)
    noisy = np.frombuffer(data, np.uint8).reshape(4, step).copy()
    noisy[:, 18:] = np.arange(7) * 30  # anything in the padding
    np.testing.assert_array_equal(decode_image("rgb8", 4, 6, step, noisy.tobytes()), rgb)


def test_longer_data_than_needed_is_accepted():
    rgb = make_rgb()
    step, data = encode_image(rgb, "bgr8")
    out = decode_image("bgr8", HEIGHT, WIDTH, step, data + b"\x00" * 100)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview,
                                  lambda b: array.array("B", b),
                                  lambda b: np.frombuffer(b, np.uint8).copy(),
                                  list], ids=["bytes", "bytearray", "memoryview", "array",
                                              "numpy", "list"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_data_buffer_types(encoding, wrap):
    rgb = make_grey() if encoding == "mono8" else make_rgb()
    step, data = encode_image(rgb, encoding)
    out = decode_image(encoding, HEIGHT, WIDTH, step, wrap(data))
    check_output(out)
    expected = np.repeat(rgb[..., None], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(out, expected)


def test_rgb8_unpadded_is_a_read_only_zero_copy_view():
    rgb = make_rgb()
    buffer = np.frombuffer(rgb.tobytes(), np.uint8).copy()
    out = decode_image("rgb8", HEIGHT, WIDTH, WIDTH * 3, buffer)
    assert np.shares_memory(out, buffer)
    assert not out.flags.writeable
    assert out.flags.c_contiguous
    assert buffer.flags.writeable  # the caller's buffer is left alone


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "rgb16", "yuv422", "bayer_rggb8"])
def test_other_paths_return_writable_copies(encoding):
    rgb = make_grey() if encoding == "mono8" else make_rgb()
    step, data = encode_image(rgb, encoding, row_padding=2)
    buffer = np.frombuffer(data, np.uint8).copy()
    out = decode_image(encoding, HEIGHT, WIDTH, step, buffer)
    assert out.flags.writeable and out.flags.c_contiguous
    assert not np.shares_memory(out, buffer)


def test_encoding_names_are_case_insensitive():
    rgb = make_rgb()
    step, data = encode_image(rgb, "bgr8")
    np.testing.assert_array_equal(decode_image(" BGR8 ", HEIGHT, WIDTH, step, data), rgb)
    np.testing.assert_array_equal(decode_image("8uc3", HEIGHT, WIDTH, step, data), rgb)


# --------------------------------------------------------------------------------------------
# Invalid raw images
# --------------------------------------------------------------------------------------------

GOOD = dict(encoding="rgb8", height=4, width=6, step=18, data=bytes(72))


@pytest.mark.parametrize("changes, message", [
    (dict(height=0), "zero size"),
    (dict(width=0), "zero size"),
    (dict(width=20000, step=60000), "too large"),
    (dict(height=100000), "too large"),
    (dict(height=16000, width=16000, step=48000), "too large"),  # pixel count
    (dict(step=17), "shorter than a row"),
    (dict(step=-1), "non-negative"),
    (dict(height=4.0), "integer"),
    (dict(data=bytes(71)), "too short"),
    (dict(data=b""), "too short"),
    (dict(step=19), "too short"),  # 19 * 4 = 76 > 72
    (dict(encoding="rgb9"), "unsupported image encoding 'rgb9'"),
    (dict(encoding="32FC1"), "supported: rgb8, bgr8"),
    (dict(encoding=""), "empty image encoding"),
    (dict(encoding="  "), "empty image encoding"),
    (dict(encoding=None), "must be a string"),
    (dict(data=12345), "bytes-like"),
    (dict(data=[300] * 72), "integers in 0..255"),
    (dict(data=[0.5] * 72), "integers in 0..255"),
    (dict(encoding="yuv422", width=5, step=10, data=bytes(40)), "even width"),
    (dict(encoding="bayer_rggb8", height=1, width=6, step=6, data=bytes(6)), "at least 2x2"),
])
def test_invalid_raw_images_raise(changes, message):
    fields = {**GOOD, **changes}
    with pytest.raises(ImageError, match=message) as info:
        decode_image(fields["encoding"], fields["height"], fields["width"], fields["step"],
                     fields["data"])
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("encoding, height, width, bpp", [
    ("rgb8", 8000, 8000, 3),   # 192 MB claimed, within the size limits: refused as too short
    ("mono16", 16384, 4096, 2),
    ("rgb8", 100000, 100000, 3),
])
def test_huge_claimed_size_is_refused_without_allocating(encoding, height, width, bpp):
    tracemalloc.start()
    try:
        with pytest.raises(ImageError):
            decode_image(encoding, height, width, width * bpp, b"\x00" * 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # numpy reports its allocations to tracemalloc


# --------------------------------------------------------------------------------------------
# Compressed images
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["png", "PNG", "bgr8; png compressed bgr8", "rgb8; png compressed"])
def test_png_roundtrip_is_exact(fmt):
    rgb = make_rgb()
    data = encode_compressed(rgb, fmt)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out = decode_compressed(fmt, data)
    check_output(out)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "rgb8; jpeg compressed bgr8",
                                 "bgr8; jpeg compressed bgr8"])
def test_jpeg_roundtrip_is_close(fmt):
    rgb = make_rgb(block=16)  # regions aligned with the 16x16 blocks of 4:2:0 JPEG
    data = encode_compressed(rgb, fmt, jpeg_quality=95)
    assert data[:3] == b"\xff\xd8\xff"
    out = decode_compressed(fmt, data)
    check_output(out)
    # Lossy: the decoder's chroma upsampling interpolates across region edges, so edge pixels of
    # these saturated, unrelated colours are off by tens of levels, while region interiors are
    # nearly exact. Measured: mean 2.9, median 0. Swapped R and B would give a mean near 55.
    diff = np.abs(out.astype(int) - rgb.astype(int))
    assert diff.mean() < 5, diff.mean()
    assert np.median(diff) <= 1


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_grey_compressed_images_decode_to_three_channels(codec):
    grey = make_grey()
    out = decode_compressed(codec, encode_compressed(grey, codec, jpeg_quality=100))
    check_output(out)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert np.abs(out[..., 1].astype(int) - grey).max() <= 2


@pytest.mark.parametrize("wrap", [bytes, lambda b: np.frombuffer(b, np.uint8).copy(),
                                  lambda b: array.array("B", b)], ids=["bytes", "numpy", "array"])
def test_compressed_buffer_types(wrap):
    rgb = make_rgb()
    out = decode_compressed("png", wrap(encode_compressed(rgb, "png")))
    np.testing.assert_array_equal(out, rgb)


def test_codec_is_recognised_from_the_data():
    rgb = make_rgb()
    # A png payload mislabelled "jpeg" (seen with some drivers) and an empty format.
    np.testing.assert_array_equal(decode_compressed("jpeg", encode_compressed(rgb, "png")), rgb)
    np.testing.assert_array_equal(decode_compressed("", encode_compressed(rgb, "png")), rgb)


@pytest.mark.parametrize("height, width", [(48, 64), (17, 33), (1, 1), (480, 7)])
@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_header_size_parsing(codec, height, width):
    data = encode_compressed(np.zeros((height, width, 3), np.uint8), codec)
    assert compressed_image_size(data) == (codec, width, height)


def _png_with_size(width, height):
    data = bytearray(encode_compressed(make_rgb(), "png"))
    assert data[12:16] == b"IHDR"
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    return bytes(data)


def _jpeg_with_size(width, height):
    data = bytearray(encode_compressed(make_rgb(), "jpeg"))
    sof = data.index(b"\xff\xc0")  # baseline frame header: FFC0, length, precision, H, W
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("codec, data", [
    ("png", _png_with_size(100000, 100000)),
    ("png", _png_with_size(20000, 10)),
    ("png", _png_with_size(16000, 16000)),  # each side allowed, pixel count not
    ("jpeg", _jpeg_with_size(60000, 60000)),
])
def test_decompression_bomb_is_refused_before_decoding(codec, data):
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="too large"):
            decode_compressed(codec, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def _corrupt_png_body():
    data = bytearray(encode_compressed(make_rgb(), "png"))
    middle = len(data) // 2
    data[middle:middle + 16] = b"\x00" * 16  # breaks the IDAT CRC / zlib stream
    return bytes(data)


@pytest.mark.parametrize("fmt, data, message", [
    ("jpeg", b"", "empty"),
    ("png", np.zeros(0, np.uint8), "empty"),
    ("jpeg", b"not an image at all", "neither JPEG nor PNG"),
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00", "IHDR"),
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated JPEG"),
    ("jpeg", b"\xff\xd8\xff\xda\x00\x08" + bytes(20), "no frame header"),
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x01" + bytes(20), "segment length"),
    ("png", _png_with_size(0, 10), "zero size"),
    ("png", _corrupt_png_body(), "corrupt png"),
    ("tiff", b"II*\x00", "unsupported compressed format 'tiff'"),
    ("16UC1; compressedDepth png", b"\x89PNG", "compressedDepth"),
    (None, b"", "must be a string"),
])
def test_invalid_compressed_images_raise(fmt, data, message):
    with pytest.raises(ImageError, match=message) as info:
        decode_compressed(fmt, data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(fmt=""), "empty compressed format"),
    (dict(fmt="webp"), "unsupported"),
    (dict(fmt="jpeg", jpeg_quality=101), "jpeg_quality"),
    (dict(fmt="png", rgb=np.zeros((4, 4, 3), np.float32)), "uint8"),
])
def test_invalid_compression_arguments_raise(kwargs, message):
    kwargs = {"rgb": make_rgb(), **kwargs}
    with pytest.raises(ValueError, match=message):
        encode_compressed(kwargs.pop("rgb"), kwargs.pop("fmt"), **kwargs)


@pytest.mark.parametrize("rgb, encoding, kwargs, message", [
    (np.zeros((4, 4, 3), np.float32), "rgb8", {}, "uint8"),
    (np.zeros((4, 4), np.uint8), "rgb8", {}, r"\(H, W, 3\)"),
    (np.zeros((4, 4, 4), np.uint8), "bgr8", {}, "shape"),
    (np.zeros((4, 5, 3), np.uint8), "yuv422", {}, "even width"),
    (np.zeros((4, 4, 3), np.uint8), "rgb8", {"row_padding": -1}, "row_padding"),
    (np.zeros((4, 4, 3), np.uint8), "nv12", {}, "unsupported"),
])
def test_invalid_encode_arguments_raise(rgb, encoding, kwargs, message):
    with pytest.raises(ValueError, match=message):
        encode_image(rgb, encoding, **kwargs)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

PALETTE = np.array([[10, 20, 30], [200, 0, 0], [0, 255, 7]], np.uint8)


def test_colorize_known_pattern():
    labels = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    out = colorize(labels, PALETTE)
    expected = np.array([[[10, 20, 30], [200, 0, 0], [0, 255, 7]],
                         [[0, 0, 0], [0, 0, 0], [200, 0, 0]]], np.uint8)  # 3, 255: no colour
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_colorize_full_palette_and_large_image():
    palette = np.stack([np.arange(256), 255 - np.arange(256), np.arange(256) // 2], 1)
    labels = np.random.default_rng(0).integers(0, 256, (96, 128), dtype=np.uint8)
    out = colorize(labels, palette.astype(np.uint8))
    np.testing.assert_array_equal(out, palette[labels])


@pytest.mark.parametrize("labels, palette, message", [
    (np.zeros((2, 2), np.int64), PALETTE, "uint8"),
    (np.zeros((2, 2, 1), np.uint8), PALETTE, r"\(H, W\)"),
    (np.zeros((2, 2), np.uint8), PALETTE[:, :2], r"\(K, 3\)"),
    (np.zeros((2, 2), np.uint8), np.zeros((257, 3), np.uint8), "K <= 256"),
    (np.zeros((2, 2), np.uint8), np.full((2, 3), 300), "0..255"),
])
def test_colorize_rejects_bad_input(labels, palette, message):
    with pytest.raises(ValueError, match=message):
        colorize(labels, palette)


@pytest.mark.parametrize("alpha, expected", [
    (0.0, 100), (1.0, 200), (0.25, 125), (0.6, 160), (0.3, 130),
])
def test_overlay_weights(alpha, expected):
    rgb = np.full((3, 5, 3), 100, np.uint8)
    color = np.full((3, 5, 3), 200, np.uint8)
    out = overlay(rgb, color, alpha)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, expected)
    assert not np.shares_memory(out, rgb)


def test_overlay_per_pixel_pattern():
    rgb = np.array([[[0, 100, 255], [40, 40, 40]]], np.uint8)
    color = np.array([[[255, 0, 0], [0, 0, 240]]], np.uint8)
    out = overlay(rgb, color, 0.5)
    # (0 + 255) / 2 = 127.5 is avoided; every value below is an exact or clearly rounded one.
    np.testing.assert_array_equal(out[0, 1], [20, 20, 140])
    np.testing.assert_array_equal(out[0, 0, 1:], [50, 128])  # 127.5 rounds half to even: 128


def test_overlay_accepts_a_read_only_decoded_view():
    rgb = make_rgb()
    view = decode_image("rgb8", HEIGHT, WIDTH, WIDTH * 3, rgb.tobytes())
    out = overlay(view, colorize(make_grey() % 3, PALETTE), 0.5)
    assert out.shape == rgb.shape


@pytest.mark.parametrize("alpha, shape, message", [
    (-0.1, (2, 2, 3), "alpha"), (1.5, (2, 2, 3), "alpha"), (float("nan"), (2, 2, 3), "alpha"),
    (0.5, (2, 3, 3), "shapes differ"),
])
def test_overlay_rejects_bad_input(alpha, shape, message):
    with pytest.raises(ValueError, match=message):
        overlay(np.zeros((2, 2, 3), np.uint8), np.zeros(shape, np.uint8), alpha)


def test_confidence_to_mono8():
    conf = np.array([[0.0, 1.0, 0.5, 0.2], [-0.1, 1.5, np.nan, 0.999]], np.float32)
    out = confidence_to_mono8(conf)
    assert out.dtype == np.uint8 and out.shape == conf.shape
    np.testing.assert_array_equal(out, [[0, 255, 128, 51], [0, 255, 0, 255]])


def test_confidence_to_mono8_is_monotonic_and_rounded():
    conf = np.linspace(0, 1, 1021, dtype=np.float32).reshape(1, -1)
    out = confidence_to_mono8(conf).astype(int)
    assert (np.diff(out) >= 0).all()
    assert np.abs(out - conf * 255).max() <= 0.5 + 1e-4


def test_confidence_to_mono8_rejects_integer_input():
    with pytest.raises(ValueError, match="float"):
        confidence_to_mono8(np.zeros((2, 2), np.uint8))


def test_opencv_bayer_constants_match_ros_names():
    # Where OpenCV has the explicit aliases (>= 4.x), they must agree with the table used.
    alias = getattr(cv2, "COLOR_BayerRGGB2RGB", None)
    if alias is None:
        pytest.skip("this OpenCV has no COLOR_BayerRGGB2RGB alias")
    assert imaging._BAYER_TO_RGB["bayer_rggb8"] == alias
    assert imaging._BAYER_TO_RGB["bayer_bggr8"] == cv2.COLOR_BayerBGGR2RGB
    assert imaging._BAYER_TO_RGB["bayer_gbrg8"] == cv2.COLOR_BayerGBRG2RGB
    assert imaging._BAYER_TO_RGB["bayer_grbg8"] == cv2.COLOR_BayerGRBG2RGB
