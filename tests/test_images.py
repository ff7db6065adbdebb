"""Image headers, decoding to BGR uint8, EXIF orientation, and the reasons of failures.

Files are made in tmp_path: with cv2.imwrite where OpenCV can write the format,
and with Pillow (CMYK JPEG, palette PNG, GIF, EXIF orientation, lossy WebP),
skipped with a reason when Pillow is not installed. Pillow is only a test helper.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest

from facecascade.images import (
    ImageError,
    _jpeg_header,
    _read_header,
    apply_orientation,
    decode_gray,
    decode_image,
    header_from_bytes,
    load_gray,
    load_image,
    read_image_header,
    to_gray,
)

BIG = 10_000_000


def _pillow():
    return pytest.importorskip("PIL.Image", reason="Pillow is needed to write this format")


def _noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, c) if c > 1 else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _marked(h: int = 20, w: int = 40) -> np.ndarray:
    """BGR image with a red block at the top-left, so orientation errors show."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 1] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
    img[:5, :10] = (0, 0, 255)
    return img


def _pil_bytes(rgb: np.ndarray | object, fmt: str, **kw) -> bytes:
    image = _pillow()
    im = rgb if isinstance(rgb, image.Image) else image.fromarray(rgb)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _exif(orientation: int) -> bytes:
    image = _pillow()
    ex = image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _huge_png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _huge_jpeg(w: int, h: int) -> bytes:
    sof = struct.pack(">BHHB", 8, h, w, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


# ---------------------------------------------------------------------------- headers

@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff", ".webp", ".gif"])
def test_header_of_opencv_written_files(tmp_path, ext):
    path = tmp_path / f"a{ext}"
    assert cv2.imwrite(str(path), _noise(30, 50))
    assert read_image_header(path) == (50, 30)
    assert load_image(path, max_pixels=BIG).shape == (30, 50, 3)


@pytest.mark.parametrize("fmt,kw", [("WEBP", {"quality": 80}), ("WEBP", {"lossless": True}),
                                    ("GIF", {}), ("BMP", {}), ("TIFF", {})])
def test_header_of_pillow_written_files(fmt, kw):
    data = _pil_bytes(_noise(21, 37)[:, :, ::-1], fmt, **kw)
    header = header_from_bytes(data)
    assert (header.width, header.height) == (37, 21)
    assert decode_image(data, max_pixels=BIG).shape == (21, 37, 3)


def test_webp_vp8x_header_with_alpha():
    rgba = np.dstack([_noise(9, 13), np.full((9, 13), 200, np.uint8)])
    data = _pil_bytes(rgba, "WEBP", quality=90, exif=_exif(1))
    assert data[12:16] == b"VP8X"
    header = header_from_bytes(data)
    assert (header.width, header.height) == (13, 9)


def test_header_does_not_decode_pixels(tmp_path):
    # a PNG header claiming 100000 x 90000 pixels, with no image data at all
    path = tmp_path / "bomb.png"
    path.write_bytes(_huge_png(100_000, 90_000))
    assert read_image_header(path) == (100_000, 90_000)
    with pytest.raises(ImageError) as err:
        load_image(path, max_pixels=40_000_000)
    assert err.value.reason == ("image too large: 100000x90000 = 9000000000 pixels "
                                "> max_pixels 40000000")
    assert err.value.path == str(path)
    jpeg = tmp_path / "bomb.jpg"
    jpeg.write_bytes(_huge_jpeg(60_000, 50_000))
    assert read_image_header(jpeg) == (60_000, 50_000)
    with pytest.raises(ImageError, match="image too large: 60000x50000"):
        load_image(jpeg, max_pixels=40_000_000)


def test_pixel_limit_is_inclusive(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), _noise(10, 20))
    assert load_image(path, max_pixels=200).shape == (10, 20, 3)
    with pytest.raises(ImageError, match="image too large"):
        load_image(path, max_pixels=199)


def test_jpeg_header_skips_junk_between_segments():
    ok, jpg = cv2.imencode(".jpg", _noise(30, 50))
    data = jpg.tobytes()
    junk = data[:2] + b"junk" * 20_000 + data[2:]
    header = header_from_bytes(junk)
    assert (header.width, header.height) == (50, 30)


def _pillow_header(data: bytes):
    """What Pillow's reader gives for ``data``: the header, or the ImageError's reason."""
    try:
        return _read_header(io.BytesIO(data), len(data), "x")
    except ImageError as exc:
        return exc.reason


def _jpeg_variants() -> dict[str, bytes]:
    image = _pillow()
    rgb = _noise(23, 31)[:, :, ::-1]
    out = {"opencv": cv2.imencode(".jpg", _noise(23, 31))[1].tobytes(),
           "grey": cv2.imencode(".jpg", _noise(23, 31, 1))[1].tobytes(),
           "progressive": _pil_bytes(rgb, "JPEG", progressive=True),
           "cmyk": _pil_bytes(image.fromarray(_noise(23, 31, 4), "CMYK"), "JPEG"),
           "icc+comment": _pil_bytes(rgb, "JPEG", icc_profile=b"\0" * 600, comment=b"hi"),
           "restart": _pil_bytes(rgb, "JPEG", restart_marker_blocks=1),
           "xmp": _pil_bytes(rgb, "JPEG", xmp=b'<x tiff:Orientation="6"/>')}
    for orientation in range(0, 10):
        ex = image.Exif()
        ex[0x0112] = orientation
        ex[0x010F] = "maker"
        out[f"exif-{orientation}"] = _pil_bytes(rgb, "JPEG", exif=ex.tobytes())
    big_endian = (b"Exif\0\0MM\0*\0\0\0\x08\0\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
                  + b"\0\0\0\0")
    data = out["opencv"]
    out["exif-big-endian"] = (data[:2] + b"\xff\xe1" + struct.pack(">H", len(big_endian) + 2)
                              + big_endian + data[2:])
    long_tag = big_endian.replace(struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0),
                                  struct.pack(">HHII", 0x0112, 4, 1, 6))
    out["exif-long"] = (data[:2] + b"\xff\xe1" + struct.pack(">H", len(long_tag) + 2)
                        + long_tag + data[2:])
    out["fill-bytes"] = data[:2] + b"\xff\xff" + data[2:]
    return out


def test_fast_jpeg_header_is_pillows_or_leaves_it_to_pillow():
    fast = 0
    for name, data in _jpeg_variants().items():
        for cut in sorted({len(data), *range(0, min(len(data), 1200), 7)}):
            part = data[:cut]
            header = _jpeg_header(part)
            if header is not None:
                fast += 1
                assert header == _pillow_header(part), (name, cut)
        if name in ("opencv", "grey", "progressive", "cmyk", "icc+comment", "restart",
                    "exif-big-endian") or name.startswith("exif-"):
            if name != "exif-long":
                assert _jpeg_header(data) is not None, name
    assert fast > 50
    # the orientation read by both, and what the fast reader leaves to Pillow
    variants = _jpeg_variants()
    assert _jpeg_header(variants["exif-6"]).orientation == 6
    assert (_jpeg_header(variants["exif-6"]).width, _jpeg_header(variants["exif-6"]).height) \
        == (23, 31)
    assert _jpeg_header(variants["exif-0"]).orientation == 1  # out of range: as displayed
    assert _jpeg_header(variants["exif-big-endian"]).orientation == 6
    for name in ("xmp", "exif-long", "fill-bytes"):
        assert _jpeg_header(variants[name]) is None, name
        assert header_from_bytes(variants[name]) == _pillow_header(variants[name])
    assert header_from_bytes(variants["xmp"]).orientation == 6  # Pillow reads XMP's


def test_unknown_format_falls_back_to_opencv(tmp_path):
    path = tmp_path / "a.ppm"
    cv2.imwrite(str(path), _noise(12, 7))
    assert header_from_bytes(path.read_bytes()) is None
    assert read_image_header(path) == (7, 12)
    assert load_image(path, max_pixels=BIG).shape == (12, 7, 3)
    with pytest.raises(ImageError, match="image too large: 7x12"):
        load_image(path, max_pixels=50)


# ---------------------------------------------------------------------------- orientation

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_matches_opencv_and_a_viewer(fmt):
    image = _pillow()
    from PIL import ImageOps

    rgb = _marked()[:, :, ::-1]
    for orientation in range(1, 9):
        kw = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
        data = _pil_bytes(rgb, fmt, exif=_exif(orientation), **kw)
        ours = decode_image(data, max_pixels=BIG)
        header = header_from_bytes(data)
        assert header.orientation == orientation
        assert (header.width, header.height) == (ours.shape[1], ours.shape[0])
        assert ours.shape[:2] == ((20, 40) if orientation <= 4 else (40, 20))
        # cv2.imread(IMREAD_COLOR) applies EXIF orientation itself: same pixels
        opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(ours, opencv)
        viewer = np.asarray(ImageOps.exif_transpose(image.open(io.BytesIO(data))).convert("RGB"))
        tolerance = 40 if fmt == "JPEG" else 0
        assert np.abs(ours.astype(int) - viewer[:, :, ::-1]).max() <= tolerance


def test_tiff_orientation_is_applied_once():
    image = _pillow()
    from PIL import ImageOps

    for orientation in (3, 6, 8):
        data = _pil_bytes(_marked()[:, :, ::-1], "TIFF", exif=_exif(orientation))
        ours = decode_image(data, max_pixels=BIG)
        viewer = np.asarray(ImageOps.exif_transpose(image.open(io.BytesIO(data))).convert("RGB"))
        np.testing.assert_array_equal(ours, viewer[:, :, ::-1])


def test_apply_orientation_undoes_each_exif_transform():
    a = _noise(3, 5, 1)
    # stored = inverse transform of the displayed picture, per EXIF
    stored = {1: a, 2: a[:, ::-1], 3: a[::-1, ::-1], 4: a[::-1], 5: a.T,
              6: np.rot90(a, 1), 7: np.rot90(a, 2).T, 8: np.rot90(a, -1)}
    for orientation, s in stored.items():
        np.testing.assert_array_equal(apply_orientation(np.ascontiguousarray(s), orientation), a)


# ---------------------------------------------------------------------------- depth, channels

def test_16_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32896, 65535]], np.uint16)
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), values)
    out = load_image(path, max_pixels=BIG)
    assert out.dtype == np.uint8 and out.shape == (1, 5, 3)
    assert out[0, :, 0].tolist() == [0, 1, 4, 128, 255]
    colour = np.dstack([values, values // 2, values // 4]).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), colour)
    out = load_image(tmp_path / "c16.png", max_pixels=BIG)
    expected = np.rint(colour.astype(float) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_alpha_is_composited_on_white(tmp_path):
    bgra = np.zeros((1, 3, 4), np.uint8)
    bgra[0, :, :3] = (10, 20, 30)
    bgra[0, :, 3] = (0, 255, 128)
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), bgra)
    out = load_image(path, max_pixels=BIG)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]
    a = 128 / 255
    assert out[0, 2].tolist() == [round(v * a + 255 * (1 - a)) for v in (10, 20, 30)]


def test_grey_becomes_bgr(tmp_path):
    grey = _noise(6, 7, 1)
    for ext in (".png", ".jpg"):
        path = tmp_path / f"g{ext}"
        cv2.imwrite(str(path), grey)
        out = load_image(path, max_pixels=BIG)
        assert out.shape == (6, 7, 3)
        assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()
    np.testing.assert_array_equal(load_image(tmp_path / "g.png", max_pixels=BIG)[:, :, 0], grey)


@pytest.mark.parametrize("fmt,transparency", [("PNG", None), ("PNG", 0), ("GIF", None)])
def test_palette_images_read_correctly(fmt, transparency):
    image = _pillow()
    pal = image.fromarray(_noise(16, 24)).convert("P")
    kw = {} if transparency is None else {"transparency": transparency}
    data = _pil_bytes(pal, fmt, **kw)
    ours = decode_image(data, max_pixels=BIG)
    rgba = np.asarray(image.open(io.BytesIO(data)).convert("RGBA")).astype(float)
    a = rgba[:, :, 3:] / 255
    expected = np.rint(rgba[:, :, :3] * a + 255 * (1 - a))[:, :, ::-1]
    assert np.abs(ours.astype(float) - expected).max() <= 1
    if transparency is not None:
        assert (np.asarray(pal) == 0).any()  # some pixels really are transparent


def test_cmyk_jpeg_reads_as_bgr():
    image = _pillow()
    rgb = _noise(24, 32)
    data = _pil_bytes(image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    ours = decode_image(data, max_pixels=BIG)
    reference = np.asarray(image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1]
    assert ours.shape == (24, 32, 3)
    assert np.abs(ours.astype(int) - reference).mean() < 3
    assert np.abs(ours.astype(int) - rgb[:, :, ::-1]).mean() < 20


def test_to_gray():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 2] = 255  # red
    assert to_gray(bgr).tolist() == [[76] * 3] * 2
    grey = _noise(4, 4, 1)
    assert to_gray(grey) is not None and (to_gray(grey) == grey).all()
    with pytest.raises(TypeError):
        to_gray(np.zeros((2, 2), np.float64))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_grey_decoding_is_to_gray_of_the_colour_picture(fmt, tmp_path):
    """decode_gray / load_gray: the same picture as to_gray(decode_image), EXIF turns
    included; a JPEG's luma differs from the grey of its decoded colours by rounding only."""
    rgb = _marked()[:, :, ::-1]
    for orientation in range(1, 9):
        kw = {"quality": 95} if fmt == "JPEG" else {}
        data = _pil_bytes(rgb, fmt, exif=_exif(orientation), **kw)
        want = to_gray(decode_image(data, max_pixels=BIG))
        got = decode_gray(data, max_pixels=BIG)
        assert got.shape == want.shape and got.dtype == np.uint8
        diff = np.abs(got.astype(int) - want)
        # JPEG: saturated colours clip in RGB, not in luma (up to about 20 levels there)
        assert diff.mean() < 0.5 and diff.max() <= (40 if fmt == "JPEG" else 0), orientation
    path = tmp_path / f"a.{fmt.lower()}"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_gray(path, max_pixels=BIG), got)


def test_grey_decoding_of_cmyk_jpeg_and_alpha_png():
    image = _pillow()
    rgb = _noise(24, 32)
    cmyk = _pil_bytes(image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    want = to_gray(decode_image(cmyk, max_pixels=BIG))
    assert np.abs(decode_gray(cmyk, max_pixels=BIG).astype(int) - want).mean() < 3
    rgba = np.dstack([rgb, np.full((24, 32), 128, np.uint8)])
    ok, png = cv2.imencode(".png", rgba)
    np.testing.assert_array_equal(decode_gray(png.tobytes(), max_pixels=BIG),
                                  to_gray(decode_image(png.tobytes(), max_pixels=BIG)))


def test_grey_decoding_refuses_as_colour_decoding(tmp_path):
    with pytest.raises(ImageError, match="image missing"):
        load_gray(tmp_path / "nope.jpg", max_pixels=BIG)
    ok, jpg = cv2.imencode(".jpg", _noise(40, 40))
    (tmp_path / "cut.jpg").write_bytes(jpg.tobytes()[:-100])
    with pytest.raises(ImageError, match="truncated JPEG"):
        load_gray(tmp_path / "cut.jpg", max_pixels=BIG)
    with pytest.raises(ImageError, match="image too large: 40x40"):
        decode_gray(jpg.tobytes(), max_pixels=1000)


# ---------------------------------------------------------------------------- failures

def _reason(path, **kw) -> str:
    with pytest.raises(ImageError) as err:
        load_image(path, max_pixels=BIG, **kw)
    assert str(err.value).startswith(str(path))
    return err.value.reason


def test_failure_reasons(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "image missing"
    assert _reason(tmp_path) == "image missing: not a regular file"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "image unreadable: empty file"
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    assert _reason(tmp_path / "text.jpg") == "image unreadable: not an image (unknown format)"
    ok, jpg = cv2.imencode(".jpg", _noise(40, 40))
    data = jpg.tobytes()
    for cut in (2, 100, len(data) // 2):
        (tmp_path / "cut.jpg").write_bytes(data[:-cut])
        assert _reason(tmp_path / "cut.jpg") == "image unreadable: truncated JPEG"
    (tmp_path / "head.jpg").write_bytes(data[:30])
    assert _reason(tmp_path / "head.jpg").startswith("image unreadable: truncated")
    ok, png = cv2.imencode(".png", _noise(40, 40))
    (tmp_path / "cut.png").write_bytes(png.tobytes()[:200])
    assert _reason(tmp_path / "cut.png") == "image unreadable: PNG data could not be decoded"
    (tmp_path / "sig.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    assert _reason(tmp_path / "sig.png").startswith("image unreadable: truncated")


def test_a_path_the_system_refuses_is_an_image_error(tmp_path):
    # stat fails with ENAMETOOLONG: an ImageError for the rejects table, not an OSError
    assert _reason(tmp_path / ("x" * 300 + ".jpg")).startswith("image unreadable: ")
    with pytest.raises(ImageError, match="image unreadable"):
        load_gray(tmp_path / ("x" * 300 + ".jpg"), max_pixels=BIG)
    assert _reason(tmp_path / "nope" / "a.jpg") == "image missing"
    (tmp_path / "file").write_bytes(b"x")
    assert _reason(tmp_path / "file" / "a.jpg") == "image missing"  # ENOTDIR


def test_read_image_header_failures(tmp_path):
    with pytest.raises(ImageError, match="image missing"):
        read_image_header(tmp_path / "nope.png")
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image_header(tmp_path / "e.png")
    (tmp_path / "x.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(ImageError, match="not an image"):
        read_image_header(tmp_path / "x.bin")


def test_decode_image_of_empty_bytes():
    with pytest.raises(ImageError, match="empty file") as err:
        decode_image(b"", max_pixels=BIG, path="upload")
    assert err.value.path == "upload"
