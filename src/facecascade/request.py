"""A served model's request table, decoded into :class:`~facecascade.inference.FaceRequest`\\ s.

This is how a REST request becomes points: ``mlflow models serve`` hands the
pyfunc model (:class:`facecascade.registry.CascadeModel`) a table, and
:func:`predict_frame` checks it, turns each row into a request and predicts them
with :func:`facecascade.inference.predict_requests`, the function the CLI uses too.

A request table has a column ``image``, holding an image file path or a base64
image (optionally a ``data:image/...;base64,`` URI), and optional box columns
``box_left, box_top, box_right, box_bottom`` (null = detect the faces). Every limit
(``serve.max_image_bytes``, ``serve.max_image_pixels``) is checked before the
pixels are decoded, and every refusal is a :class:`RequestError` naming the row.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .images import IMAGE_SUFFIXES, ImageError, header_from_bytes
from .inference import BOX_EDGE_COLUMNS, XY_COLUMNS, FaceRequest, predict_requests

if TYPE_CHECKING:  # pragma: no cover
    from .cascade import Cascade

#: columns of a response: the request row, the face within its image, its box and points
RESPONSE_COLUMNS = ("row", "face", *BOX_EDGE_COLUMNS, *XY_COLUMNS)


class RequestError(ValueError):
    """A prediction request is malformed, too large or its image cannot be decoded."""


def _is_path(value: str) -> bool:
    """Whether an ``image`` string names a file rather than holding base64.

    >>> _is_path("photos/a.jpg"), _is_path("iVBORw0KGgo=")
    (True, False)
    """
    if value.startswith("data:") or len(value) > 4096 or "\x00" in value:
        return False
    if Path(value).suffix.lower() in IMAGE_SUFFIXES:  # "." is not a base64 character
        return True
    try:
        return os.path.isfile(value)
    except (OSError, ValueError):
        return False


def _b64decode(value: str, row: int, max_bytes: int) -> bytes:
    """Decode a base64 image string, refusing oversize ones before decoding."""
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise RequestError(f"row {row}: a data URI image must be base64, "
                               "as in 'data:image/png;base64,...'")
    approx = len(text) * 3 // 4
    if approx > max_bytes:
        raise RequestError(f"row {row}: base64 image of {len(text)} characters decodes to "
                           f"about {approx} bytes, over the limit serve.max_image_bytes = "
                           f"{max_bytes}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"row {row}: image is neither an image file path nor valid "
                           f"base64 ({exc})") from None


def read_request_image(value: Any, row: int, *, max_bytes: int, allow_paths: bool = True
                       ) -> tuple[str, bytes]:
    """The label and encoded bytes of the ``image`` cell of request row ``row``.

    A string ending in an image suffix (``.png``, ``.jpg``, ...) or naming an
    existing file is a path (when ``allow_paths``); anything else is base64,
    optionally as a ``data:image/...;base64,`` URI. Files and base64 strings over
    ``max_bytes`` are refused before reading or decoding, and so are formats
    without a header (whose size is unknown before decoding).

    Returns
    -------
    label : str
        ``row <row>: image file '<path>'`` or ``row <row>: base64 image``.
    data : bytes
        The encoded image.

    Raises
    ------
    RequestError
        With the row and the reason.
    """
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"row {row}: image must be a non-empty string (a file path or "
                           f"base64), got {type(value).__name__} {value!r:.40}")
    if allow_paths and _is_path(value):
        label = f"row {row}: image file {value!r}"
        path = Path(value)
        if not path.is_file():
            raise RequestError(f"{label} does not exist")
        size = path.stat().st_size
        if size > max_bytes:
            raise RequestError(f"{label} has {size} bytes, over the limit "
                               f"serve.max_image_bytes = {max_bytes}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RequestError(f"{label} unreadable: {exc.strerror or exc}") from None
    else:
        label = f"row {row}: base64 image"
        data = _b64decode(value, row, max_bytes)
    try:
        if header_from_bytes(data, path=label) is None:
            raise RequestError(f"{label}: unknown image format (send PNG, JPEG, BMP, GIF, "
                               "TIFF or WebP)")
    except ImageError as exc:
        raise RequestError(str(exc)) from None
    return label, data


def request_boxes(frame: pd.DataFrame) -> np.ndarray:
    """(n, 4) boxes of the request rows, NaN rows where the faces are to be detected.

    >>> request_boxes(pd.DataFrame({"image": ["a.png", "b.png"], "box_left": [1, None],
    ...                             "box_top": [2, None], "box_right": [9, None],
    ...                             "box_bottom": [8, None]})).tolist()
    [[1.0, 2.0, 9.0, 8.0], [nan, nan, nan, nan]]
    """
    present = [c for c in BOX_EDGE_COLUMNS if c in frame.columns]
    if not present:
        return np.full((len(frame), 4), np.nan)
    if len(present) != 4:
        missing = [c for c in BOX_EDGE_COLUMNS if c not in frame.columns]
        raise RequestError(f"box columns come together: got {present}, missing {missing}")
    try:
        boxes = np.stack([pd.to_numeric(frame[c], errors="raise").to_numpy(np.float64)
                          for c in BOX_EDGE_COLUMNS], axis=1)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"box columns must be numbers or null: {exc}") from None
    for row, box in enumerate(boxes):
        nan = np.isnan(box)
        if nan.all():
            continue
        if nan.any() or not np.isfinite(box).all():
            raise RequestError(f"row {row}: box {box.tolist()} must be 4 finite numbers or "
                               "all null (null = detect the faces)")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise RequestError(f"row {row}: box {box.tolist()} must have right > left and "
                               "bottom > top")
    return boxes


def frame_requests(frame: pd.DataFrame, *, max_image_bytes: int, allow_paths: bool = True
                   ) -> Iterator[FaceRequest]:
    """The requests of a request table, one per row, read lazily (one image in memory).

    The table and its boxes are checked at once; each row's image when it is reached.

    Raises
    ------
    RequestError
        Malformed table or boxes (at once), unreadable or oversize image (at its row).
    """
    if not isinstance(frame, pd.DataFrame):
        raise RequestError(f"the request must be a table, got {type(frame).__name__}")
    if "image" not in frame.columns:
        raise RequestError(f"the request needs a column 'image', got {list(frame.columns)}")
    boxes = request_boxes(frame)
    values = frame["image"].tolist()

    def rows() -> Iterator[FaceRequest]:
        for row, value in enumerate(values):
            label, data = read_request_image(value, row, max_bytes=max_image_bytes,
                                             allow_paths=allow_paths)
            box = None if np.isnan(boxes[row]).all() else boxes[row][None]
            yield FaceRequest(path=label, data=data, boxes=box)

    return rows()


def predict_frame(cascade: Cascade, frame: pd.DataFrame, *, max_image_bytes: int,
                  max_image_pixels: int, allow_paths: bool = True) -> pd.DataFrame:
    """Landmarks for a request table: what the served model does, without MLflow.

    Parameters
    ----------
    cascade : Cascade
    frame : DataFrame
        Column ``image`` (file path or base64 image) and optional
        ``box_left, box_top, box_right, box_bottom`` (NaN = detect faces). A row
        with a box is one face; a row without is an image, all of whose detected
        faces are returned.
    max_image_bytes, max_image_pixels : int
        Request limits (``serve`` section).
    allow_paths : bool
        Whether ``image`` may name a file on this machine.

    Returns
    -------
    DataFrame
        :data:`RESPONSE_COLUMNS`, one row per face: ``row`` (request row), ``face``
        (index within the row's image, largest first), the box and ``x1, y1, ..., x5, y5``:
        the last level's points (LE, RE, N, LM, RM) in image pixels. Rows whose image has
        no detected face give none.

    Raises
    ------
    RequestError
        Malformed request, image too large or undecodable; the message names the row.
    """
    requests = frame_requests(frame, max_image_bytes=max_image_bytes, allow_paths=allow_paths)
    try:
        points, _ = predict_requests(cascade, requests, max_pixels=max_image_pixels,
                                     progress=False, errors="raise")
    except ImageError as exc:
        raise RequestError(str(exc)) from None
    return points.rename(columns={"request": "row"}).loc[:, list(RESPONSE_COLUMNS)]
