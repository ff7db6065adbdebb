"""Evaluation reports: per-level metrics JSON, DVC plot tables and PNG figures.

One writer (:func:`write_report`) serves the pipeline's evaluate stage and the
``facecascade evaluate`` command, so both produce the same files::

    metrics.json        {"levels": {level1: {...}, ..., baseline: {...}}, "n_faces": n}
    ced.json            CED rows, one column per level (DVC linear plot)
    point_errors.json   per-point NME, one column per level (DVC bar plot)
    ced.png, point_errors.png, best_faces.png, worst_faces.png
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import Config
from .io import write_json_atomic
from .metrics import ced_table, level_report, nme, point_error_rows
from .report import best_and_worst, plot_ced, plot_face_grid, plot_point_errors


def write_report(preds: Mapping[str, np.ndarray], gt: np.ndarray, boxes: np.ndarray,
                 load_image: Callable[[int], np.ndarray], out_dir: str | Path, cfg: Config, *,
                 metrics_path: str | Path | None = None,
                 labels: list[str] | None = None) -> dict[str, Any]:
    """Compute the per-level report of ``preds`` and write its JSON, plot tables and PNGs.

    Parameters
    ----------
    preds : mapping of level name (``"level1"``...) or ``"baseline"`` to (n, 5, 2) points
    gt, boxes : ground truth (n, 5, 2) and boxes (n, 4) of the same faces
    load_image : callable
        Returns the image of face ``i`` (for the best/worst grids).
    out_dir : folder of the plot files
    metrics_path : where ``metrics.json`` goes (default ``out_dir / "metrics.json"``)
    """
    ev = cfg.evaluate
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = level_report(preds, gt, boxes, failure_threshold=ev.failure_threshold,
                          ced_max=ev.ced_max)
    errors = {k: nme(p, gt) for k, p in preds.items()}
    write_json_atomic({"levels": report, "n_faces": int(len(gt))},
                      metrics_path or out_dir / "metrics.json")
    write_json_atomic(ced_table(errors, max_error=ev.ced_max, steps=101, wide=True),
                      out_dir / "ced.json")
    write_json_atomic(point_error_rows(report, wide=True), out_dir / "point_errors.json")
    plot_ced(errors, out_dir / "ced.png", max_error=ev.ced_max,
             failure_threshold=ev.failure_threshold)
    plot_point_errors(report, out_dir / "point_errors.png")
    final = [k for k in preds if k != "baseline"][-1]
    best, worst = best_and_worst(errors[final], ev.grid_faces)
    for name, idx in (("best", best), ("worst", worst)):
        plot_face_grid([load_image(int(i)) for i in idx], gt[idx], preds[final][idx],
                       errors[final][idx], out_dir / f"{name}_faces.png", boxes=boxes[idx],
                       labels=None if labels is None else [labels[i] for i in idx],
                       title=f"{name} {len(idx)} faces ({final})")
    return report


def evaluate_list(model: str | Path, *, fmt: str, root: str | Path, list_path: str | Path,
                  boxes_path: str | Path | None, out_dir: str | Path,
                  cfg: Config) -> dict[str, Any]:
    """Evaluate a cascade on an annotated list: every level against the list's points."""
    from .formats import faces_to_arrays, read_list
    from .images import load_image
    from .models import load_model

    faces, rejects = read_list(fmt, root=root, list_path=list_path, boxes_path=boxes_path)
    if len(faces) == 0:
        raise ValueError(f"{list_path}: no usable face ({len(rejects)} rejected)")
    cascade = load_model(model, cfg=cfg)
    gt, boxes = faces_to_arrays(faces)
    if not np.isfinite(boxes).all():
        raise ValueError(f"{list_path}: evaluation needs a box for every face")
    root = Path(root)
    paths = faces["path"].tolist()
    uniq, index = np.unique(paths, return_inverse=True)
    images = [load_image(root / p, max_pixels=cfg.data.max_image_pixels) for p in uniq]
    out = cascade.predict(images, boxes, index)
    preds = {f"level{k}": v for k, v in out.items()}
    labels = [f"{p}:{line}" for p, line in zip(paths, faces["line"], strict=True)]
    return write_report(preds, gt, boxes, lambda i: images[index[i]], out_dir, cfg,
                        labels=labels)


def split_faces(faces: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of one split (``"train"`` or ``"val"``), index reset."""
    return faces[faces["split"] == split].reset_index(drop=True)
