"""Image decoding, encoding and rendering on plain message fields.

Nothing here imports rclpy or message types: the node, the bag evaluation tool (``rosbags``) and the
tests all pass the fields of ``sensor_msgs/Image`` (``encoding``, ``height``, ``width``, ``step``,
``is_bigendian``, ``data``) or ``sensor_msgs/CompressedImage`` (``format``, ``data``) as plain
values. ``data`` may be ``bytes``, ``bytearray``, ``memoryview``, ``array.array('B')`` (rclpy) or a
numpy ``uint8`` array (rosbags).

Every decoder returns RGB ``(H, W, 3)`` ``uint8`` C-contiguous arrays. Sizes are validated before
anything is allocated, so a message that claims more pixels than it carries, or an absurd size, is
refused cheaply with an :class:`ImageError`. A caller's pixel budget (``max_pixels``: the node's
``max_frame_pixels``) is checked against the raw header or the compressed header (PNG IHDR, JPEG
SOF) before decoding, so decoding never allocates more than the budget allows
(:class:`ImageTooLarge`); a compressed image whose decoded size is not its header's is refused.

Encodings and what they become:

- ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``: 8 bits per channel; alpha is dropped, grey
  is replicated to three channels.
- ``rgb16``, ``bgr16``, ``mono16``: the high byte of each 16-bit value (``value >> 8``), with
  ``is_bigendian`` honoured.
- ``8UC1`` and ``8UC3``: OpenCV type names, treated as ``mono8`` and ``bgr8`` (cv_bridge's
  convention: a three-channel OpenCV image is BGR).
- ``yuv422`` (UYVY byte order, as ROS names it) and ``yuv422_yuy2`` (YUYV): BT.601 limited range,
  converted by OpenCV; the width must be even.
- ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8``: the ROS name gives the colours
  of the top-left 2x2 block read row by row; bilinear demosaicing by OpenCV (whose ``Bayer??``
  names differ from ROS's: ROS ``rggb`` is OpenCV ``BayerBG``, see ``_BAYER_TO_RGB``).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "MAX_DIMENSION",
    "MAX_PIXELS",
    "SUPPORTED_ENCODINGS",
    "SUPPORTED_COMPRESSED_FORMATS",
    "ImageError",
    "ImageTooLarge",
    "decode_image",
    "decode_compressed",
    "encode_image",
    "encode_compressed",
    "compressed_image_size",
    "colorize",
    "overlay",
    "palette_lut",
    "check_alpha",
    "confidence_to_mono8",
]

#: Largest accepted width or height, in pixels, for raw and compressed images.
MAX_DIMENSION = 16384
#: Largest accepted pixel count (width * height): 64 Mi pixels, e.g. 8192 x 8192 (192 MiB as RGB).
MAX_PIXELS = 1 << 26


class ImageError(ValueError):
    """An image message that cannot be decoded; the message is one line, fit for a log."""


class ImageTooLarge(ImageError):
    """An image whose header states more pixels than a limit allows, refused before decoding.

    Attributes ``width``, ``height`` (the header's, pixels) and ``limit`` (the pixel count or
    per-side length it exceeds) let a caller say which of its settings refused it.
    """

    def __init__(self, message: str, *, width: int, height: int, limit: int) -> None:
        super().__init__(message)
        self.width = width
        self.height = height
        self.limit = limit


@dataclass(frozen=True)
class _Encoding:
    """Layout of one raw encoding: bytes per pixel and size constraints."""

    bytes_per_pixel: int
    even_width: bool = False
    min_side: int = 1


_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3),
    "bgr8": _Encoding(3),
    "rgba8": _Encoding(4),
    "bgra8": _Encoding(4),
    "mono8": _Encoding(1),
    "rgb16": _Encoding(6),
    "bgr16": _Encoding(6),
    "mono16": _Encoding(2),
    "8UC1": _Encoding(1),
    "8UC3": _Encoding(3),
    "yuv422": _Encoding(2, even_width=True),
    "yuv422_yuy2": _Encoding(2, even_width=True),
    "bayer_rggb8": _Encoding(1, min_side=2),
    "bayer_bggr8": _Encoding(1, min_side=2),
    "bayer_gbrg8": _Encoding(1, min_side=2),
    "bayer_grbg8": _Encoding(1, min_side=2),
}

#: Raw ``sensor_msgs/Image`` encodings understood by :func:`decode_image` and :func:`encode_image`.
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
#: Codecs understood by :func:`decode_compressed` and :func:`encode_compressed`.
SUPPORTED_COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")

# Case-insensitive lookup ("Mono8", "8uc3" are seen in the wild).
_ENCODING_BY_LOWER = {name.lower(): name for name in _ENCODINGS}

# ROS names the colours of the first two pixels of the first two rows; OpenCV names the second
# and third pixels of the second row. The aliases COLOR_BayerRGGB2RGB etc. only exist in recent
# OpenCV, so the classic names are used.
_BAYER_TO_RGB = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
# Offsets (row, column) of R and B inside the 2x2 block; the other two sites are G.
_BAYER_SITES = {
    "bayer_rggb8": ((0, 0), (1, 1)),
    "bayer_bggr8": ((1, 1), (0, 0)),
    "bayer_gbrg8": ((1, 0), (0, 1)),
    "bayer_grbg8": ((0, 1), (1, 0)),
}


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------

def _canonical_encoding(encoding) -> str:
    if not isinstance(encoding, str):
        raise ImageError(f"image encoding must be a string, got {type(encoding).__name__}")
    name = encoding.strip()
    if not name:
        raise ImageError("empty image encoding")
    canonical = _ENCODING_BY_LOWER.get(name.lower())
    if canonical is None:
        raise ImageError(
            f"unsupported image encoding {name!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    return canonical


def _as_size(name: str, value) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise ImageError(f"image {name} must be an integer, got {value!r}") from None
    if number < 0:
        raise ImageError(f"image {name} must be non-negative, got {number}")
    return number


def _check_dimensions(height: int, width: int, what: str = "image",
                      max_pixels: int = MAX_PIXELS) -> None:
    """ImageError for a zero size, ImageTooLarge above :data:`MAX_DIMENSION` per side or above
    ``min(max_pixels, MAX_PIXELS)`` pixels (``width * height``)."""
    if height == 0 or width == 0:
        raise ImageError(f"{what} has zero size (height={height}, width={width})")
    if height > MAX_DIMENSION or width > MAX_DIMENSION:
        raise ImageTooLarge(
            f"{what} too large: {width}x{height} exceeds {MAX_DIMENSION} pixels per side",
            width=width, height=height, limit=MAX_DIMENSION)
    limit = min(max_pixels, MAX_PIXELS)
    if height * width > limit:
        raise ImageTooLarge(
            f"{what} too large: {width}x{height} = {height * width} pixels exceeds {limit}",
            width=width, height=height, limit=limit)


def _byte_length(data) -> int:
    """Length of ``data`` in bytes without copying it."""
    if isinstance(data, np.ndarray):
        return data.nbytes
    if isinstance(data, (list, tuple)):
        return len(data)
    try:
        with memoryview(data) as view:
            return view.nbytes
    except TypeError:
        raise ImageError(
            f"image data must be bytes-like or a uint8 array, got {type(data).__name__}") from None


def _as_uint8(data, count: int) -> np.ndarray:
    """First ``count`` bytes of ``data`` as a 1-D uint8 array, a view where possible."""
    if isinstance(data, (list, tuple)):
        try:
            values = np.asarray(data[:count])
        except (ValueError, TypeError):
            values = np.asarray([], dtype=object)
        if values.dtype.kind not in "iu" or (values.size and (values.min() < 0
                                                              or values.max() > 255)):
            raise ImageError("image data list must hold integers in 0..255")
        return values.astype(np.uint8)
    if isinstance(data, np.ndarray) and not (data.flags.c_contiguous or data.flags.f_contiguous):
        data = np.ascontiguousarray(data)  # unusual input; the copy is of the caller's own array
    try:
        return np.frombuffer(data, dtype=np.uint8, count=count)
    except (TypeError, ValueError, BufferError) as exc:
        raise ImageError(f"image data cannot be read as bytes: {exc}") from None


def _strided(buf: np.ndarray, height: int, width: int, step: int, channels: int,
             itemsize: int = 1, offset: int = 0) -> np.ndarray:
    """A (H, W, C) uint8 view of ``buf`` whose rows start every ``step`` bytes (no copy)."""
    return np.ndarray(shape=(height, width, channels), dtype=np.uint8, buffer=buf, offset=offset,
                      strides=(step, channels * itemsize, itemsize))


# ---------------------------------------------------------------------------------------------
# Raw images
# ---------------------------------------------------------------------------------------------

def decode_image(encoding: str, height: int, width: int, step: int, data,
                 is_bigendian: bool = False, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into RGB ``(H, W, 3)`` uint8.

    Row padding (``step`` larger than ``width * bytes_per_pixel``) is honoured through a strided
    view, never a copy of the padded rows. Pixels are copied once (twice for rgb16 / bgr16 /
    mono16: gathering the high bytes first and letting OpenCV reorder channels is faster than one
    strided numpy copy). For ``rgb8`` without padding the result is a zero-copy view of ``data``,
    marked read-only (copy it before writing into it); every other case returns a new, writable
    array. All results are C-contiguous.

    ``max_pixels``: the largest ``width * height`` accepted (at most :data:`MAX_PIXELS`).

    Raises:
        ImageTooLarge: more than ``max_pixels`` pixels or :data:`MAX_DIMENSION` per side.
        ImageError: empty or unsupported encoding, zero or oversized dimensions, a ``step``
            shorter than a row, ``data`` shorter than ``step * height``, or a size the encoding
            does not allow (odd width for yuv422, less than 2x2 for Bayer).
    """
    name = _canonical_encoding(encoding)
    layout = _ENCODINGS[name]
    height = _as_size("height", height)
    width = _as_size("width", width)
    step = _as_size("step", step)
    _check_dimensions(height, width, max_pixels=max_pixels)
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ImageError(
            f"image step {step} is shorter than a row: width {width} * "
            f"{layout.bytes_per_pixel} bytes per pixel = {row_bytes} for {name}")
    needed = step * height
    available = _byte_length(data)
    if available < needed:
        raise ImageError(
            f"image data too short: {available} bytes, {name} {width}x{height} with step {step} "
            f"needs {needed}")
    if layout.even_width and width % 2:
        raise ImageError(f"{name} needs an even width, got {width}")
    if height < layout.min_side or width < layout.min_side:
        raise ImageError(f"{name} needs at least {layout.min_side}x{layout.min_side} pixels, "
                         f"got {width}x{height}")

    buf = _as_uint8(data, needed)
    if name == "rgb8":
        if step == row_bytes:
            view = buf.reshape(height, width, 3)
            view.flags.writeable = False
            return view
        return np.ascontiguousarray(_strided(buf, height, width, step, 3))
    if name in ("bgr8", "8UC3"):
        return cv2.cvtColor(_strided(buf, height, width, step, 3), cv2.COLOR_BGR2RGB)
    if name == "rgba8":
        return cv2.cvtColor(_strided(buf, height, width, step, 4), cv2.COLOR_RGBA2RGB)
    if name == "bgra8":
        return cv2.cvtColor(_strided(buf, height, width, step, 4), cv2.COLOR_BGRA2RGB)
    if name in ("mono8", "8UC1"):
        return cv2.cvtColor(_strided(buf, height, width, step, 1), cv2.COLOR_GRAY2RGB)
    if name in ("rgb16", "bgr16", "mono16"):
        channels = 1 if name == "mono16" else 3
        # The high byte comes first in big-endian data, second in little-endian data.
        high = _strided(buf, height, width, step, channels, itemsize=2,
                        offset=0 if is_bigendian else 1)
        # Gather the high bytes, then let OpenCV reorder or replicate channels: several times
        # faster than one numpy copy with negative or broadcast strides.
        high = np.ascontiguousarray(high)
        if name == "rgb16":
            return high
        return cv2.cvtColor(high, cv2.COLOR_BGR2RGB if name == "bgr16" else cv2.COLOR_GRAY2RGB)
    if name == "yuv422":
        return cv2.cvtColor(_strided(buf, height, width, step, 2), cv2.COLOR_YUV2RGB_UYVY)
    if name == "yuv422_yuy2":
        return cv2.cvtColor(_strided(buf, height, width, step, 2), cv2.COLOR_YUV2RGB_YUY2)
    # Bayer (the only encodings left).
    return cv2.cvtColor(_strided(buf, height, width, step, 1), _BAYER_TO_RGB[name])


def _check_rgb(rgb, what: str = "rgb", allow_mono: bool = False) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise ValueError(f"{what} must be a uint8 numpy array, got "
                         f"{getattr(rgb, 'dtype', type(rgb).__name__)}")
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        return rgb
    if allow_mono and rgb.ndim == 2:
        return rgb
    expected = "(H, W, 3) or (H, W)" if allow_mono else "(H, W, 3)"
    raise ValueError(f"{what} must have shape {expected}, got {rgb.shape}")


def _rgb_to_yuv422(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    """BT.601 limited-range YCbCr 4:2:2 (the inverse of OpenCV's YUV2RGB_UYVY / _YUY2)."""
    rgbf = rgb.astype(np.float32)
    r, g, b = rgbf[..., 0], rgbf[..., 1], rgbf[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    y = 16.0 + luma * (219.0 / 255.0)
    cb = 128.0 + (b - luma) * (224.0 / 255.0 / 1.772)
    cr = 128.0 + (r - luma) * (224.0 / 255.0 / 1.402)
    # Chroma is shared by each horizontal pixel pair: average it.
    cb = 0.5 * (cb[:, 0::2] + cb[:, 1::2])
    cr = 0.5 * (cr[:, 0::2] + cr[:, 1::2])
    height, width = y.shape
    out = np.empty((height, width // 2, 4), dtype=np.float32)
    if uyvy:
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = cb, y[:, 0::2], cr, y[:, 1::2]
    else:
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = y[:, 0::2], cb, y[:, 1::2], cr
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(height, width * 2)


def _mosaic(rgb: np.ndarray, name: str) -> np.ndarray:
    (ry, rx), (by, bx) = _BAYER_SITES[name]
    out = rgb[..., 1].copy()
    out[ry::2, rx::2] = rgb[ry::2, rx::2, 0]
    out[by::2, bx::2] = rgb[by::2, bx::2, 2]
    return out


def encode_image(rgb: np.ndarray, encoding: str, *, row_padding: int = 0,
                 is_bigendian: bool = False) -> tuple[int, bytes]:
    """Encode an RGB ``(H, W, 3)`` uint8 image as the ``step`` and ``data`` of an Image message.

    The inverse of :func:`decode_image`. For ``mono8`` / ``8UC1`` / ``mono16`` a ``(H, W)`` array
    is taken as it is (class-id masks), and an RGB array is converted to grey (BT.601 luma). 16-bit
    encodings store ``v * 257`` so the high byte is ``v``. Bayer encodings mosaic the RGB image;
    yuv422 encodings average the chroma of each pixel pair.

    Args:
        rgb: the image.
        encoding: one of :data:`SUPPORTED_ENCODINGS`.
        row_padding: extra bytes appended to each row (filled with 0xAB), for testing decoders.
        is_bigendian: byte order of 16-bit encodings.

    Returns:
        ``(step, data)`` with ``len(data) == step * height``.
    """
    name = _canonical_encoding(encoding)
    mono = name in ("mono8", "8UC1", "mono16")
    rgb = _check_rgb(rgb, allow_mono=mono)
    padding = operator.index(row_padding)
    if padding < 0:
        raise ValueError(f"row_padding must be non-negative, got {padding}")
    height, width = rgb.shape[:2]
    _check_dimensions(height, width)
    layout = _ENCODINGS[name]
    if layout.even_width and width % 2:
        raise ValueError(f"{name} needs an even width, got {width}")

    if mono and rgb.ndim == 3:
        rgb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    if name in ("rgb8", "mono8", "8UC1"):
        pixels = rgb
    elif name in ("bgr8", "8UC3"):
        pixels = rgb[..., ::-1]
    elif name == "rgba8":
        pixels = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    elif name == "bgra8":
        pixels = np.dstack([rgb[..., ::-1], np.full((height, width), 255, np.uint8)])
    elif name in ("rgb16", "bgr16", "mono16"):
        ordered = rgb[..., ::-1] if name == "bgr16" else rgb
        wide = ordered.astype(np.uint16) * np.uint16(257)
        pixels = wide.astype(">u2" if is_bigendian else "<u2").view(np.uint8)
    elif name in ("yuv422", "yuv422_yuy2"):
        pixels = _rgb_to_yuv422(rgb, uyvy=name == "yuv422")
    else:
        pixels = _mosaic(rgb, name)

    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    if not padding:
        return rows.shape[1], rows.tobytes()
    padded = np.full((height, rows.shape[1] + padding), 0xAB, dtype=np.uint8)
    padded[:, :rows.shape[1]] = rows
    return padded.shape[1], padded.tobytes()


# ---------------------------------------------------------------------------------------------
# Compressed images
# ---------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers without a length field: TEM and RST0..RST7 (SOI is consumed first).
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
# Start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))

_IMREAD_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
_IMREAD_GIVES_RGB = hasattr(cv2, "IMREAD_COLOR_RGB")


def _codec_of_format(fmt) -> str | None:
    """The codec a CompressedImage ``format`` names ("jpeg", "png"), or None when empty."""
    if not isinstance(fmt, str):
        raise ImageError(f"compressed format must be a string, got {type(fmt).__name__}")
    text = fmt.strip().lower()
    if not text:
        return None
    if "compresseddepth" in text:
        raise ImageError(f"compressedDepth images are not supported (format {fmt!r})")
    # image_transport writes "<encoding>; jpeg compressed <target>" or "...; png compressed ..."
    codec_part = text.split(";", 1)[1] if ";" in text else text
    if "png" in codec_part:
        return "png"
    if "jpeg" in codec_part or "jpg" in codec_part:
        return "jpeg"
    raise ImageError(f"unsupported compressed format {fmt!r} "
                     f"(supported: {', '.join(SUPPORTED_COMPRESSED_FORMATS)})")


def _png_size(head: memoryview) -> tuple[int, int]:
    if len(head) < 24 or bytes(head[12:16]) != b"IHDR":
        raise ImageError("corrupt PNG data: missing IHDR header")
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    return width, height


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    size = len(data)
    pos = 2  # after SOI
    while pos + 1 < size:
        if data[pos] != 0xFF:
            raise ImageError(f"corrupt JPEG data: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        pos += 2
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            raise ImageError("corrupt JPEG data: no frame header before the image data")
        if pos + 2 > size:
            break
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            raise ImageError(f"corrupt JPEG data: segment length {length} at byte {pos}")
        if marker in _JPEG_SOF:
            if pos + 7 > size:
                break
            height = (data[pos + 3] << 8) | data[pos + 4]
            width = (data[pos + 5] << 8) | data[pos + 6]
            if height == 0:
                raise ImageError("unsupported JPEG: height defined by a DNL marker")
            return width, height
        pos += length
    raise ImageError("truncated JPEG data: no frame header")


def _byte_view(data) -> memoryview:
    if isinstance(data, (list, tuple)):
        data = bytes(data)
    elif isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        view = memoryview(data)
    except TypeError:
        raise ImageError(f"compressed data must be bytes-like or a uint8 array, "
                         f"got {type(data).__name__}") from None
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def compressed_image_size(data) -> tuple[str, int, int]:
    """``(codec, width, height)`` read from a JPEG SOF or PNG IHDR header, without decoding.

    Raises:
        ImageError: the data is empty, neither JPEG nor PNG, or its header is corrupt.
    """
    view = _byte_view(data)
    if len(view) == 0:
        raise ImageError("empty compressed image data")
    if bytes(view[:8]) == _PNG_SIGNATURE:
        return ("png", *_png_size(view[:24]))
    if bytes(view[:3]) == b"\xff\xd8\xff":
        return ("jpeg", *_jpeg_size(view))
    raise ImageError(f"compressed data is neither JPEG nor PNG (starts with {bytes(view[:8])!r})")


def decode_compressed(format: str, data, *,  # noqa: A002 - message field name
                      max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/CompressedImage`` into RGB ``(H, W, 3)`` uint8.

    ``format`` is checked for codecs that are not supported (``compressedDepth``, ``tiff``...);
    the codec itself is recognised from the data, which is therefore decoded even when the format
    string misnames it. The header's width and height are checked against :data:`MAX_DIMENSION`
    and ``max_pixels`` (at most :data:`MAX_PIXELS`) before decoding (decompression bombs: a 63 KB
    PNG may hold 8192x8192 zeros), so what decoding allocates is bounded by the budget whatever
    the data; the decoded size must be the header's. EXIF orientation is ignored so that pixels
    stay aligned with the camera. Alpha is dropped, 16-bit PNGs are reduced to 8 bits, grey images
    are replicated to three channels.

    Raises:
        ImageTooLarge: the header states more than ``max_pixels`` pixels or more than
            :data:`MAX_DIMENSION` per side.
        ImageError: unsupported format, empty, corrupt or truncated data, a decoded size that is
            not the header's.
    """
    _codec_of_format(format)
    view = _byte_view(data)
    codec, width, height = compressed_image_size(view)
    _check_dimensions(height, width, what=f"{codec} image", max_pixels=max_pixels)
    decoded = cv2.imdecode(np.frombuffer(view, dtype=np.uint8), _IMREAD_FLAGS)
    if decoded is None:
        raise ImageError(f"corrupt {codec} data: decoding failed ({len(view)} bytes)")
    if decoded.shape[:2] != (height, width):
        raise ImageError(f"corrupt {codec} data: decoded {decoded.shape[1]}x{decoded.shape[0]}, "
                         f"the header says {width}x{height}")
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    if not _IMREAD_GIVES_RGB:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return decoded


def encode_compressed(rgb: np.ndarray, fmt: str, *, jpeg_quality: int = 90) -> bytes:
    """Compress an RGB ``(H, W, 3)`` (or grey ``(H, W)``) uint8 image as JPEG or PNG bytes.

    ``fmt`` is a CompressedImage format string naming the codec ("jpeg", "png",
    "rgb8; jpeg compressed bgr8", ...).
    """
    codec = _codec_of_format(fmt)
    if codec is None:
        raise ValueError("empty compressed format: name jpeg or png")
    rgb = _check_rgb(rgb, allow_mono=True)
    quality = operator.index(jpeg_quality)
    if not 0 <= quality <= 100:
        raise ValueError(f"jpeg_quality must be in 0..100, got {quality}")
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if codec == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if codec == "jpeg" else ".png", image, params)
    if not ok:
        raise ValueError(f"{codec} encoding failed for an image of shape {rgb.shape}")
    return encoded.tobytes()


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def palette_lut(palette) -> np.ndarray:
    """The (256, 1, 3) uint8 lookup table of a (K, 3) palette of integers in 0..255 (K <= 256):
    row i is the colour of class id i, black for ids >= K."""
    colors = np.asarray(palette)
    if colors.ndim != 2 or colors.shape[1] != 3 or not 0 < colors.shape[0] <= 256:
        raise ValueError(f"palette must have shape (K, 3) with 1 <= K <= 256, got {colors.shape}")
    if colors.dtype != np.uint8:
        if not np.issubdtype(colors.dtype, np.integer) or colors.min() < 0 or colors.max() > 255:
            raise ValueError("palette must hold integers in 0..255")
    lut = np.zeros((256, 1, 3), dtype=np.uint8)
    lut[:colors.shape[0], 0] = colors
    return lut


def colorize(labels: np.ndarray, palette) -> np.ndarray:
    """Colour a class-id mask: ``(H, W)`` uint8 ids and a ``(K, 3)`` palette -> ``(H, W, 3)``.

    Ids without a palette entry (``>= K``, e.g. 255 = ignore) are black. A lookup table applied by
    OpenCV (about twice as fast as ``np.take``).
    """
    if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be a (H, W) uint8 array, got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} "
                         f"{getattr(labels, 'shape', '')}")
    lut = palette_lut(palette)
    return cv2.LUT(cv2.cvtColor(labels, cv2.COLOR_GRAY2RGB), lut)


def overlay(rgb: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """Blend ``color`` over ``rgb``: ``rgb * (1 - alpha) + color * alpha``, rounded, new array.

    ``alpha`` in [0, 1] is the weight of the colour mask (0 gives the image, 1 the mask).
    """
    rgb = _check_rgb(rgb, "rgb")
    color = _check_rgb(color, "color")
    if rgb.shape != color.shape:
        raise ValueError(f"rgb and color shapes differ: {rgb.shape} vs {color.shape}")
    alpha = check_alpha(alpha)
    return cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in [0, 1] (the overlay's colour weight); ValueError otherwise."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha


def confidence_to_mono8(conf: np.ndarray) -> np.ndarray:
    """Map a float confidence ``(H, W)`` in [0, 1] to uint8 0..255, rounded (values clipped;
    NaN gives 0)."""
    conf = np.asarray(conf)
    if conf.ndim != 2 or not np.issubdtype(conf.dtype, np.floating):
        raise ValueError(f"confidence must be a (H, W) float array, got {conf.dtype} {conf.shape}")
    scaled = np.multiply(conf, 255.0, dtype=np.float32)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    return np.rint(scaled, out=scaled).astype(np.uint8)
