"""Benchmark: opencv's Haar boxes against a set's own boxes, and what calibration buys.

For the validation faces of a 5-point set (the same split as training), finds faces
with the Haar detector, matches each list face to the detection nearest its box
centre, and measures the ``detect`` calibration (median side ratio and centre shift
of the face frames; :func:`facecascade.detect.measure_calibration`). With ``--model``
it also predicts the matched faces three ways (list boxes, raw Haar boxes, calibrated
Haar boxes) and prints NME by inter-ocular distance and the failure rate at 10%.
Put the printed ``detect`` numbers in params.yaml before training on that set.

    python bench/detector_boxes.py --data DATA/mtfl-train --folder net_7876 \\
        --model WORK/facecascade-mtfl-cascade --out bench/results/detector_boxes_mtfl.json

``--data`` defaults to ``$FACECASCADE_DATA``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from benchdata import add_data_argument, dataset_name, model_name

from facecascade.config import load_config
from facecascade.detect import calibrate_boxes, detect_faces, measure_calibration
from facecascade.formats import assign_split, faces_to_arrays, ingest
from facecascade.frame import face_frame
from facecascade.geometry import box_center
from facecascade.images import load_image
from facecascade.io import write_json_atomic
from facecascade.metrics import failure_rate, nme

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--list", default="trainImageList.txt")
    ap.add_argument("--format", default="cuhk")
    ap.add_argument("--folder", default="", help="only images under this folder of the root")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--model", help="a trained cascade (directory, .onnx or models:/ URI)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/detector_boxes.json"))
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / args.list).is_file():
        print(f"{data / args.list}: data set not found", file=sys.stderr)
        return 2
    cfg = load_config(args.params)
    root = data / "images"
    faces, _, _ = ingest(args.format, root=root, list_path=data / args.list,
                         max_image_pixels=cfg.data.max_image_pixels)
    faces = assign_split(faces, val_fraction=cfg.data.split.val_fraction,
                         seed=cfg.data.split.seed)
    val = faces[(faces["split"] == "val") & faces["path"].str.startswith(args.folder)]
    val = val.reset_index(drop=True)
    gt, boxes = faces_to_arrays(val)

    t0 = time.perf_counter()
    images, found, keep = [], [], []
    for i, path in enumerate(val["path"]):
        img = load_image(root / path, max_pixels=cfg.data.max_image_pixels)
        det = detect_faces(img, min_size_frac=cfg.detect.min_size_frac)
        if not len(det):
            continue
        j = int(np.argmin(np.linalg.norm(box_center(det) - box_center(boxes[i:i + 1]), axis=1)))
        images.append(img)
        found.append(det[j])
        keep.append(i)
    detect_s = time.perf_counter() - t0
    keep_a, det_a = np.array(keep), np.array(found).reshape(-1, 4)
    print(f"{len(val)} validation faces, {len(keep)} detected "
          f"({100 * len(keep) / max(len(val), 1):.1f}%) in {detect_s:.1f} s")
    calib = measure_calibration(face_frame(boxes[keep_a], cfg.frame.scale),
                                face_frame(det_a, cfg.frame.scale))
    print("detect calibration for params.yaml: "
          + ", ".join(f"{k}: {v}" for k, v in calib.items()))
    out: dict = {"data": dataset_name(data, args.list), "folder": args.folder,
                 "val_faces": int(len(val)), "detected": int(len(keep)),
                 "detect_seconds": detect_s, "calibration": calib}

    if args.model:
        from facecascade.models import load_model

        cascade = load_model(args.model, cfg=cfg)
        index = np.arange(len(images))
        g = gt[keep_a]
        variants = {
            "list boxes": boxes[keep_a],
            "haar boxes, raw": det_a,
            "haar boxes, calibrated": calibrate_boxes(det_a, replace(cfg.detect, **calib)),
        }
        rows = {}
        print(f"{'boxes':24s} {'NME% L1':>8s} {'NME% L3':>8s} {'FR@10%':>7s}")
        for name, bx in variants.items():
            pred = cascade.predict(images, bx, index)
            e1, e3 = nme(pred[1], g), nme(pred[max(pred)], g)
            rows[name] = {"nme_level1": float(e1.mean()), "nme_final": float(e3.mean()),
                          "failure_rate": float(failure_rate(e3, cfg.evaluate.failure_threshold))}
            print(f"{name:24s} {100 * e1.mean():8.2f} {100 * e3.mean():8.2f} "
                  f"{100 * rows[name]['failure_rate']:7.1f}")
        out.update(model=model_name(args.model), nme_by_boxes=rows)
    write_json_atomic(out, args.out)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
