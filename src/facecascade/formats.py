"""The annotation table and its readers: CUHK lists, MTFL lists (+ box file), 300-W ``.pts``.

Every reader returns ``(faces, rejects)``: a faces table in the one schema below
and a rejects table naming each line it could not use. Readers never raise on
a bad line; they raise :class:`FormatError` only for a whole-file problem (list
file missing, MTFL box file not line-aligned). :func:`validate_faces` then opens
every image once and checks the faces against it; :func:`ingest` does both and
summarises; :func:`assign_split` carves a validation split by image content.
Duplicates (same image and points) are checked last, among the faces kept
(:func:`reject_duplicates`), so a line is never a "duplicate" of a rejected one.

Faces table (``faces.parquet``), one row per face:

================  =======  ==========================================================
column            dtype    meaning
================  =======  ==========================================================
face_id           int64    0..n-1 in list order of the accepted faces
path              str      image path relative to the data root, ``/`` separators
width, height     int32    size of the image as loaded (after EXIF rotation); 0 until
                           :func:`validate_faces`
box_l, box_t,     float64  face box: left, top, right, bottom (pixels); NaN when the
box_r, box_b               list has none, until :func:`validate_faces` detects one
le_x ... rm_y     float64  the 5 points LE, RE, N, LM, RM (x then y), pixel-index
                           coordinates, "left" = image left
split             str      "train" / "val" (:func:`assign_split`); "" before
source            str      first component of ``path`` (e.g. ``lfw_5590``), or the
                           list file's name for a path without a folder
list_file         str      the list file's name (for ``.pts``: the .pts path relative to
                           the root when read from a folder)
line              int32    1-based line in ``list_file`` (0 for a folder of .pts)
box_source        str      "list" (box from the annotation) or "detector"
gender, smile,    Int8     MTFL attributes (gender 1 male 2 female; smile, glasses 1
glasses, pose              yes 2 no; pose 1..5 left profile..right profile); NA otherwise
content_hash      str      sha1 hex of the image file's bytes; "" until validated
================  =======  ==========================================================

Rejects table (``rejects.parquet``): ``file`` str (the list, box or .pts file),
``line`` int64 (1-based; 0 when the reject is about a whole file) and
``reason`` str, ``"<category>: <detail>"`` such as ``"wrong field count:
expected 15 fields, got 13"``; :func:`reject_messages` renders them as
``trainImageList.txt:412: wrong field count: expected 15 fields, got 13`` and
:func:`reason_category` gives the category.

Tolerated in list files: a UTF-8 BOM, CRLF line ends, leading/trailing blanks,
tabs or several spaces between fields, backslashes in paths, blank lines
(skipped; they are not faces). Paths cannot contain whitespace.

Formats (fields separated by whitespace):

- CUHK (``trainImageList.txt``): ``path left right top bottom x1 y1 ... x5 y5``
  (note the box order: left right *top bottom*).
- MTFL (``training.txt``): ``path x1..x5 y1..y5 [gender smile glasses pose]``, with an
  optional box file aligned with the list's non-blank lines: ``x1 y1 x2 y2 [score]``
  (x1 = left, y1 = top, x2 = right, y2 = bottom).
- 300-W / LFPW ``.pts`` (68 points): ``version: 1``, ``n_points: 68``, ``{``, 68
  lines ``x y``, ``}``. The coordinates are 1-based (the Matlab convention of the
  300-W annotations, as menpo reads them) and become pixel-index coordinates by
  subtracting 1. The 5 points are: LE = mean of points 36-41 (0-based; the
  subject's right eye, on the image's left), RE = mean of 42-47, N = 30,
  LM = 48, RM = 54. A ``.pts`` face has no box: one is detected at validation.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import math
import os
import posixpath
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import detect, images
from .config import FORMATS

logger = logging.getLogger(__name__)

POINT_COLUMNS = ("le_x", "le_y", "re_x", "re_y", "n_x", "n_y",
                 "lm_x", "lm_y", "rm_x", "rm_y")
BOX_COLUMNS = ("box_l", "box_t", "box_r", "box_b")
ATTRIBUTE_COLUMNS = ("gender", "smile", "glasses", "pose")
FACE_DTYPES: dict[str, str] = {
    "face_id": "int64", "path": "str", "width": "int32", "height": "int32",
    **dict.fromkeys(BOX_COLUMNS, "float64"), **dict.fromkeys(POINT_COLUMNS, "float64"),
    "split": "str", "source": "str", "list_file": "str", "line": "int32", "box_source": "str",
    **dict.fromkeys(ATTRIBUTE_COLUMNS, "Int8"), "content_hash": "str",
}
FACE_COLUMNS = tuple(FACE_DTYPES)
REJECT_DTYPES: dict[str, str] = {"file": "str", "line": "int64", "reason": "str"}
REJECT_COLUMNS = tuple(REJECT_DTYPES)

#: allowed values of the MTFL attributes
_ATTRIBUTE_RANGES = {"gender": (1, 2), "smile": (1, 2), "glasses": (1, 2), "pose": (1, 5)}
_POINT_FIELDS = tuple(f"{a}{i}" for i in range(1, 6) for a in "xy")
_CUHK_FIELDS = ("path", "left", "right", "top", "bottom", *_POINT_FIELDS)
_MTFL_FIELDS = ("path", *(f"x{i}" for i in range(1, 6)), *(f"y{i}" for i in range(1, 6)),
                *ATTRIBUTE_COLUMNS)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NOT_FINITE = {"nan", "inf", "infinity"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"[A-Za-z]:")
_PTS_POINTS = 68
#: a box contains its points when they lie inside it enlarged by this share of w and h per side
BOX_MARGIN = 0.10
#: points may lie this far (pixels) outside the image's pixel area
POINT_TOLERANCE = 0.5
#: boxes need width and height above this (pixels)
MIN_BOX_SIZE = 1.0


class FormatError(ValueError):
    """A whole annotation file is unusable (missing, or a box file not aligned with its list)."""


class IngestError(ValueError):
    """Ingest accepted no face, or rejected some in strict mode."""


class _LineError(Exception):
    """Internal: one line is rejected with ``category: detail``."""

    def __init__(self, category: str, detail: str = "") -> None:
        super().__init__(f"{category}: {detail}" if detail else category)


# ---------------------------------------------------------------------------- tables

def empty_faces() -> pd.DataFrame:
    """A faces table with no rows and the schema's columns and dtypes."""
    return conform_faces(pd.DataFrame({c: [] for c in FACE_COLUMNS}))


def empty_rejects() -> pd.DataFrame:
    """A rejects table (``file``, ``line``, ``reason``) with no rows."""
    return _conform_rejects([])


def conform_faces(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with exactly the schema's columns, in order, cast to the schema's dtypes."""
    missing = [c for c in FACE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"faces table lacks column(s) {missing}")
    return df.loc[:, list(FACE_COLUMNS)].astype(FACE_DTYPES).reset_index(drop=True)


def _conform_rejects(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(REJECT_COLUMNS))
    return df.astype(REJECT_DTYPES).reset_index(drop=True)


def faces_to_arrays(faces: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(n, 5, 2)`` and boxes ``(n, 4)`` (left, top, right, bottom) of a faces table.

    Boxes are NaN for faces that have none yet (before :func:`validate_faces`).
    """
    points = faces.loc[:, list(POINT_COLUMNS)].to_numpy(np.float64).reshape(-1, 5, 2)
    boxes = faces.loc[:, list(BOX_COLUMNS)].to_numpy(np.float64).reshape(-1, 4)
    return points, boxes


def reason_category(reason: str) -> str:
    """Short category key of a reject reason (the text before the first colon).

    >>> reason_category("wrong field count: expected 15 fields, got 13")
    'wrong field count'
    """
    return reason.split(":", 1)[0].strip()


def reject_messages(rejects: pd.DataFrame, limit: int | None = None) -> list[str]:
    """Rejects as ``file:line: reason`` lines (``file: reason`` for whole-file rejects)."""
    rows = rejects.head(limit) if limit is not None else rejects
    return [f"{f}:{int(n)}: {r}" if int(n) > 0 else f"{f}: {r}"
            for f, n, r in zip(rows["file"], rows["line"], rows["reason"], strict=True)]


# ---------------------------------------------------------------------------- line parsing

@dataclass
class _Reader:
    """Accumulates faces and rejects of one reading pass."""

    root: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[tuple[str, int, str]] = field(default_factory=list)
    exists: dict[str, bool] = field(default_factory=dict)

    def reject(self, file: str, line: int, error: _LineError | str) -> None:
        self.rejects.append((file, line, str(error)))

    def image_exists(self, rel: str) -> bool:
        if rel not in self.exists:  # os.path: a tenth of pathlib's cost, per list line
            self.exists[rel] = os.path.isfile(os.path.join(self.root, rel))
        return self.exists[rel]

    def add(self, *, path: str, points: list[float], box: list[float] | None, list_file: str,
            line: int, attributes: dict[str, int] | None = None, source: str | None = None
            ) -> None:
        """Check the image's existence, then keep the face (duplicates are checked among the
        faces finally kept: :func:`reject_duplicates`)."""
        if not self.image_exists(path):
            raise _LineError("image missing", path)
        box = box if box is not None else [math.nan] * 4
        row: dict[str, Any] = {
            "face_id": len(self.rows), "path": path, "width": 0, "height": 0,
            **dict(zip(BOX_COLUMNS, box, strict=True)),
            **dict(zip(POINT_COLUMNS, points, strict=True)),
            "split": "", "source": source or _source(path, list_file), "list_file": list_file,
            "line": line, "box_source": "list" if not math.isnan(box[0]) else "detector",
            **dict.fromkeys(ATTRIBUTE_COLUMNS), **(attributes or {}), "content_hash": "",
        }
        self.rows.append(row)

    def result(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        faces = conform_faces(pd.DataFrame(self.rows, columns=list(FACE_COLUMNS))) \
            if self.rows else empty_faces()
        return faces, _conform_rejects(self.rejects)


def _source(path: str, list_file: str) -> str:
    return path.split("/", 1)[0] if "/" in path else list_file


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def _lines(data: bytes) -> Iterator[tuple[int, str | None]]:
    """``(1-based line number, text)`` of the non-blank lines; text None when not UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            yield number, None
            continue
        if text.strip():
            yield number, text


def _fields(text: str | None, counts: tuple[int, ...]) -> list[str]:
    if text is None:
        raise _LineError("not UTF-8", "line is not valid UTF-8 text (save the list as UTF-8)")
    tokens = text.split()
    if len(tokens) not in counts:
        expected = " or ".join(str(c) for c in counts)
        raise _LineError("wrong field count", f"expected {expected} fields, got {len(tokens)}")
    return tokens


def _number(token: str, index: int, name: str) -> float:
    """``token`` (field ``index``, 1-based, called ``name``) as a finite float."""
    if _NUMBER.fullmatch(token):
        value = float(token)
        if math.isfinite(value):
            return value
    elif token.lower().lstrip("+-") not in _NOT_FINITE:
        raise _LineError("not a number", f"field {index} ({name}) is {token[:40]!r}")
    raise _LineError("not finite", f"field {index} ({name}) is {token[:40]!r}")


def _numbers(tokens: list[str], first: int, names: tuple[str, ...]) -> list[float]:
    """``tokens`` (fields ``first``.. of a line) as finite floats, or the first bad field's
    error (:func:`_number`).

    A line of plain ASCII numbers without ``_`` is what ``float`` and :data:`_NUMBER`
    both accept: they are converted in one pass (a quarter of the per-token checks'
    cost, over a 10,000-line list), and anything else is checked token by token.

    >>> _numbers(["1", "-2.5e1", ".5"], 2, ("path", "a", "b", "c"))
    [1.0, -25.0, 0.5]
    """
    try:
        values = list(map(float, tokens))
    except ValueError:
        values = None
    if values is not None and all(map(math.isfinite, values)):
        joined = "".join(tokens)
        if joined.isascii() and "_" not in joined:
            return values
    return [_number(t, first + i, names[first + i - 1]) for i, t in enumerate(tokens)]


def _attribute(token: str, index: int, name: str) -> int:
    value = _number(token, index, name)
    lo, hi = _ATTRIBUTE_RANGES[name]
    if value != int(value) or not lo <= value <= hi:
        allowed = f"{lo} or {hi}" if hi - lo == 1 else f"an integer in {lo}..{hi}"
        raise _LineError("bad attribute", f"field {index} ({name}) == {token}, must be {allowed}")
    return int(value)


def _normalise_path(token: str) -> str:
    """An annotation's image path as a clean relative ``/`` path, or a ``bad path`` error.

    >>> _normalise_path(r"lfw_5590\\Aaron_Eckhart_0001.jpg")
    'lfw_5590/Aaron_Eckhart_0001.jpg'
    """
    path = token.replace("\\", "/")
    if _CONTROL.search(path):
        raise _LineError("bad path", "path contains control characters")
    if path.startswith("/") or _DRIVE.match(path):
        raise _LineError("bad path", f"absolute path {token[:80]!r}; paths are relative to the "
                                     "data root")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise _LineError("bad path", f"path {token[:80]!r} escapes the data root")
    if norm in ("", "."):
        raise _LineError("bad path", "empty path")
    return norm


# ---------------------------------------------------------------------------- readers

def read_cuhk(list_path: str | Path, root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a CUHK list: ``path left right top bottom x1 y1 ... x5 y5`` per line.

    Parameters
    ----------
    list_path : str or Path
        The list file.
    root : str or Path
        Data root; image paths are relative to it.

    Returns
    -------
    (faces, rejects) : tuple of DataFrame
        Faces with ``box_source == "list"``; every non-blank line not kept is a reject.

    Raises
    ------
    FormatError
        The list file cannot be read.
    """
    list_path = Path(list_path)
    name = list_path.name
    reader = _Reader(Path(root))
    for number, text in _lines(_read_bytes(list_path, "list file")):
        try:
            tokens = _fields(text, (len(_CUHK_FIELDS),))
            path = _normalise_path(tokens[0])
            values = _numbers(tokens[1:], 2, _CUHK_FIELDS)
            left, right, top, bottom = values[:4]
            reader.add(path=path, points=values[4:], box=[left, top, right, bottom],
                       list_file=name, line=number)
        except _LineError as exc:
            reader.reject(name, number, exc)
    return reader.result()


def _read_box_lines(boxes_path: Path) -> list[tuple[int, str | None]]:
    return list(_lines(_read_bytes(boxes_path, "box file")))


def _parse_box(text: str | None) -> list[float]:
    """``x1 y1 x2 y2 [score]`` as ``[left, top, right, bottom]``."""
    names = ("x1", "y1", "x2", "y2", "score")
    tokens = _fields(text, (4, 5))
    return _numbers(tokens, 1, names)[:4]


def read_mtfl(list_path: str | Path, root: str | Path, boxes_path: str | Path | None = None
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read an MTFL list ``path x1..x5 y1..y5 [gender smile glasses pose]``, boxes optional.

    Parameters
    ----------
    list_path : str or Path
        The list file.
    root : str or Path
        Data root; image paths are relative to it.
    boxes_path : str or Path, optional
        Box file ``x1 y1 x2 y2 [score]``, its k-th non-blank line the box of the list's
        k-th non-blank line. Without it the faces have NaN boxes (``box_source ==
        "detector"``), to be detected by :func:`validate_faces`.

    Returns
    -------
    (faces, rejects) : tuple of DataFrame

    Raises
    ------
    FormatError
        A file cannot be read, or the box file's non-blank line count differs from the list's.
    """
    list_path = Path(list_path)
    name = list_path.name
    lines = list(_lines(_read_bytes(list_path, "list file")))
    box_lines: list[tuple[int, str | None]] | None = None
    box_name = ""
    if boxes_path is not None and str(boxes_path) != "":
        boxes_path = Path(boxes_path)
        box_name = boxes_path.name
        box_lines = _read_box_lines(boxes_path)
        if len(box_lines) != len(lines):
            raise FormatError(
                f"{boxes_path}: {len(box_lines)} box line(s) but {list_path}: {len(lines)} "
                "face line(s); the box file must have one line per non-blank list line")
    reader = _Reader(Path(root))
    n_fields = (1 + 10, len(_MTFL_FIELDS))
    for k, (number, text) in enumerate(lines):
        try:
            tokens = _fields(text, n_fields)
            path = _normalise_path(tokens[0])
            values = _numbers(tokens[1:11], 2, _MTFL_FIELDS)
            points = [v for xy in zip(values[:5], values[5:], strict=True) for v in xy]
            attributes = {
                a: _attribute(t, 12 + i, a)
                for i, (a, t) in enumerate(zip(ATTRIBUTE_COLUMNS, tokens[11:], strict=False))}
        except _LineError as exc:
            reader.reject(name, number, exc)
            continue
        box = None
        if box_lines is not None:
            box_number, box_text = box_lines[k]
            try:
                box = _parse_box(box_text)
            except _LineError as exc:
                reader.reject(box_name, box_number, f"{exc} (box of {name}:{number})")
                continue
        try:
            reader.add(path=path, points=points, box=box, list_file=name, line=number,
                       attributes=attributes)
        except _LineError as exc:
            reader.reject(name, number, exc)
    return reader.result()


class _PtsError(Exception):
    """Internal: a .pts file is rejected at ``line`` (0 for the whole file)."""

    def __init__(self, line: int, error: _LineError) -> None:
        super().__init__(str(error))
        self.line = line
        self.error = error


def _parse_pts(text: bytes) -> np.ndarray:
    """68 points ``(68, 2)`` of a .pts file, 0-based; raises ``_PtsError(line, error)``."""
    n_points: int | None = None
    points: list[list[float]] = []
    state = "header"
    last = 0
    for number, line in _lines(text):
        last = number
        if line is None:
            raise _PtsError(number, _LineError("not UTF-8", "line is not valid UTF-8 text"))
        line = line.strip()
        if state == "header":
            if line == "{":
                if n_points is None:
                    raise _PtsError(number, _LineError("bad pts file", "no n_points before '{'"))
                state = "points"
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise _PtsError(number, _LineError("bad pts file",
                                                   f"expected 'key: value' or '{{', got "
                                                   f"{line[:40]!r}"))
            if key.strip() == "n_points":
                try:
                    n_points = int(value.strip())
                except ValueError:
                    raise _PtsError(number, _LineError(
                        "bad pts file", f"n_points is {value.strip()[:20]!r}")) from None
                if n_points != _PTS_POINTS:
                    raise _PtsError(number, _LineError(
                        "bad pts file", f"n_points == {n_points}, only 68-point files are "
                                        "supported"))
        elif state == "points":
            if line == "}":
                if len(points) != _PTS_POINTS:
                    raise _PtsError(number, _LineError(
                        "bad pts file", f"{len(points)} points, header says {_PTS_POINTS}"))
                state = "done"
                break
            tokens = line.split()
            if len(tokens) != 2:
                raise _PtsError(number, _LineError(
                    "wrong field count", f"expected 2 fields (x y), got {len(tokens)}"))
            try:
                points.append(_numbers(tokens, 1, ("x", "y")))
            except _LineError as exc:
                raise _PtsError(number, exc) from None
    if state != "done":
        where = "no '{'" if state == "header" else "no closing '}'"
        raise _PtsError(last, _LineError("bad pts file", where))
    return np.asarray(points, np.float64) - 1.0


def pts_to_five(points68: np.ndarray) -> list[float]:
    """The 5 points (LE, RE, N, LM, RM; flat x y) of 68 iBUG/300-W points ``(68, 2)``."""
    five = np.stack([points68[36:42].mean(axis=0), points68[42:48].mean(axis=0),
                     points68[30], points68[48], points68[54]])
    return five.ravel().tolist()


def _pts_files(path: Path, root: Path, reader: _Reader) -> list[tuple[Path, str, int, str]]:
    """``(pts file, label, line in list, list label)`` of a folder or a list of .pts files."""
    if path.is_dir():
        found = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(".pts")]
        return [(f, _label(f, root), 0, _label(f, root)) for f in found]
    name = path.name
    out = []
    for number, text in _lines(_read_bytes(path, "pts list")):
        try:
            rel = _normalise_path(_fields(text, (1,))[0])
        except _LineError as exc:
            reader.reject(name, number, exc)
            continue
        out.append((root / rel, rel, number, name))
    return out


def _label(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def read_pts(path: str | Path, root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read 68-point ``.pts`` annotations (300-W, LFPW, HELEN...) reduced to 5 points.

    Parameters
    ----------
    path : str or Path
        A folder (every ``*.pts`` below it) or a text file listing ``.pts`` paths
        relative to ``root``, one per line. Each image is the file with the same
        stem and an image suffix (:data:`facecascade.images.IMAGE_SUFFIXES`, in
        that order of preference, lower or upper case) beside its ``.pts``.
    root : str or Path
        Data root; image paths in the table are relative to it.

    Returns
    -------
    (faces, rejects) : tuple of DataFrame
        Faces have NaN boxes and ``box_source == "detector"``. A reject's ``file`` is
        the .pts file and ``line`` its line (0 for the whole file), or the list's
        file and line for a bad list line.

    Raises
    ------
    FormatError
        ``path`` does not exist or cannot be read.
    """
    path, root = Path(path), Path(root)
    if not path.exists():
        raise FormatError(f"{path}: pts folder or list not found")
    reader = _Reader(root)
    for pts, label, number, list_label in _pts_files(path, root, reader):
        try:
            points = pts_to_five(_parse_pts(pts.read_bytes()))
        except _PtsError as exc:
            reader.reject(label, exc.line, exc.error)
            continue
        except OSError as exc:
            reader.reject(list_label if number else label, number,
                          _LineError("pts missing", f"{label}: {exc.strerror or exc}"))
            continue
        image = next((pts.with_suffix(s) for suffix in images.IMAGE_SUFFIXES
                      for s in (suffix, suffix.upper()) if pts.with_suffix(s).is_file()), None)
        if image is None:
            reader.reject(label, 0, _LineError(
                "image missing", f"no {', '.join(images.IMAGE_SUFFIXES)} image beside {label}"))
            continue
        try:
            rel = image.relative_to(root).as_posix()
        except ValueError:
            reader.reject(label, 0, _LineError("bad path", f"image {image} is outside the "
                                                           "data root"))
            continue
        try:
            reader.add(path=rel, points=points, box=None, list_file=list_label, line=number,
                       source=_source(rel, list_label))
        except _LineError as exc:
            reader.reject(list_label if number else label, number, exc)
    return reader.result()


def read_list(fmt: str, *, root: str | Path, list_path: str | Path,
              boxes_path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read annotations of format ``fmt`` (``cuhk``, ``mtfl`` or ``pts``); see the readers.

    Faces used as read (no image check) are de-duplicated here (:func:`reject_duplicates`);
    :func:`ingest` de-duplicates after :func:`validate_faces` instead.
    """
    return reject_duplicates(*_read(fmt, root=root, list_path=list_path,
                                    boxes_path=boxes_path))


def _read(fmt: str, *, root: str | Path, list_path: str | Path,
          boxes_path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reader of ``fmt``, without the duplicate check."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt == {fmt!r}, must be one of {FORMATS}")
    has_boxes = boxes_path is not None and str(boxes_path) != ""
    if has_boxes and fmt != "mtfl":
        raise ValueError(f"boxes_path is only used by the mtfl format, not {fmt!r}")
    if fmt == "cuhk":
        return read_cuhk(list_path, root)
    if fmt == "mtfl":
        return read_mtfl(list_path, root, boxes_path if has_boxes else None)
    return read_pts(list_path, root)


def reject_duplicates(faces: pd.DataFrame, rejects: pd.DataFrame
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the first face of each image and points; reject the others as duplicates.

    Run it on the faces that are *kept* (after every other check): a face is a duplicate
    only of a face that was accepted, never of a line rejected for another reason.
    ``face_id`` is renumbered 0..n-1; the rejects come back in (file, line) order.
    """
    faces = conform_faces(faces)
    key = ["path", *POINT_COLUMNS]
    first = faces.groupby(key, sort=False)["line"].transform("first")
    dup = faces.duplicated(key, keep="first").to_numpy()
    new = [(str(f), int(n), f"duplicate: same image and points as line {int(m)}")
           for f, n, m in zip(faces["list_file"][dup], faces["line"][dup], first[dup],
                              strict=True)]
    out = faces.loc[~dup].copy()
    out["face_id"] = np.arange(len(out), dtype=np.int64)
    all_rejects = pd.concat([rejects.astype(REJECT_DTYPES), _conform_rejects(new)],
                            ignore_index=True)
    all_rejects = all_rejects.sort_values(["file", "line"], kind="stable")
    return conform_faces(out), all_rejects.reset_index(drop=True).astype(REJECT_DTYPES)


# ---------------------------------------------------------------------------- validation

_POINT_NAMES = ("LE", "RE", "N", "LM", "RM")


def _points_in_image(points: np.ndarray, width: int, height: int) -> str | None:
    """Problem text when a point lies outside the image (pixel area plus tolerance)."""
    lo = -0.5 - POINT_TOLERANCE
    hi = np.array([width, height]) - 0.5 + POINT_TOLERANCE
    bad = ((points < lo) | (points > hi)).any(axis=1)
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    x, y = points[i]
    return (f"{_POINT_NAMES[i]} at ({x:.1f}, {y:.1f}) is outside the {width}x{height} image")



def _points_in_box(points: np.ndarray, box: np.ndarray, margin: float = BOX_MARGIN) -> np.ndarray:
    """Which of ``points (5, 2)`` lie inside ``box`` enlarged by ``margin`` of w, h per side."""
    w, h = box[2] - box[0], box[3] - box[1]
    lo = np.array([box[0] - margin * w, box[1] - margin * h])
    hi = np.array([box[2] + margin * w, box[3] + margin * h])
    return ((points >= lo) & (points <= hi)).all(axis=1)


def _box_problem(box: np.ndarray, points: np.ndarray, width: int, height: int) -> str | None:
    """Reject reason of a face box, or None when the box is usable."""
    w, h = box[2] - box[0], box[3] - box[1]
    if w < 0 or h < 0:
        return (f"box inverted: right - left = {w:.2f}, bottom - top = {h:.2f} (the box is "
                f"left, top, right, bottom; CUHK lists give left, right, top, bottom)")
    if not (w > MIN_BOX_SIZE and h > MIN_BOX_SIZE):
        return (f"box degenerate: width {w:.2f}, height {h:.2f} (both must be > "
                f"{MIN_BOX_SIZE:g} px; the box is left, top, right, bottom)")
    if box[2] < -0.5 or box[3] < -0.5 or box[0] > width - 0.5 or box[1] > height - 0.5:
        return (f"box outside image: ({box[0]:.1f}, {box[1]:.1f}, {box[2]:.1f}, {box[3]:.1f}) "
                f"misses the {width}x{height} image")
    inside = _points_in_box(points, box)
    if not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        return (f"box misses landmarks: {_POINT_NAMES[i]} at ({points[i, 0]:.1f}, "
                f"{points[i, 1]:.1f}) is outside the box enlarged by {BOX_MARGIN:.0%}")
    return None


def _pick_detection(points: np.ndarray, detections: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The detected box containing most of ``points`` (ties: nearest centre), or a reason."""
    if len(detections) == 0:
        return None, "no face found by detector"
    counts = np.array([_points_in_box(points, d, 0.0).sum() for d in detections])
    if counts.max() == 0:
        return None, (f"no face found by detector: none of the {len(detections)} detected "
                      "face(s) contains the landmarks")
    centre = points.mean(axis=0)
    det_centre = (detections[:, :2] + detections[:, 2:]) / 2
    dist = np.linalg.norm(det_centre - centre, axis=1)
    best = min(np.flatnonzero(counts == counts.max()), key=lambda i: dist[i])
    return detections[best], ""


def _load(root: Path, rel: str, max_pixels: int) -> tuple[np.ndarray, str]:
    """Decoded image and sha1 of its bytes; ImageError with a reason otherwise."""
    path = root / rel
    width, height = images.read_image_header(path)
    if width * height > max_pixels:
        raise images.ImageError(path, f"image too large: {width}x{height} = {width * height} "
                                      f"pixels > max_image_pixels {max_pixels}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise images.ImageError(path, f"image unreadable: {exc.strerror or exc}") from None
    img = images.decode_image(data, max_pixels=max_pixels, path=path)
    return img, hashlib.sha1(data).hexdigest()


def validate_faces(faces: pd.DataFrame, rejects: pd.DataFrame, root: str | Path, *,
                   max_image_pixels: int, detect_missing_boxes: bool = True,
                   log_every: int = 1000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every face against its image; fill size, content hash and missing boxes.

    Each image is opened once, however many faces it has: its header is read
    first (more than ``max_image_pixels`` is refused before decoding), then it is
    decoded (:func:`facecascade.images.decode_image`). A face is rejected when

    - its image is missing, too large or unreadable;
    - a point lies outside the image (by more than 0.5 px);
    - it has no box and the detector finds no face containing its points
      (the detected box with the most points inside wins, then the nearest centre);
    - its box is degenerate (width or height <= 1 px), lies entirely outside the
      image, or does not contain all five points once enlarged by 10% of its width
      and height per side (a box that merely runs past the image edge is kept);
    - it repeats the image and points of a face kept before it (:func:`reject_duplicates`).

    Parameters
    ----------
    faces, rejects : DataFrame
        A reader's output.
    root : str or Path
        Data root the faces' paths are relative to.
    max_image_pixels : int
        Largest ``width * height`` accepted.
    detect_missing_boxes : bool
        Detect boxes for faces without one; if False such faces are rejected.
    log_every : int
        Log progress every this many faces.

    Returns
    -------
    (faces, rejects) : tuple of DataFrame
        Accepted faces (``face_id`` renumbered 0..n-1, ``width``, ``height``,
        ``content_hash`` and detected boxes filled), and ``rejects`` plus the new rejects.
    """
    root = Path(root)
    faces = conform_faces(faces)
    points, boxes = faces_to_arrays(faces)
    boxes = boxes.copy()
    n = len(faces)
    width = np.zeros(n, np.int32)
    height = np.zeros(n, np.int32)
    digest = np.full(n, "", dtype=object)
    box_source = faces["box_source"].to_numpy(dtype=object).copy()
    keep = np.zeros(n, bool)
    new_rejects: list[tuple[str, int, str]] = []
    list_files = faces["list_file"].to_numpy(dtype=object)
    lines = faces["line"].to_numpy()
    done = 0

    def reject(i: int, reason: str) -> None:
        new_rejects.append((str(list_files[i]), int(lines[i]), reason))

    for rel, idx in faces.groupby("path", sort=False).indices.items():
        try:
            img, sha = _load(root, rel, max_image_pixels)
        except images.ImageError as exc:
            reason = f"{exc.reason} ({rel})" if ":" in exc.reason else f"{exc.reason}: {rel}"
            for i in idx:
                reject(i, reason)
        else:
            h, w = img.shape[:2]
            detections: np.ndarray | None = None
            for i in idx:
                problem = _points_in_image(points[i], w, h)
                if problem is not None:
                    reject(i, f"point outside image: {problem}")
                    continue
                if np.isnan(boxes[i]).any():
                    if not detect_missing_boxes:
                        reject(i, "box missing: the list has no box and detection is off")
                        continue
                    if detections is None:
                        detections = detect.detect_faces(img)
                    box, why = _pick_detection(points[i], detections)
                    if box is None:
                        reject(i, why)
                        continue
                    boxes[i] = box
                    box_source[i] = "detector"
                problem = _box_problem(boxes[i], points[i], w, h)
                if problem is not None:
                    reject(i, problem)
                    continue
                keep[i] = True
                width[i], height[i], digest[i] = w, h, sha
        done += len(idx)
        if log_every and (done // log_every) != ((done - len(idx)) // log_every):
            logger.info("validated %d/%d faces (%d rejected)", done, n, len(new_rejects))
    out = faces.copy()
    out.loc[:, list(BOX_COLUMNS)] = boxes
    out["width"], out["height"], out["content_hash"] = width, height, digest
    out["box_source"] = box_source
    out = out.loc[keep].copy()
    all_rejects = pd.concat([rejects, _conform_rejects(new_rejects)], ignore_index=True) \
        if len(rejects) else _conform_rejects(new_rejects)
    out, all_rejects = reject_duplicates(out, all_rejects)
    logger.info("validated %d faces: %d accepted, %d rejected", n, len(out),
                len(all_rejects) - len(rejects))
    return out, all_rejects


# ---------------------------------------------------------------------------- ingest, split

def summarise(fmt: str, faces: pd.DataFrame, rejects: pd.DataFrame) -> dict[str, Any]:
    """JSON-ready counts: accepted, rejected, rejects by reason category, per source and file."""
    def counts(values: Any) -> dict[str, int]:
        return {str(k): int(v) for k, v in Counter(values).most_common()}

    return {
        "format": fmt,
        "accepted": len(faces),
        "rejected": len(rejects),
        "rejects_by_reason": counts(reason_category(r) for r in rejects["reason"]),
        "accepted_by_source": counts(faces["source"]),
        "rejected_by_file": counts(rejects["file"]),
        "box_source": counts(faces["box_source"]),
    }


def ingest(fmt: str, *, root: str | Path, list_path: str | Path,
           boxes_path: str | Path | None = None, max_image_pixels: int,
           strict: bool = False, detect_missing_boxes: bool = True
           ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read and validate annotations: ``(faces, rejects, summary)``.

    Raises
    ------
    IngestError
        No face was accepted, or ``strict`` and at least one face was rejected
        (the message lists the first rejects as ``file:line: reason``).
    FormatError
        A whole file is unusable (see the readers).
    """
    faces, rejects = _read(fmt, root=root, list_path=list_path, boxes_path=boxes_path)
    faces, rejects = validate_faces(faces, rejects, root, max_image_pixels=max_image_pixels,
                                    detect_missing_boxes=detect_missing_boxes)
    summary = summarise(fmt, faces, rejects)
    if len(faces) == 0 or (strict and len(rejects)):
        first = "\n  ".join(reject_messages(rejects, limit=5))
        why = "no face accepted" if len(faces) == 0 else \
            f"{len(rejects)} face(s) rejected in strict mode"
        raise IngestError(f"{list_path}: {why}" + (f"; first rejects:\n  {first}" if first else ""))
    return faces, rejects, summary


def _unit_hash(seed: int, content_hash: str) -> float:
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(faces: pd.DataFrame, *, val_fraction: float, seed: int) -> pd.DataFrame:
    """Set ``split`` to "train" or "val", decided per image content.

    A face goes to "val" when ``sha256(f"{seed}:{content_hash}")``, read as a number in
    [0, 1), is below ``val_fraction``: byte-identical images under different names
    land in the same split, the choice is stable when faces are added or removed,
    and the same seed gives the same split.

    Raises
    ------
    ValueError
        ``val_fraction`` outside (0, 1), or faces without ``content_hash`` (not validated).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction == {val_fraction!r}, must be in (0, 1)")
    hashes = faces["content_hash"].astype(str)
    missing = int((hashes == "").sum())
    if missing:
        raise ValueError(f"assign_split needs validated faces: {missing} row(s) have no "
                         "content_hash; run validate_faces first")
    u = np.array([_unit_hash(seed, h) for h in hashes], np.float64)
    out = faces.copy()
    out["split"] = np.where(u < val_fraction, "val", "train")
    return conform_faces(out)
