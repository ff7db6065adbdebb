"""The predictions table: the points a cascade level gave each face.

Columns: ``face_id`` (int64, as in the faces table), ``level`` (int8), then
``le_x, le_y, re_x, re_y, n_x, n_y, lm_x, lm_y, rm_x, rm_y`` (float64, image pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .formats import POINT_COLUMNS
from .io import write_parquet_atomic


def predictions_frame(face_ids: np.ndarray, points: np.ndarray, level: int) -> pd.DataFrame:
    """Build a predictions table from face ids ``(n,)`` and points ``(n, 5, 2)``."""
    points = np.asarray(points, dtype=np.float64)
    df = pd.DataFrame(points.reshape(len(points), 10), columns=POINT_COLUMNS)
    df.insert(0, "level", np.int8(level))
    df.insert(0, "face_id", np.asarray(face_ids, dtype=np.int64))
    return df


def write_predictions(face_ids: np.ndarray, points: np.ndarray, level: int,
                      path: str | Path) -> None:
    """Write a predictions table atomically."""
    write_parquet_atomic(predictions_frame(face_ids, points, level), path)


def read_predictions(path: str | Path, faces: pd.DataFrame) -> np.ndarray:
    """Points ``(n, 5, 2)`` of a predictions file, aligned with the rows of ``faces``.

    Raises if a face of ``faces`` has no prediction in the file.
    """
    pred = pd.read_parquet(path).set_index("face_id")
    missing = ~faces["face_id"].isin(pred.index)
    if missing.any():
        raise ValueError(f"{path}: no prediction for {int(missing.sum())} face(s), e.g. face_id "
                         f"{int(faces['face_id'][missing].iloc[0])}; rerun the predict stage")
    return pred.loc[faces["face_id"], POINT_COLUMNS].to_numpy().reshape(-1, 5, 2)


def predict_faces(cascade, faces: pd.DataFrame, root: str | Path, *, level: int,
                  prev_points: np.ndarray | None, max_pixels: int,
                  chunk: int = 2048) -> np.ndarray:
    """Run level ``level`` of ``cascade`` on every face of an annotation table.

    Images are decoded once each, ``chunk`` faces at a time (sorted by path), so
    memory stays bounded on large sets. ``prev_points`` (n, 5, 2) are the
    previous level's points (levels 2 and 3). Returns points ``(n, 5, 2)``
    aligned with ``faces``.
    """
    from .formats import faces_to_arrays
    from .frame import face_frame
    from .images import load_gray

    _, boxes = faces_to_arrays(faces)
    frames = face_frame(boxes, cascade.cfg.frame.scale)
    out = np.zeros((len(faces), 5, 2))
    order = np.argsort(faces["path"].to_numpy(), kind="stable")
    root = Path(root)
    for start in range(0, len(order), chunk):
        sel = order[start:start + chunk]
        paths = faces["path"].to_numpy()[sel]
        uniq, image_index = np.unique(paths, return_inverse=True)
        grays = [load_gray(root / p, max_pixels=max_pixels) for p in uniq]
        prev = None if prev_points is None else prev_points[sel]
        out[sel] = cascade.predict_level(level, grays, image_index, frames[sel], prev)
    return out
