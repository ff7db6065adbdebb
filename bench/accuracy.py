"""Benchmark: a trained cascade's accuracy on a set's validation faces, under three box styles.

The validation faces are the held-out split of the training pipeline (split by image
content, ``data.split`` of the model's params). For each level, beside the mean-shape
baseline, it reports NME by inter-ocular distance, FR@10%, AUC@10% and per-point NME:

1. with the list's own boxes;
2. with the same faces' boxes redrawn in the square detector convention
   (``level1.crops.augment.square_style``: square, eyes at 25% of the height, inter-ocular
   distance 0.47 of the width; converted from the list boxes alone with the training
   boxes' measured style, :func:`facecascade.frame.convert_style`), then jittered by up to
   10% of the side (centre shifts uniform in +-10% in x and y, side scaled by 0.9..1.1);
3. with OpenCV's Haar detections, raw and calibrated (the calibration measured on up to
   ``--calib-faces`` *training* faces, so it is never fitted on the faces it is scored on);
   faces the detector misses are counted in the detection rate.

Each table is also given per source folder (LFW's 80x80 faces, the web originals).

    python bench/accuracy.py --data DATA --model models/cascade \\
        --out bench/results/accuracy_mtfl.json

``--data`` (or the ``FACECASCADE_DATA`` environment variable) is a folder holding
``images/`` and the list; results name the data set by that folder's name.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from facecascade.detect import calibrate_boxes, detect_faces, measure_calibration
from facecascade.formats import assign_split, faces_to_arrays, ingest
from facecascade.frame import BoxStyle, convert_style, face_frame, measure_style
from facecascade.geometry import box_center, box_size
from facecascade.images import load_image
from facecascade.io import write_json_atomic
from facecascade.metrics import format_table, level_report, mean_shape_baseline

JITTER = 0.10


def jitter_square(boxes: np.ndarray, rng: np.random.Generator, amount: float = JITTER
                  ) -> np.ndarray:
    """Boxes moved by U(-amount, amount) of their side in x and y, scaled by 1 +- amount."""
    side = np.sqrt(np.prod(box_size(boxes), axis=1))
    centre = box_center(boxes) + rng.uniform(-amount, amount, (len(boxes), 2)) * side[:, None]
    wh = box_size(boxes) * rng.uniform(1 - amount, 1 + amount, (len(boxes), 1))
    return np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)


def match_detection(points: np.ndarray, det: np.ndarray) -> np.ndarray | None:
    """The detection whose box holds the face's eyes and mouth, nearest the landmarks' centre."""
    if not len(det):
        return None
    x, y = points[None, :, 0], points[None, :, 1]
    inside = np.all((x >= det[:, None, 0]) & (x <= det[:, None, 2])
                    & (y >= det[:, None, 1]) & (y <= det[:, None, 3]), axis=1)
    if not inside.any():
        return None
    dist = np.linalg.norm(box_center(det) - points.mean(axis=0), axis=1)
    dist[~inside] = np.inf
    return det[int(np.argmin(dist))]


def detections(images: list[np.ndarray], index: np.ndarray, gt: np.ndarray, min_size_frac: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Matched Haar boxes ``(m, 4)`` and the indices ``(m,)`` of the faces that have one."""
    per_image = [detect_faces(im, min_size_frac=min_size_frac) for im in images]
    found, keep = [], []
    for i, (img_i, pts) in enumerate(zip(index, gt, strict=True)):
        box = match_detection(pts, per_image[img_i])
        if box is not None:
            found.append(box)
            keep.append(i)
    return np.array(found).reshape(-1, 4), np.array(keep, dtype=int)


def tables(cascade, images, index, gt, boxes, train_gt, train_boxes, sources, cfg) -> dict:
    """Per-level reports on all faces and per source, the baseline fitted on train boxes."""
    preds = {"baseline": mean_shape_baseline(train_gt, train_boxes, boxes,
                                             frame_scale=cfg.frame.scale)}
    preds.update({f"level{k}": v for k, v in cascade.predict(images, boxes, index).items()})
    kw = {"failure_threshold": cfg.evaluate.failure_threshold, "ced_max": cfg.evaluate.ced_max}
    out = {"all": level_report(preds, gt, boxes, **kw)}
    print(f"  all ({len(gt)} faces)")
    print("    " + format_table(out["all"], **kw).replace("\n", "\n    "))
    for src in np.unique(sources):
        sel = sources == src
        out[str(src)] = level_report({k: v[sel] for k, v in preds.items()}, gt[sel], boxes[sel],
                                     **kw)
        print(f"  {src} ({int(sel.sum())} faces)")
        print("    " + format_table(out[str(src)], **kw).replace("\n", "\n    "))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("FACECASCADE_DATA"),
                    help="data set folder (images/ and the list); default $FACECASCADE_DATA")
    ap.add_argument("--list", default="trainImageList.txt")
    ap.add_argument("--format", default="cuhk")
    ap.add_argument("--model", required=True, help="a cascade (directory, .onnx or models:/ URI)")
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--calib-faces", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.data:
        ap.error("give --data or set FACECASCADE_DATA")
    data = Path(args.data)
    if not (data / args.list).is_file():
        print(f"{data / args.list}: data set not found", file=sys.stderr)
        return 2
    from facecascade.models import load_model

    cascade = load_model(args.model)
    cfg = cascade.cfg
    root = data / "images"
    faces, _, _ = ingest(args.format, root=root, list_path=data / args.list,
                         max_image_pixels=cfg.data.max_image_pixels)
    faces = assign_split(faces, val_fraction=cfg.data.split.val_fraction,
                         seed=cfg.data.split.seed)
    train, val = (faces[faces["split"] == s].reset_index(drop=True) for s in ("train", "val"))
    gt, boxes = faces_to_arrays(val)
    train_gt, train_boxes = faces_to_arrays(train)
    sources = val["path"].str.split("/").str[0].to_numpy()
    uniq, index = np.unique(val["path"].to_numpy(), return_inverse=True)
    images = [load_image(root / p, max_pixels=cfg.data.max_image_pixels) for p in uniq]
    rng = np.random.default_rng(args.seed)
    result: dict = {"data": data.name, "list": args.list, "val_faces": int(len(val)),
                    "train_faces": int(len(train)), "model_levels": cascade.levels}

    print(f"{data.name}: {len(val)} validation faces; 1. the list's boxes")
    result["list_boxes"] = tables(cascade, images, index, gt, boxes, train_gt, train_boxes,
                                  sources, cfg)

    style = measure_style(train_gt, train_boxes)
    square = BoxStyle(**vars(cfg.level1.crops.augment.square_style))
    sq_val = jitter_square(convert_style(boxes, style, square), rng)
    sq_train = convert_style(train_boxes, style, square)
    print(f"2. square boxes (from {style}) with {JITTER:.0%} jitter")
    result["square_boxes"] = tables(cascade, images, index, gt, sq_val, train_gt, sq_train,
                                    sources, cfg)
    result["square_boxes"]["train_style"] = vars(style)

    t0 = time.perf_counter()
    calib_rows = rng.permutation(len(train))[:args.calib_faces]
    ctrain = train.iloc[calib_rows].reset_index(drop=True)
    c_gt, c_boxes = faces_to_arrays(ctrain)
    c_uniq, c_index = np.unique(ctrain["path"].to_numpy(), return_inverse=True)
    c_images = [load_image(root / p, max_pixels=cfg.data.max_image_pixels) for p in c_uniq]
    c_det, c_keep = detections(c_images, c_index, c_gt, cfg.detect.min_size_frac)
    calib = measure_calibration(face_frame(c_boxes[c_keep], cfg.frame.scale),
                                face_frame(c_det, cfg.frame.scale))
    det, keep = detections(images, index, gt, cfg.detect.min_size_frac)
    rate = len(keep) / max(len(gt), 1)
    print(f"3. Haar detections: {len(keep)} of {len(gt)} validation faces detected "
          f"({100 * rate:.1f}%); calibration from {len(c_keep)} training faces: {calib} "
          f"({time.perf_counter() - t0:.0f} s)")
    haar = {"detected": int(len(keep)), "detection_rate": rate, "calibration": calib,
            "calibration_faces": int(len(c_keep))}
    calibrated = replace(cfg.detect, **calib)
    for name, bx, tb in (("raw", det, c_det),
                         ("calibrated", calibrate_boxes(det, calibrated),
                          calibrate_boxes(c_det, calibrated))):
        print(f"  Haar boxes, {name}")
        haar[name] = tables(cascade, images, index[keep], gt[keep], bx, c_gt[c_keep], tb,
                            sources[keep], cfg)
    result["haar_boxes"] = haar
    write_json_atomic(result, args.out)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
