"""Annotation readers, validation against the images, ingest summary and the content split."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from facecascade import formats
from facecascade.formats import (
    BOX_COLUMNS,
    FACE_COLUMNS,
    FACE_DTYPES,
    POINT_COLUMNS,
    FormatError,
    IngestError,
    assign_split,
    empty_faces,
    empty_rejects,
    faces_to_arrays,
    ingest,
    read_cuhk,
    read_list,
    read_mtfl,
    read_pts,
    reason_category,
    reject_messages,
    validate_faces,
)
from facecascade.io import write_parquet_atomic

BIG = 10_000_000
#: a face in a 100 x 80 image: LE, RE, N, LM, RM
FACE = np.array([[30, 30], [60, 30], [45, 45], [32, 60], [58, 60]], float)
BOX = (20.0, 15.0, 70.0, 72.0)  # left, top, right, bottom


def _image(root: Path, rel: str, w: int = 100, h: int = 80, seed: int = 0) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _fmt(v: float) -> str:
    return f"{v:g}"


def cuhk_line(path: str, pts: np.ndarray = FACE, box=BOX) -> str:
    left, top, right, bottom = box
    return " ".join([path, *map(_fmt, (left, right, top, bottom)), *map(_fmt, pts.ravel())])


def mtfl_line(path: str, pts: np.ndarray = FACE, attrs=(1, 2, 2, 3)) -> str:
    fields = [path, *map(_fmt, pts[:, 0]), *map(_fmt, pts[:, 1]), *map(str, attrs)]
    return " ".join(fields)


def box_line(box=BOX, score: float = 0.99) -> str:
    return " ".join(map(_fmt, (*box, score)))


def _write(path: Path, lines: list[str], *, crlf: bool = False, bom: bool = False) -> Path:
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _rejects(df: pd.DataFrame) -> list[tuple[str, int, str]]:
    return list(zip(df["file"], df["line"].astype(int), df["reason"], strict=True))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _image(root, "a.jpg")
    _image(root, "b.png", seed=1)
    _image(root, "sub/c.jpg", seed=2)
    return root


# ---------------------------------------------------------------------------- tables

def test_schema_and_empty_tables(tmp_path):
    faces = empty_faces()
    assert tuple(faces.columns) == FACE_COLUMNS
    assert {c: str(t) for c, t in faces.dtypes.items()}["gender"] == "Int8"
    assert len(POINT_COLUMNS) == 10 and len(BOX_COLUMNS) == 4
    rejects = empty_rejects()
    assert list(rejects.columns) == ["file", "line", "reason"]
    points, boxes = faces_to_arrays(faces)
    assert points.shape == (0, 5, 2) and boxes.shape == (0, 4)


def test_faces_table_round_trips_through_parquet(root, tmp_path):
    lst = _write(tmp_path / "l.txt", [mtfl_line("a.jpg"), mtfl_line("b.png", attrs=())])
    faces, _ = read_mtfl(lst, root)
    faces, _ = validate_faces(faces, empty_rejects(), root, max_image_pixels=BIG,
                              detect_missing_boxes=False)
    faces, _ = read_mtfl(lst, root, _write(tmp_path / "b.txt", [box_line()] * 2))
    faces, _ = validate_faces(faces, empty_rejects(), root, max_image_pixels=BIG)
    write_parquet_atomic(faces, tmp_path / "faces.parquet")
    back = pd.read_parquet(tmp_path / "faces.parquet")
    assert back.dtypes.equals(faces.dtypes)
    pd.testing.assert_frame_equal(back, faces)
    assert back["gender"].isna().tolist() == [False, True]


def test_reason_category_and_messages():
    rejects = pd.DataFrame({"file": ["trainImageList.txt", "x.pts"], "line": [412, 0],
                            "reason": ["wrong field count: expected 15 fields, got 13",
                                       "image missing: no .jpg"]})
    assert reject_messages(rejects) == [
        "trainImageList.txt:412: wrong field count: expected 15 fields, got 13",
        "x.pts: image missing: no .jpg"]
    assert reject_messages(rejects, limit=1) == reject_messages(rejects)[:1]
    assert reason_category("image unreadable: truncated JPEG (a.jpg)") == "image unreadable"
    assert reason_category("no face found by detector") == "no face found by detector"


# ---------------------------------------------------------------------------- CUHK

def test_read_cuhk_tolerates_and_rejects(root, tmp_path):
    shifted = FACE + 2
    lines = [
        cuhk_line("a.jpg"),                                           # 1 ok (after a BOM)
        "  " + cuhk_line("sub\\c.jpg").replace(" ", "\t", 3) + "  ",  # 2 ok: blanks, tabs, \
        "",                                                           # 3 blank: skipped
        " ".join(cuhk_line("b.png").split()[:13]),                    # 4 13 fields
        cuhk_line("b.png").replace(" 70 ", " abc ", 1),               # 5 not a number
        cuhk_line("b.png", pts=np.where(FACE == 30, np.nan, FACE)),   # 6 NaN
        cuhk_line("b.png", pts=np.where(FACE == 60, np.inf, FACE)),   # 7 inf
        cuhk_line("a.jpg"),                                           # 8 duplicate of 1
        cuhk_line("../a.jpg"),                                        # 9 escapes root
        cuhk_line("/abs/a.jpg"),                                      # 10 absolute
        cuhk_line("missing.jpg"),                                     # 11 missing image
        cuhk_line("a.jpg", pts=shifted),                              # 12 ok: 2nd face, a.jpg
        cuhk_line("C:\\data\\a.jpg"),                                 # 13 absolute (Windows)
        "   \t ",                                                     # 14 blank
    ]
    lst = _write(tmp_path / "list.txt", lines, crlf=True, bom=True)
    faces, rejects = read_list("cuhk", list_path=lst, root=root)
    assert faces["path"].tolist() == ["a.jpg", "sub/c.jpg", "a.jpg"]
    assert faces["line"].tolist() == [1, 2, 12]
    assert faces["face_id"].tolist() == [0, 1, 2]
    assert faces["source"].tolist() == ["list.txt", "sub", "list.txt"]
    assert (faces["list_file"] == "list.txt").all() and (faces["box_source"] == "list").all()
    assert (faces["split"] == "").all() and (faces["content_hash"] == "").all()
    assert faces["gender"].isna().all()
    points, boxes = faces_to_arrays(faces)
    np.testing.assert_array_equal(points[0], FACE)
    np.testing.assert_array_equal(points[2], shifted)
    np.testing.assert_array_equal(boxes[0], BOX)  # "left right top bottom" reordered
    assert _rejects(rejects) == [
        ("list.txt", 4, "wrong field count: expected 15 fields, got 13"),
        ("list.txt", 5, "not a number: field 3 (right) is 'abc'"),
        ("list.txt", 6, "not finite: field 6 (x1) is 'nan'"),
        ("list.txt", 7, "not finite: field 8 (x2) is 'inf'"),
        ("list.txt", 8, "duplicate: same image and points as line 1"),
        ("list.txt", 9, "bad path: path '../a.jpg' escapes the data root"),
        ("list.txt", 10, "bad path: absolute path '/abs/a.jpg'; paths are relative to the "
                         "data root"),
        ("list.txt", 11, "image missing: missing.jpg"),
        ("list.txt", 13, "bad path: absolute path 'C:\\\\data\\\\a.jpg'; paths are relative "
                         "to the data root"),
    ]


def test_read_cuhk_more_malformed_fields(root, tmp_path):
    lines = [cuhk_line("a.jpg").replace(" 70 ", " 1e999 ", 1),   # overflows to inf
             cuhk_line("a.jpg").replace(" 70 ", " 7_0 ", 1),     # python-only number syntax
             cuhk_line("a.jpg").replace(" 70 ", " 0x46 ", 1),
             cuhk_line("a.jpg").replace("a.jpg", "a\x01.jpg"),
             cuhk_line("./sub/../a.jpg")]
    faces, rejects = read_cuhk(_write(tmp_path / "l.txt", lines), root)
    assert [reason_category(r) for r in rejects["reason"]] == [
        "not finite", "not a number", "not a number", "bad path"]
    assert faces["path"].tolist() == ["a.jpg"]


def test_read_cuhk_not_utf8_and_missing_list(root, tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_bytes(cuhk_line("a.jpg").encode() + b"\n\xff\xfe junk\n")
    faces, rejects = read_cuhk(lst, root)
    assert len(faces) == 1
    assert _rejects(rejects)[0][:2] == ("l.txt", 2)
    assert reason_category(rejects["reason"][0]) == "not UTF-8"
    with pytest.raises(FormatError, match="list file not found"):
        read_cuhk(tmp_path / "nope.txt", root)


# ---------------------------------------------------------------------------- MTFL

def test_read_mtfl_with_boxes(root, tmp_path):
    other_box = (18.0, 10.0, 72.0, 75.0)
    lines = [
        " " + mtfl_line("a.jpg"),                                # 1 ok
        "",                                                      # 2 blank
        mtfl_line("b.png", attrs=()),                            # 3 ok, no attributes
        mtfl_line("b.png", FACE + 1, attrs=(3, 2, 2, 3)),        # 4 bad gender
        " ".join(mtfl_line("b.png").split()[:13]),               # 5 13 fields
        mtfl_line("sub\\c.jpg", attrs=(2, 1, 1, 5)),             # 6 box line is bad
        mtfl_line("sub/c.jpg", FACE + 3, attrs=(1, 1, 2, 4.5)),  # 7 pose not an integer
    ]
    boxes = [box_line(), box_line(other_box), "", box_line(), box_line(), "1 2 3", box_line()]
    lst = _write(tmp_path / "training.txt", lines, crlf=True)
    bx = _write(tmp_path / "boxes.txt", boxes, bom=True)
    faces, rejects = read_mtfl(lst, root, bx)
    assert faces["path"].tolist() == ["a.jpg", "b.png"]
    assert faces["line"].tolist() == [1, 3]
    points, got_boxes = faces_to_arrays(faces)
    np.testing.assert_array_equal(points, [FACE, FACE])
    np.testing.assert_array_equal(got_boxes, [BOX, other_box])
    assert faces.loc[0, ["gender", "smile", "glasses", "pose"]].tolist() == [1, 2, 2, 3]
    assert faces.loc[1, ["gender", "smile", "glasses", "pose"]].isna().all()
    assert _rejects(rejects) == [
        ("training.txt", 4, "bad attribute: field 12 (gender) == 3, must be 1 or 2"),
        ("training.txt", 5, "wrong field count: expected 11 or 15 fields, got 13"),
        ("boxes.txt", 6, "wrong field count: expected 4 or 5 fields, got 3 "
                         "(box of training.txt:6)"),
        ("training.txt", 7, "bad attribute: field 15 (pose) == 4.5, must be an integer in "
                            "1..5"),
    ]


def test_read_mtfl_without_boxes_leaves_them_to_the_detector(root, tmp_path):
    lst = _write(tmp_path / "t.txt", [mtfl_line("a.jpg"), mtfl_line("sub/c.jpg")])
    faces, rejects = read_mtfl(lst, root)
    assert len(rejects) == 0
    assert np.isnan(faces_to_arrays(faces)[1]).all()
    assert (faces["box_source"] == "detector").all()
    assert faces["source"].tolist() == ["t.txt", "sub"]


def test_read_mtfl_box_count_mismatch_is_a_whole_file_error(root, tmp_path):
    lst = _write(tmp_path / "t.txt", [mtfl_line("a.jpg"), "", mtfl_line("b.png")])
    bx = _write(tmp_path / "bx.txt", [box_line()] * 3)
    with pytest.raises(FormatError, match=r"bx.txt: 3 box line\(s\) but .*t.txt: 2 face"):
        read_mtfl(lst, root, bx)
    with pytest.raises(FormatError, match="box file not found"):
        read_mtfl(lst, root, tmp_path / "none.txt")


# ---------------------------------------------------------------------------- .pts

def _pts68(face: np.ndarray = FACE) -> np.ndarray:
    """68 iBUG points whose 5-point reduction is ``face`` (0-based coordinates)."""
    pts = np.tile([45.0, 50.0], (68, 1)) + np.arange(68)[:, None] * 0.01
    ring = 3 * np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], 1)
    pts[36:42] = face[0] + ring  # the eye on the image's left: smaller x
    pts[42:48] = face[1] + ring
    pts[30], pts[48], pts[54] = face[2], face[3], face[4]
    return pts


def _pts_text(pts: np.ndarray, n_points: int | None = None, *, crlf: bool = False) -> bytes:
    lines = ["version: 1", f"n_points:  {n_points or len(pts)}", "{",
             *(f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts), "}"]
    return (("\r\n" if crlf else "\n").join(lines) + "\n").encode()


def test_pts_reduction_uses_the_300w_indices():
    pts = _pts68()
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean()
    np.testing.assert_allclose(np.reshape(formats.pts_to_five(pts), (5, 2)), FACE)


def test_read_pts_folder(root):
    d = root / "pts"
    _image(root, "pts/a.jpg")
    _image(root, "pts/sub/b.png", seed=3)
    (d / "a.pts").write_bytes(b"\xef\xbb\xbf" + _pts_text(_pts68(), crlf=True))
    (d / "sub" / "b.pts").write_bytes(_pts_text(_pts68(FACE + 5)))
    _image(root, "pts/bad39.jpg")
    (d / "bad39.pts").write_bytes(_pts_text(_pts68()[:39]))
    _image(root, "pts/short.jpg")
    (d / "short.pts").write_bytes(_pts_text(_pts68()[:60], n_points=68))
    (d / "noimg.pts").write_bytes(_pts_text(_pts68()))
    _image(root, "pts/nan.jpg")
    (d / "nan.pts").write_bytes(_pts_text(_pts68()).replace(b"\n46.000 ", b"\nnan ", 1))
    _image(root, "pts/junk.jpg")
    (d / "junk.pts").write_bytes(b"hello\n")
    faces, rejects = read_pts(d, root)
    assert faces["path"].tolist() == ["pts/a.jpg", "pts/sub/b.png"]
    assert faces["list_file"].tolist() == ["pts/a.pts", "pts/sub/b.pts"]
    assert faces["line"].tolist() == [0, 0]
    assert faces["source"].tolist() == ["pts", "pts"]
    assert (faces["box_source"] == "detector").all()
    points, boxes = faces_to_arrays(faces)
    np.testing.assert_allclose(points, [FACE, FACE + 5], atol=1e-9)
    assert np.isnan(boxes).all()
    got = _rejects(rejects)
    assert got[0] == ("pts/bad39.pts", 2, "bad pts file: n_points == 39, only 68-point files "
                                          "are supported")
    assert got[1] == ("pts/junk.pts", 1, "bad pts file: expected 'key: value' or '{', got "
                                         "'hello'")
    assert got[2][:2] == ("pts/nan.pts", 4) and got[2][2].startswith("not finite: field 1 (x)")
    assert got[3] == ("pts/noimg.pts", 0, "image missing: no .jpg, .jpeg, .png, .bmp, .tif, "
                                          ".tiff, .webp, .gif image beside pts/noimg.pts")
    assert got[4] == ("pts/short.pts", 64, "bad pts file: 60 points, header says 68")


def test_read_pts_list(root):
    _image(root, "p/a.jpg")
    (root / "p" / "a.pts").write_bytes(_pts_text(_pts68()))
    lst = _write(root / "pts_list.txt", ["p/a.pts", "../x.pts", "p\\none.pts", "p/a.pts"])
    faces, rejects = read_list("pts", list_path=lst, root=root)
    assert faces["list_file"].tolist() == ["pts_list.txt"]
    assert faces["line"].tolist() == [1]
    assert faces["source"].tolist() == ["p"]
    got = _rejects(rejects)
    assert got[0] == ("pts_list.txt", 2, "bad path: path '../x.pts' escapes the data root")
    assert got[1][:2] == ("pts_list.txt", 3) and got[1][2].startswith("pts missing: p/none.pts")
    assert got[2] == ("pts_list.txt", 4, "duplicate: same image and points as line 1")
    with pytest.raises(FormatError, match="not found"):
        read_pts(root / "nothing", root)


def test_read_list_dispatch(root, tmp_path):
    lst = _write(tmp_path / "l.txt", [cuhk_line("a.jpg")])
    assert len(read_list("cuhk", root=root, list_path=lst)[0]) == 1
    mt = _write(tmp_path / "m.txt", [mtfl_line("a.jpg")])
    assert len(read_list("mtfl", root=root, list_path=mt, boxes_path="")[0]) == 1
    with pytest.raises(ValueError, match="one of"):
        read_list("csv", root=root, list_path=lst)
    with pytest.raises(ValueError, match="only used by the mtfl"):
        read_list("cuhk", root=root, list_path=lst, boxes_path=lst)


# ---------------------------------------------------------------------------- validation

def _huge_png(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_validate_faces_checks_each_face_against_its_image(root, tmp_path):
    (root / "garbage.jpg").write_text("not an image")
    (root / "bomb.png").write_bytes(_huge_png(50_000, 50_000))
    _image(root, "gone.jpg")
    edge = FACE.copy()
    edge[1] = [99.4, 79.4]  # inside the 0.5 px tolerance of a 100 x 80 image
    lines = [
        cuhk_line("a.jpg"),                                           # 1 ok
        cuhk_line("a.jpg", pts=np.where(FACE == 60, 120, FACE)),      # 2 point outside
        cuhk_line("a.jpg", FACE + 1, box=(20, 15, 20.5, 72)),         # 3 degenerate box
        cuhk_line("a.jpg", FACE + 2, box=(200, 15, 260, 72)),         # 4 box off the image
        cuhk_line("a.jpg", FACE + 3, box=(20, 15, 40, 40)),           # 5 box misses points
        cuhk_line("b.png", box=(-10, -5, 75, 90)),                    # 6 ok: runs past edge
        cuhk_line("garbage.jpg"),                                     # 7 unreadable
        cuhk_line("bomb.png"),                                        # 8 too large
        cuhk_line("gone.jpg"),                                        # 9 removed after reading
        cuhk_line("sub/c.jpg", edge, box=(20, 15, 95, 78)),           # 10 ok: tolerance
        "bad line",                                                   # 11 reader reject
        cuhk_line("a.jpg", FACE + 4, box=(80, 15, 20, 72)),           # 12 inverted box
    ]
    faces, rejects = read_cuhk(_write(tmp_path / "l.txt", lines), root)
    (root / "gone.jpg").unlink()
    assert len(faces) == 11 and len(rejects) == 1
    out, rej = validate_faces(faces, rejects, root, max_image_pixels=BIG)
    assert out["line"].tolist() == [1, 6, 10]
    assert out["face_id"].tolist() == [0, 1, 2]
    assert out["width"].tolist() == [100] * 3 and out["height"].tolist() == [80] * 3
    digest = hashlib.sha1((root / "a.jpg").read_bytes()).hexdigest()
    assert out["content_hash"][0] == digest
    assert tuple(out.columns) == FACE_COLUMNS
    got = {line: reason for _, line, reason in _rejects(rej)}
    assert got[11].startswith("wrong field count")
    assert got[2] == "point outside image: RE at (120.0, 30.0) is outside the 100x80 image"
    assert got[3].startswith("box degenerate: width 0.50, height 57.00")
    assert got[4].startswith("box outside image: (200.0, 15.0, 260.0, 72.0)")
    assert got[5] == ("box misses landmarks: RE at (63.0, 33.0) is outside the box enlarged "
                      "by 10%")
    assert got[7] == "image unreadable: not an image (unknown format) (garbage.jpg)"
    assert got[8] == ("image too large: 50000x50000 = 2500000000 pixels > max_image_pixels "
                      "10000000 (bomb.png)")
    assert got[9] == "image missing: gone.jpg"
    assert got[12].startswith("box inverted: right - left = -60.00")
    assert len(rej) == 9


def test_validate_loads_each_image_once(root, tmp_path, monkeypatch):
    lines = [cuhk_line("a.jpg", FACE + k) for k in range(3)] + [cuhk_line("b.png")]
    faces, rejects = read_cuhk(_write(tmp_path / "l.txt", lines), root)
    calls = []
    decode = formats.images.decode_image

    def counting(data, **kw):
        calls.append(kw["path"])
        return decode(data, **kw)

    monkeypatch.setattr(formats.images, "decode_image", counting)
    out, _ = validate_faces(faces, rejects, root, max_image_pixels=BIG)
    assert len(out) == 4
    assert [Path(p).name for p in calls] == ["a.jpg", "b.png"]


def test_validate_records_size_after_exif_rotation(tmp_path):
    from PIL import Image as image  # writes the EXIF orientation tag
    root = tmp_path / "r"
    root.mkdir()
    stored = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    exif = image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: 80 wide, 100 high
    buf = io.BytesIO()
    image.fromarray(stored).save(buf, "JPEG", exif=exif.tobytes())
    (root / "rot.jpg").write_bytes(buf.getvalue())
    pts = FACE[:, ::-1].copy()  # a face inside the displayed 80 x 100 frame
    faces, rejects = read_cuhk(_write(tmp_path / "l.txt", [cuhk_line("rot.jpg", pts,
                                                                      (10, 10, 70, 90))]), root)
    out, rej = validate_faces(faces, rejects, root, max_image_pixels=BIG)
    assert len(rej) == 0
    assert (out["width"][0], out["height"][0]) == (80, 100)


def test_validate_detects_missing_boxes(root, tmp_path, monkeypatch):
    detections = {
        "a.jpg": np.array([[0, 0, 10, 10], [25, 25, 65, 50], [20, 15, 70, 72.0]]),
        "b.png": np.zeros((0, 4)),
        "sub/c.jpg": np.array([[80, 0, 99, 20.0]]),
    }

    def fake(img, **kw):
        return next(v for k, v in detections.items() if img.shape == shapes[k])

    shapes = {"a.jpg": (80, 100, 3), "b.png": (81, 100, 3), "sub/c.jpg": (82, 100, 3)}
    _image(root, "b.png", h=81, seed=1)
    _image(root, "sub/c.jpg", h=82, seed=2)
    monkeypatch.setattr(formats.detect, "detect_faces", fake)
    lst = _write(tmp_path / "t.txt", [mtfl_line("a.jpg"), mtfl_line("b.png"),
                                      mtfl_line("sub/c.jpg")])
    faces, rejects = read_mtfl(lst, root)
    out, rej = validate_faces(faces, rejects, root, max_image_pixels=BIG)
    assert out["path"].tolist() == ["a.jpg"]
    assert out["box_source"].tolist() == ["detector"]
    np.testing.assert_array_equal(faces_to_arrays(out)[1][0], [20, 15, 70, 72])
    assert _rejects(rej) == [
        ("t.txt", 2, "no face found by detector"),
        ("t.txt", 3, "no face found by detector: none of the 1 detected face(s) contains "
                     "the landmarks")]
    out, rej = validate_faces(faces, rejects, root, max_image_pixels=BIG,
                              detect_missing_boxes=False)
    assert len(out) == 0 and set(map(reason_category, rej["reason"])) == {"box missing"}


def test_detection_ties_go_to_the_nearest_centre():
    pts = FACE
    far = np.array([0, 0, 100, 100.0])
    near = np.array([15, 10, 75, 75.0])
    box, why = formats._pick_detection(pts, np.stack([far, near]))
    np.testing.assert_array_equal(box, near)
    partial = np.array([25, 25, 65, 50.0])  # holds only the eyes and the nose
    box, _ = formats._pick_detection(pts, np.stack([partial, far]))
    np.testing.assert_array_equal(box, far)


# ---------------------------------------------------------------------------- ingest, split

def test_ingest_summary_and_strict(root, tmp_path):
    lines = [cuhk_line("a.jpg"), cuhk_line("sub/c.jpg"), "x 1 2", cuhk_line("missing.jpg")]
    lst = _write(tmp_path / "list.txt", lines)
    faces, rejects, summary = ingest("cuhk", root=root, list_path=lst, max_image_pixels=BIG)
    assert summary == {
        "format": "cuhk", "accepted": 2, "rejected": 2,
        "rejects_by_reason": {"wrong field count": 1, "image missing": 1},
        "accepted_by_source": {"list.txt": 1, "sub": 1},
        "rejected_by_file": {"list.txt": 2},
        "box_source": {"list": 2},
    }
    with pytest.raises(IngestError, match=r"2 face\(s\) rejected in strict mode.*\n"
                                          r"  list.txt:3: wrong field count"):
        ingest("cuhk", root=root, list_path=lst, max_image_pixels=BIG, strict=True)
    bad = _write(tmp_path / "bad.txt", ["x 1 2"])
    with pytest.raises(IngestError, match="no face accepted"):
        ingest("cuhk", root=root, list_path=bad, max_image_pixels=BIG)


def test_assign_split_by_content(tmp_path):
    root = tmp_path / "r"
    lines = []
    for k in range(60):
        _image(root, f"img{k}.png", seed=k)
        lines.append(cuhk_line(f"img{k}.png"))
    (root / "copy_of_0.png").write_bytes((root / "img0.png").read_bytes())
    (root / "copy_of_1.png").write_bytes((root / "img1.png").read_bytes())
    lines += [cuhk_line("copy_of_0.png"), cuhk_line("copy_of_1.png"),
              cuhk_line("img0.png", FACE + 1)]
    faces, _, _ = ingest("cuhk", root=root, list_path=_write(tmp_path / "l.txt", lines),
                         max_image_pixels=BIG)
    split = assign_split(faces, val_fraction=0.3, seed=4)
    assert set(split["split"]) == {"train", "val"}
    assert 5 <= (split["split"] == "val").sum() <= 35
    for _, group in split.groupby("content_hash"):
        assert group["split"].nunique() == 1
    assert split.groupby("content_hash").size().max() == 3  # img0, its copy, its 2nd face
    again = assign_split(faces.sample(frac=1.0, random_state=0), val_fraction=0.3, seed=4)
    assert dict(zip(again["path"] + again["line"].astype(str), again["split"], strict=True)) == \
        dict(zip(split["path"] + split["line"].astype(str), split["split"], strict=True))
    subset = assign_split(faces.iloc[10:], val_fraction=0.3, seed=4)
    assert subset["split"].tolist() == split["split"].iloc[10:].tolist()
    other = assign_split(faces, val_fraction=0.3, seed=5)
    assert other["split"].tolist() != split["split"].tolist()
    assert split[FACE_COLUMNS[0]].tolist() == faces["face_id"].tolist()
    with pytest.raises(ValueError, match="val_fraction"):
        assign_split(faces, val_fraction=1.0, seed=0)
    unvalidated, _ = read_cuhk(tmp_path / "l.txt", root)
    with pytest.raises(ValueError, match="run validate_faces first"):
        assign_split(unvalidated, val_fraction=0.1, seed=0)


def test_a_face_is_a_duplicate_only_of_a_kept_face(root, tmp_path):
    # the first copy of a.jpg's face is rejected (inverted box, point outside): the later,
    # valid copy is kept, and every line gets the reason that applies to it
    lines = [
        cuhk_line("a.jpg", box=(70, 15, 20, 72)),                     # 1 inverted box
        cuhk_line("b.png", pts=np.where(FACE == 60, 120, FACE)),      # 2 point outside
        cuhk_line("a.jpg"),                                           # 3 ok (same face as 1)
        cuhk_line("b.png", pts=np.where(FACE == 60, 120, FACE)),      # 4 point outside again
        cuhk_line("a.jpg", box=(21, 15, 70, 72)),                     # 5 duplicate of 3
        cuhk_line("a.jpg", box=(70, 15, 20, 72)),                     # 6 inverted box again
    ]
    faces, rejects, summary = ingest("cuhk", root=root, list_path=_write(
        tmp_path / "l.txt", lines), max_image_pixels=BIG)
    assert faces["line"].tolist() == [3] and faces["face_id"].tolist() == [0]
    got = [(line, reason_category(r), r) for _, line, r in _rejects(rejects)]
    assert [(line, cat) for line, cat, _ in got] == [
        (1, "box inverted"), (2, "point outside image"), (4, "point outside image"),
        (5, "duplicate"), (6, "box inverted")]
    assert got[3][2] == "duplicate: same image and points as line 3"
    assert summary["accepted"] == 1 and summary["rejects_by_reason"]["duplicate"] == 1


def test_split_and_content_hash_do_not_depend_on_line_order(root, tmp_path):
    # the other cross-line rules: an image's hash and split are the same whichever of its
    # faces comes first, and whether or not an earlier face of it was rejected
    (root / "a_copy.jpg").write_bytes((root / "a.jpg").read_bytes())
    lines = [
        cuhk_line("a.jpg", pts=np.where(FACE == 60, 120, FACE)),      # rejected, first of a.jpg
        cuhk_line("a_copy.jpg", FACE + 1),
        cuhk_line("a.jpg"),
        cuhk_line("b.png"),
        cuhk_line("sub/c.jpg"),
    ]
    results = []
    for order in (lines, lines[::-1], lines[1:]):
        faces, _, _ = ingest("cuhk", root=root, list_path=_write(tmp_path / "l.txt", order),
                             max_image_pixels=BIG)
        faces = assign_split(faces, val_fraction=0.5, seed=1)
        results.append(sorted(zip(faces["path"], faces["content_hash"], faces["split"],
                                  strict=True)))
    assert results[0] == results[1] == results[2]
    by_path = {p: (h, s) for p, h, s in results[0]}
    assert set(by_path) == {"a.jpg", "a_copy.jpg", "b.png", "sub/c.jpg"}
    assert by_path["a.jpg"] == by_path["a_copy.jpg"]
    assert by_path["a.jpg"][0] == hashlib.sha1((root / "a.jpg").read_bytes()).hexdigest()


def test_dtypes_match_the_documented_schema(root, tmp_path):
    faces, _, _ = ingest("cuhk", root=root, max_image_pixels=BIG,
                         list_path=_write(tmp_path / "l.txt", [cuhk_line("a.jpg")]))
    for column, dtype in FACE_DTYPES.items():
        assert faces[column].dtype == pd.Series([], dtype=dtype).dtype, column


# ---------------------------------------------------------------------------- real data

def _head_and_tail(src: Path, dst: Path, n: int) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()
    dst.write_text("\n".join(lines[:n] + lines[-n:]) + "\n", encoding="utf-8")
    return dst


@pytest.mark.realdata
def test_real_mtfl_lists_agree_and_validate(tmp_path, mtfl):
    data = mtfl
    root = data / "images"
    cuhk = _head_and_tail(data / "trainImageList.txt", tmp_path / "trainImageList.txt", 100)
    mtfl = _head_and_tail(data / "training_mtfl.txt", tmp_path / "training_mtfl.txt", 100)
    boxes = _head_and_tail(data / "boxes_mtfl.txt", tmp_path / "boxes_mtfl.txt", 100)
    faces_c, rej_c = read_cuhk(cuhk, root)
    faces_m, rej_m = read_mtfl(mtfl, root, boxes)
    assert len(rej_c) == 0 and len(rej_m) == 0
    assert len(faces_c) == len(faces_m) == 200
    assert faces_c["path"].tolist() == faces_m["path"].tolist()
    pc, bc = faces_to_arrays(faces_c)
    pm, bm = faces_to_arrays(faces_m)
    np.testing.assert_allclose(pc, pm, atol=1e-6)
    np.testing.assert_allclose(bc, bm, atol=1e-6)
    assert set(faces_c["source"]) == {"lfw_5590", "net_7876"}
    assert faces_m["pose"].notna().all()
    assert (pc[:, 0, 0] < pc[:, 1, 0]).all()  # LE is on the image's left
    out, rej = validate_faces(faces_c, rej_c, root, max_image_pixels=40_000_000)
    assert len(rej) == 0, reject_messages(rej, limit=5)
    assert len(out) == 200
    assert set(zip(out["width"], out["height"], strict=True)) <= {(80, 80), (160, 216),
                                                                   (400, 400)}
