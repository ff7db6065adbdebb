"""Property tests: no input file makes a reader crash.

Whatever bytes or text a list file holds, every non-blank line ends up either
as a face or as a reject with a 1-based line number and a known reason
category; the only exception a reader may raise is FormatError for a
whole-file problem (an MTFL box file not aligned with its list).
"""

from __future__ import annotations

import codecs
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facecascade.formats import (
    FormatError,
    faces_to_arrays,
    read_cuhk,
    read_mtfl,
    read_pts,
    reason_category,
)

SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
LINE_CATEGORIES = {"wrong field count", "not a number", "not finite", "not UTF-8", "bad path",
                   "duplicate", "image missing", "bad attribute"}
PTS_CATEGORIES = {"wrong field count", "not a number", "not finite", "not UTF-8",
                  "bad pts file"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prop")
    (root / "sub").mkdir()
    img = np.full((60, 60, 3), 128, np.uint8)
    cv2.imwrite(str(root / "a.jpg"), img)
    cv2.imwrite(str(root / "sub" / "b.png"), img)
    return root


def nonblank_lines(data: bytes) -> int:
    """How many lines a reader must account for (as a face or a reject)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    count = 0
    for raw in data.split(b"\n"):
        try:
            count += bool(raw.rstrip(b"\r").decode("utf-8").strip())
        except UnicodeDecodeError:
            count += 1
    return count


def check_result(faces, rejects, data: bytes, categories: set[str]) -> None:
    assert len(faces) + len(rejects) == nonblank_lines(data)
    assert (rejects["line"] >= 1).all()
    assert {reason_category(r) for r in rejects["reason"]} <= categories
    points, _ = faces_to_arrays(faces)
    assert np.isfinite(points).all()
    for path in faces["path"]:
        assert "\\" not in path and not path.startswith("/") and ".." not in path.split("/")
    assert faces["face_id"].tolist() == list(range(len(faces)))


token = st.one_of(
    st.sampled_from(["a.jpg", "sub\\b.png", "./sub/b.png", "../a.jpg", "/a.jpg", "C:\\a.jpg",
                     "nan", "NaN", "-inf", "1e999", "abc", "1", "2", "3", "0x10", "1_0", "",
                     "\ufeff", "\x00", "é"]),
    st.floats(min_value=-10, max_value=70, allow_nan=False).map(lambda v: f"{v:.3f}"),
    st.text(max_size=6),
)
separator = st.sampled_from([" ", "\t", "  ", " \t "])


@st.composite
def list_text(draw: st.DrawFn, n_numbers: int) -> bytes:
    """Lines that are often valid (``path`` + ``n_numbers`` numbers), often broken."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            numbers = draw(st.lists(st.floats(5, 55).map(lambda v: f"{v:.2f}"),
                                    min_size=n_numbers, max_size=n_numbers))
            tokens = [draw(st.sampled_from(["a.jpg", "sub\\b.png", "sub/b.png"])), *numbers]
            if draw(st.booleans()):  # break one field
                tokens[draw(st.integers(0, len(tokens) - 1))] = draw(token)
        else:
            tokens = draw(st.lists(token, max_size=18))
        sep = draw(separator)
        lines.append(draw(st.sampled_from(["", " ", "\t"])) + sep.join(tokens))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    bom = draw(st.sampled_from([b"", codecs.BOM_UTF8]))
    return bom + end.join(lines).encode("utf-8", "surrogatepass")


@SETTINGS
@given(data=st.binary(max_size=600))
def test_random_bytes_never_crash_list_readers(root, data):
    lst = root / "list.txt"
    lst.write_bytes(data)
    check_result(*read_cuhk(lst, root), data, LINE_CATEGORIES)
    check_result(*read_mtfl(lst, root), data, LINE_CATEGORIES)


@SETTINGS
@given(data=list_text(14))
def test_random_cuhk_lines(root, data):
    lst = root / "cuhk.txt"
    lst.write_bytes(data)
    faces, rejects = read_cuhk(lst, root)
    check_result(faces, rejects, data, LINE_CATEGORIES)
    _, boxes = faces_to_arrays(faces)
    assert np.isfinite(boxes).all()


@SETTINGS
@given(data=list_text(10), boxes=st.one_of(st.none(), list_text(4), st.binary(max_size=200)))
def test_random_mtfl_lines_and_box_files(root, data, boxes):
    lst = root / "mtfl.txt"
    lst.write_bytes(data)
    box_path = None
    if boxes is not None:
        box_path = root / "boxes.txt"
        box_path.write_bytes(boxes)
    try:
        faces, rejects = read_mtfl(lst, root, box_path)
    except FormatError as exc:
        assert "box line(s)" in str(exc)
        assert nonblank_lines(boxes) != nonblank_lines(data)
        return
    check_result(faces, rejects, data, LINE_CATEGORIES)
    if box_path is not None:
        assert (faces["box_source"] == "list").all()


@st.composite
def pts_text(draw: st.DrawFn) -> bytes:
    """.pts files: valid ones, broken in one line, or noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    n = draw(st.sampled_from([68, 68, 68, 5, 0]))
    lines = ["version: 1", f"n_points: {n}", "{",
             *(f"{x:.2f} {y:.2f}" for x, y in
               draw(st.lists(st.tuples(st.floats(1, 60), st.floats(1, 60)),
                             min_size=n, max_size=n))), "}"]
    if draw(st.booleans()) and lines:
        lines[draw(st.integers(0, len(lines) - 1))] = draw(st.text(max_size=10))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@SETTINGS
@given(text=pts_text())
def test_random_pts_files_yield_a_face_or_a_reject(root, text):
    folder = root / "pts"
    folder.mkdir(exist_ok=True)
    (folder / "x.pts").write_bytes(text)
    if not (folder / "x.jpg").exists():
        (folder / "x.jpg").write_bytes((root / "a.jpg").read_bytes())
    faces, rejects = read_pts(folder, root)
    assert len(faces) + len(rejects) == 1
    assert {reason_category(r) for r in rejects["reason"]} <= PTS_CATEGORIES
    if len(faces):
        assert all(math.isfinite(v) for v in faces_to_arrays(faces)[0].ravel())


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_pts_list_files(root, data):
    lst = root / "pts_list.txt"
    lst.write_bytes(data)
    faces, rejects = read_pts(lst, root)
    assert len(faces) + len(rejects) == nonblank_lines(data)


def _number_or_error(tokens: list[str]):
    from facecascade.formats import _LineError, _number

    names = ("path", *(f"f{i}" for i in range(len(tokens))))
    try:
        return [_number(t, 2 + i, names[1 + i]) for i, t in enumerate(tokens)]
    except _LineError as exc:
        return str(exc)


@SETTINGS
@given(tokens=st.lists(st.one_of(token, st.sampled_from(
    ["1.5", "-.5", "+3e2", "1E-3", "7.", "\u0661", "\uff11", "1e5_0", "infinity", "-nan",
     "1e309", "0.0", "12"])), max_size=6))
def test_line_numbers_fast_path_agrees_with_token_checks(tokens):
    """The one-pass conversion of a line's numbers gives the token-by-token values, and
    the same error (first bad field, its reason) whenever a token is not a plain number."""
    from facecascade.formats import _LineError, _numbers

    names = ("path", *(f"f{i}" for i in range(len(tokens))))
    try:
        got = _numbers(tokens, 2, names)
    except _LineError as exc:
        got = str(exc)
    assert got == _number_or_error(tokens)
