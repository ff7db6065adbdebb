"""Image decoding: size from the header first, then BGR uint8 pixels as a viewer shows them.

Every image the library reads goes through :func:`load_image` (or
:func:`decode_image` for bytes already in memory), which

1. reads the header with small pure-Python parsers (PNG, JPEG, GIF, BMP,
   TIFF, WebP) and refuses, *before decoding*, an image whose header claims
   more than ``max_pixels`` pixels (a decompression bomb costs nothing then);
2. decodes with ``cv2.imdecode(..., IMREAD_UNCHANGED)`` so that bit depth and
   alpha survive, then normalises to BGR uint8:

   - 16-bit samples are *scaled* to 8 bits (``round(v * 255 / 65535)``), not clipped;
     float samples (EXR, float TIFF) are taken as 0..1, clipped and scaled;
   - grey becomes 3-channel BGR; palette images are expanded by libpng/giflib;
     CMYK (Adobe) JPEGs are converted to BGR by OpenCV's JPEG decoder;
   - an alpha channel is **composited on white** (``out = a * colour + (1 - a) * 255``),
     the way a viewer shows a transparent picture on a white page; the colour
     stored under fully transparent pixels is often black or junk, so simply
     dropping alpha would show that instead;
3. applies the EXIF orientation (JPEG APP1, PNG ``eXIf``, WebP ``EXIF``), so the
   array is the picture as a viewer shows it. ``cv2.imread`` with
   ``IMREAD_COLOR`` does the same (checked for OpenCV 5.0 on all 8 orientations
   of JPEG, PNG and WebP, see ``tests/test_images.py``), but ``IMREAD_UNCHANGED``
   does not, so the rotation is applied here. TIFF orientation is applied by
   libtiff inside OpenCV even with ``IMREAD_UNCHANGED`` and is not repeated.

Sizes are ``(width, height)`` as displayed, i.e. after the EXIF orientation
(a portrait photo stored as 4000x3000 with orientation 6 is ``(3000, 4000)``).

Failures raise :class:`ImageError` with a short ``reason`` that goes into the
rejects table as is: ``image missing``, ``image unreadable: <why>``,
``image too large: <w>x<h> = <n> pixels > max_pixels <m>``.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from .checks import check_image

logger = logging.getLogger(__name__)

#: EXIF orientation tag number (in TIFF IFD0 and in EXIF blobs)
_ORIENTATION_TAG = 0x0112
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...), not DHT/JPG/DAC
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is the short text for the rejects table.

    Attributes
    ----------
    path : str
        The file (or a label for in-memory bytes).
    reason : str
        ``"<category>: <detail>"`` or just ``"<category>"``, e.g.
        ``"image unreadable: truncated JPEG"``.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, before any pixel is decoded.

    ``width`` and ``height`` are as displayed (after the EXIF orientation);
    ``orientation`` is the EXIF value 1..8 (1 when absent); ``decoder_orients``
    is True when OpenCV's decoder applies the orientation itself (TIFF).
    """

    format: str
    width: int
    height: int
    orientation: int = 1
    decoder_orients: bool = False


class _HeaderError(Exception):
    """Internal: a header with a known signature but bad content."""


# ---------------------------------------------------------------------------- header parsing

def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _HeaderError(f"truncated {what}")
    return data


def _tiff_ifd0(data: bytes) -> tuple[str, dict[int, int]] | None:
    """Byte order and the integer-valued entries of IFD0 of a TIFF structure (an EXIF blob).

    Only SHORT and LONG entries with one value are returned (that is all that is needed:
    width, height, orientation). None when the structure is not TIFF.
    """
    if data[:4] == b"II*\x00":
        bo = "<"
    elif data[:4] == b"MM\x00*":
        bo = ">"
    else:
        return None
    (ifd,) = struct.unpack(bo + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(bo + "H", data[ifd:ifd + 2])
    entries: dict[int, int] = {}
    for i in range(count):
        off = ifd + 2 + 12 * i
        if off + 12 > len(data):
            break
        tag, typ, n = struct.unpack(bo + "HHI", data[off:off + 8])
        if n != 1:
            continue
        if typ == 3:  # SHORT
            entries[tag] = struct.unpack(bo + "H", data[off + 8:off + 10])[0]
        elif typ == 4:  # LONG
            entries[tag] = struct.unpack(bo + "I", data[off + 8:off + 12])[0]
    return bo, entries


def _exif_orientation(blob: bytes) -> int:
    """EXIF orientation 1..8 from a TIFF-structured EXIF blob; 1 if absent or invalid."""
    parsed = _tiff_ifd0(blob)
    if parsed is None:
        return 1
    value = parsed[1].get(_ORIENTATION_TAG, 1)
    return value if 1 <= value <= 8 else 1


def _displayed(fmt: str, w: int, h: int, orientation: int, decoder_orients: bool = False
               ) -> ImageHeader:
    if w <= 0 or h <= 0:
        raise _HeaderError(f"{fmt} header gives size {w}x{h}")
    if orientation >= 5:
        w, h = h, w
    return ImageHeader(fmt, w, h, orientation, decoder_orients)


def _parse_png(f: BinaryIO) -> ImageHeader:
    f.seek(8)
    length, ctype = struct.unpack(">I4s", _read_exact(f, 8, "PNG header"))
    if ctype != b"IHDR" or length < 8:
        raise _HeaderError("PNG without IHDR chunk")
    w, h = struct.unpack(">II", _read_exact(f, 8, "PNG header"))
    f.seek(length - 8 + 4, io.SEEK_CUR)  # rest of IHDR + CRC
    orientation = 1
    while True:  # look for eXIf before the image data
        head = f.read(8)
        if len(head) < 8:
            break
        length, ctype = struct.unpack(">I4s", head)
        if ctype in (b"IDAT", b"IEND"):
            break
        if ctype == b"eXIf":
            orientation = _exif_orientation(f.read(length))
            break
        f.seek(length + 4, io.SEEK_CUR)
    return _displayed("PNG", w, h, orientation)


def _skip_to_ff(f: BinaryIO, chunk: int = 65536) -> None:
    """Move ``f`` to the next 0xFF byte (or to the end of the file)."""
    while True:
        start = f.tell()
        block = f.read(chunk)
        if not block:
            return
        i = block.find(b"\xff")
        if i >= 0:
            f.seek(start + i)
            return


def _parse_jpeg(f: BinaryIO) -> ImageHeader:
    f.seek(2)
    orientation = 1
    while True:
        byte = _read_exact(f, 1, "JPEG header")
        if byte != b"\xff":  # junk between segments: libjpeg skips it, so do we
            _skip_to_ff(f)
            continue
        marker = _read_exact(f, 1, "JPEG header")[0]
        while marker == 0xFF:  # fill bytes
            marker = _read_exact(f, 1, "JPEG header")[0]
        if marker in _STANDALONE_MARKERS or marker == 0x00:
            continue
        if marker in (0xD9, 0xDA):
            raise _HeaderError("JPEG without a frame header (SOF)")
        (length,) = struct.unpack(">H", _read_exact(f, 2, "JPEG header"))
        if length < 2:
            raise _HeaderError("bad JPEG segment length")
        if marker in _SOF_MARKERS:
            _, h, w = struct.unpack(">BHH", _read_exact(f, 5, "JPEG frame header"))
            return _displayed("JPEG", w, h, orientation)
        segment = _read_exact(f, length - 2, "JPEG segment")
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(segment[6:])


def _parse_gif(f: BinaryIO) -> ImageHeader:
    f.seek(6)
    w, h = struct.unpack("<HH", _read_exact(f, 4, "GIF header"))
    return _displayed("GIF", w, h, 1)


def _parse_bmp(f: BinaryIO) -> ImageHeader:
    f.seek(14)
    (dib,) = struct.unpack("<I", _read_exact(f, 4, "BMP header"))
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        w, h = struct.unpack("<HH", _read_exact(f, 4, "BMP header"))
    else:
        w, h = struct.unpack("<ii", _read_exact(f, 8, "BMP header"))
    return _displayed("BMP", w, abs(h), 1)


def _parse_tiff(f: BinaryIO) -> ImageHeader:
    f.seek(0)
    bo = "<" if _read_exact(f, 2, "TIFF header") == b"II" else ">"
    f.seek(4)
    (ifd,) = struct.unpack(bo + "I", _read_exact(f, 4, "TIFF header"))
    f.seek(ifd)
    (count,) = struct.unpack(bo + "H", _read_exact(f, 2, "TIFF directory"))
    table = _read_exact(f, 12 * count, "TIFF directory")
    # reuse the EXIF IFD walker on a synthetic TIFF holding just this directory
    fake = (b"II*\x00" if bo == "<" else b"MM\x00*") + struct.pack(bo + "IH", 8, count) + table
    entries = _tiff_ifd0(fake)[1]  # type: ignore[index]
    if 256 not in entries or 257 not in entries:
        raise _HeaderError("TIFF without ImageWidth/ImageLength")
    orientation = entries.get(_ORIENTATION_TAG, 1)
    orientation = orientation if 1 <= orientation <= 8 else 1
    return _displayed("TIFF", entries[256], entries[257], orientation, decoder_orients=True)


def _parse_webp(f: BinaryIO) -> ImageHeader:
    f.seek(12)
    fourcc, size = struct.unpack("<4sI", _read_exact(f, 8, "WebP header"))
    body = _read_exact(f, min(size, 30), "WebP header")
    if fourcc == b"VP8X":
        w = 1 + int.from_bytes(body[4:7], "little")
        h = 1 + int.from_bytes(body[7:10], "little")
        orientation = 1
        f.seek(20 + size + (size & 1))
        while True:  # look for an EXIF chunk
            head = f.read(8)
            if len(head) < 8:
                break
            fourcc2, size2 = struct.unpack("<4sI", head)
            if fourcc2 == b"EXIF":
                blob = f.read(size2)
                orientation = _exif_orientation(blob[6:] if blob.startswith(b"Exif") else blob)
                break
            f.seek(size2 + (size2 & 1), io.SEEK_CUR)
        return _displayed("WebP", w, h, orientation)
    if fourcc == b"VP8 ":
        if len(body) < 10 or body[3:6] != b"\x9d\x01\x2a":
            raise _HeaderError("bad WebP (VP8) frame header")
        w, h = struct.unpack("<HH", body[6:10])
        return _displayed("WebP", w & 0x3FFF, h & 0x3FFF, 1)
    if fourcc == b"VP8L":
        if len(body) < 5 or body[0] != 0x2F:
            raise _HeaderError("bad WebP (VP8L) header")
        bits = int.from_bytes(body[1:5], "little")
        return _displayed("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1)
    raise _HeaderError(f"unknown WebP chunk {fourcc!r}")


def _parse_header(f: BinaryIO) -> ImageHeader | None:
    """Header of a seekable binary stream; None for a format without a parser here.

    Raises :class:`_HeaderError` when the signature is known but the header is bad.
    """
    sig = f.read(16)
    if sig.startswith(b"\x89PNG\r\n\x1a\n"):
        parser = _parse_png
    elif sig.startswith(b"\xff\xd8"):
        parser = _parse_jpeg
    elif sig[:6] in (b"GIF87a", b"GIF89a"):
        parser = _parse_gif
    elif sig.startswith(b"BM"):
        parser = _parse_bmp
    elif sig[:4] in (b"II*\x00", b"MM\x00*"):
        parser = _parse_tiff
    elif sig[:4] == b"RIFF" and sig[8:12] == b"WEBP":
        parser = _parse_webp
    else:
        return None
    try:
        return parser(f)
    except struct.error as exc:
        raise _HeaderError(f"truncated header ({exc})") from None


# ---------------------------------------------------------------------------- public API

def _open_checked(path: Path) -> None:
    """Raise ImageError for a path that is not a readable, non-empty regular file."""
    if not path.exists():
        raise ImageError(path, "image missing")
    if not path.is_file():
        raise ImageError(path, "image missing: not a regular file")
    if path.stat().st_size == 0:
        raise ImageError(path, "image unreadable: empty file")


def header_from_bytes(data: bytes, *, path: str | Path = "<bytes>") -> ImageHeader | None:
    """:class:`ImageHeader` of an encoded image in memory; None for an unknown format.

    Raises
    ------
    ImageError
        Empty data, or a known format with a bad or truncated header.
    """
    if not data:
        raise ImageError(path, "image unreadable: empty file")
    try:
        return _parse_header(io.BytesIO(data))
    except _HeaderError as exc:
        raise ImageError(path, f"image unreadable: {exc}") from None


def read_image_header(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as displayed, without decoding its pixels.

    PNG, JPEG, GIF, BMP, TIFF and WebP headers are parsed here (reading at most
    the segments before the first frame). Any other format falls back to a full
    decode by OpenCV, whose own pixel limit applies (environment variable
    ``OPENCV_IO_MAX_IMAGE_PIXELS``, default 2**30).

    Parameters
    ----------
    path : str or Path
        The image file.

    Returns
    -------
    tuple of int
        Width and height in pixels, after the EXIF orientation.

    Raises
    ------
    ImageError
        Missing, empty, or unreadable file.
    """
    path = Path(path)
    _open_checked(path)
    try:
        with path.open("rb") as f:
            header = _parse_header(f)
    except _HeaderError as exc:
        raise ImageError(path, f"image unreadable: {exc}") from None
    except OSError as exc:
        raise ImageError(path, f"image unreadable: {exc.strerror or exc}") from None
    if header is not None:
        return header.width, header.height
    logger.debug("%s: no header parser for this format, decoding with OpenCV", path)
    img = _imdecode(path.read_bytes(), path, "unknown format")
    return int(img.shape[1]), int(img.shape[0])


def _imdecode(data: bytes, path: str | Path, fmt: str) -> np.ndarray:
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        what = "not an image (unknown format)" if fmt == "unknown format" else \
            f"{fmt} data could not be decoded"
        raise ImageError(path, f"image unreadable: {what}")
    return img


def _check_pixels(width: int, height: int, max_pixels: int, path: str | Path) -> None:
    if width * height > max_pixels:
        raise ImageError(path, f"image too large: {width}x{height} = {width * height} pixels "
                               f"> max_pixels {max_pixels}")


def _jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the first frame header.

    ``0xFFD9`` cannot occur inside entropy-coded data (0xFF is stuffed as 0xFF00), and
    EXIF thumbnails (with their own EOI) come before the frame header, so a file cut
    anywhere inside its scans has no EOI after the SOF.
    """
    sof = _find_sof(data)
    return sof is not None and data.find(b"\xff\xd9", sof) != -1


def _find_sof(data: bytes) -> int | None:
    try:
        f = io.BytesIO(data)
        _parse_jpeg(f)
        return f.tell()
    except (_HeaderError, struct.error):
        return None


def _to_unit_scale(img: np.ndarray, path: str | Path) -> tuple[np.ndarray, float]:
    """Samples as they are and the value of 'full intensity' for their dtype."""
    if img.dtype == np.uint8:
        return img, 255.0
    if img.dtype == np.uint16:
        return img, 65535.0
    if img.dtype.kind == "f":
        return np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0), 1.0
    raise ImageError(path, f"image unreadable: unsupported sample type {img.dtype}")


def _to_bgr_uint8(img: np.ndarray, path: str | Path) -> np.ndarray:
    """BGR uint8 from ``IMREAD_UNCHANGED`` output: scale depth, expand grey, composite alpha."""
    img, full = _to_unit_scale(img, path)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / full
        colour = img[:, :, :3].astype(np.float32)
        img = colour * alpha + full * (1.0 - alpha)
    elif img.ndim == 3 and img.shape[2] == 2:  # grey + alpha
        alpha = img[:, :, 1].astype(np.float32) / full
        img = img[:, :, 0].astype(np.float32) * alpha + full * (1.0 - alpha)
    elif not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ImageError(path, f"image unreadable: unsupported layout {img.shape}")
    if img.dtype != np.uint8:
        img = np.rint(img.astype(np.float64) * (255.0 / full)).clip(0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF ``orientation`` (1..8) into the picture as displayed.

    >>> a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    >>> apply_orientation(a, 6).tolist()  # stored rotated 90 deg counter-clockwise
    [[3, 0], [4, 1], [5, 2]]
    """
    if orientation == 2:
        return cv2.flip(img, 1)
    if orientation == 3:
        return cv2.flip(img, -1)
    if orientation == 4:
        return cv2.flip(img, 0)
    if orientation == 5:
        return cv2.transpose(img)
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(img), -1)
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


def decode_image(data: bytes, *, max_pixels: int, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 ``(H, W, 3)`` as a viewer shows them.

    See the module docstring for what is normalised (depth, channels, alpha,
    orientation). The header's pixel count is checked against ``max_pixels``
    before decoding; for a format without a header parser it is checked after.

    Parameters
    ----------
    data : bytes
        The whole encoded file.
    max_pixels : int
        Largest ``width * height`` accepted.
    path : str or Path
        Label for messages.

    Raises
    ------
    ImageError
        Empty, truncated, unknown or undecodable data, or too many pixels.
    """
    header = header_from_bytes(data, path=path)
    fmt = header.format if header is not None else "unknown format"
    if header is not None:
        _check_pixels(header.width, header.height, max_pixels, path)
        if header.format == "JPEG" and not _jpeg_complete(data):
            raise ImageError(path, "image unreadable: truncated JPEG")
    img = _imdecode(data, path, fmt)
    if header is None:
        _check_pixels(img.shape[1], img.shape[0], max_pixels, path)
    img = _to_bgr_uint8(img, path)
    if header is not None and not header.decoder_orients:
        img = apply_orientation(img, header.orientation)
    if header is not None and (img.shape[1], img.shape[0]) != (header.width, header.height):
        raise ImageError(path, f"image unreadable: decoded size {img.shape[1]}x{img.shape[0]} "
                               f"differs from the {fmt} header's {header.width}x{header.height}")
    return np.ascontiguousarray(img)


def load_image(path: str | Path, *, max_pixels: int) -> np.ndarray:
    """Load an image file as BGR uint8 ``(H, W, 3)``, EXIF-rotated, refusing huge ones first.

    Parameters
    ----------
    path : str or Path
        The image file.
    max_pixels : int
        Largest ``width * height`` accepted; checked on the header before decoding.

    Returns
    -------
    numpy.ndarray
        uint8 BGR image ``(H, W, 3)``.

    Raises
    ------
    ImageError
        ``reason`` is ``image missing``, ``image unreadable: ...`` or ``image too large: ...``.
    """
    path = Path(path)
    _open_checked(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(path, f"image unreadable: {exc.strerror or exc}") from None
    return decode_image(data, max_pixels=max_pixels, path=path)


def to_gray(img: np.ndarray) -> np.ndarray:
    """Grey uint8 ``(H, W)`` of a grey or BGR uint8 image (ITU-R 601 weights, as OpenCV).

    >>> to_gray(np.full((2, 2, 3), 200, np.uint8)).tolist()
    [[200, 200], [200, 200]]
    """
    img = check_image(img)
    if img.ndim == 2:
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
