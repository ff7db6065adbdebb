"""Stage evaluate: per-level NME / failure rate / AUC on the validation faces.

Reads the faces and the predictions of levels 1-3 (PRED_DIR/level{k}.parquet),
compares them with the mean-shape baseline, and writes metrics.json plus the
plot tables and PNGs (CED per level, per-point errors, best and worst faces).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from facecascade.evaluation import split_faces, write_report
from facecascade.formats import faces_to_arrays
from facecascade.images import load_image
from facecascade.metrics import format_table, mean_shape_baseline
from facecascade.predictions import read_predictions
from facecascade.stage import parse_argv, run


def main() -> None:
    cfg, paths = parse_argv(__doc__, ["faces", "pred_dir", "metrics_out", "plots_dir"])
    faces = pd.read_parquet(paths["faces"])
    train, val = split_faces(faces, "train"), split_faces(faces, "val")
    gt, boxes = faces_to_arrays(val)
    train_gt, train_boxes = faces_to_arrays(train)
    preds = {f"level{k}": read_predictions(Path(paths["pred_dir"]) / f"level{k}.parquet", val)
             for k in (1, 2, 3)}
    preds["baseline"] = mean_shape_baseline(train_gt, train_boxes, boxes,
                                            frame_scale=cfg.frame.scale)
    root = Path(cfg.data.root)
    report = write_report(
        preds, gt, boxes,
        lambda i: load_image(root / val["path"].iloc[i], max_pixels=cfg.data.max_image_pixels),
        paths["plots_dir"], cfg, metrics_path=paths["metrics_out"],
        labels=[str(f) for f in val["face_id"]])
    print(f"validation faces: {len(val)}")
    print(format_table(report))


if __name__ == "__main__":
    run(main)
