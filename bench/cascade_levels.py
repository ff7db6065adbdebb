"""Benchmark: train level 1, then 1+2, then 1+2+3 on a real 5-point set, briefly, on CPU.

Uses the library alone (no Ray, no MLflow): ingest -> seeded 90/10 split by image
content -> crops -> fit_one per net -> cascade predictions -> next level's crops.
Prints a per-level validation table (NME %, failure rate, AUC) beside the
mean-shape baseline (the training mean of relative points, placed in each
box's frame) and saves it as JSON.

    python bench/cascade_levels.py --data DATA/mtfl-train \\
        --out bench/results/cascade_levels.json \\
        --set level1.train.epochs=5 --set level1.crops.augment.copies=1 \\
        --save-cascade WORK/facecascade-mtfl-cascade

``--data`` defaults to ``$FACECASCADE_DATA``; ``--work`` (crop tables) to a fresh
temporary folder.

Overrides (``--set dotted.key=value``, YAML values) apply on top of params.yaml.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from benchdata import add_data_argument, dataset_name

from facecascade.cascade import Cascade, save_cascade
from facecascade.config import load_config
from facecascade.crops import read_crop_table, write_level_crops
from facecascade.formats import assign_split, faces_to_arrays, ingest
from facecascade.io import write_json_atomic
from facecascade.metrics import format_table, level_report, mean_shape_baseline
from facecascade.predictions import predict_faces
from facecascade.specs import level_nets, net_options
from facecascade.train import ArrayBatches, fit_one

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--list", default="trainImageList.txt")
    ap.add_argument("--format", default="cuhk")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--work", help="folder for the crop tables (default: a new temp folder)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/cascade_levels.json"))
    ap.add_argument("--limit", type=int, default=0, help="use only the first N faces")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--save-cascade", metavar="DIR",
                    help="also save the trained 3-level cascade as an artifact directory "
                         "(loadable by `facecascade predict --model DIR`)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / args.list).is_file():
        print(f"{data / args.list}: data set not found", file=sys.stderr)
        return 2
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    overrides.update({"data.root": str(data / "images")})
    cfg = load_config(args.params, overrides)
    work = Path(args.work or tempfile.mkdtemp(prefix="facecascade-bench-"))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    faces, rejects, summary = ingest(args.format, root=data / "images", list_path=data / args.list,
                                     max_image_pixels=cfg.data.max_image_pixels)
    if args.limit:
        faces = faces.iloc[:args.limit].reset_index(drop=True)
    faces = assign_split(faces, val_fraction=cfg.data.split.val_fraction, seed=cfg.data.split.seed)
    timings["ingest_s"] = time.perf_counter() - t0
    val = (faces["split"] == "val").to_numpy()
    train = ~val
    gt, boxes = faces_to_arrays(faces)
    print(f"faces: {len(faces)} ({train.sum()} train, {val.sum()} val), rejected {len(rejects)}")

    preds: dict[str, np.ndarray] = {
        "baseline": mean_shape_baseline(gt[train], boxes[train], boxes[val],
                                        frame_scale=cfg.frame.scale)}
    weights: dict[str, dict] = {}
    prev_all = None
    per_net: dict[str, dict] = {}
    for level in (1, 2, 3):
        t = time.perf_counter()
        crop_dir = work / f"crops{level}"
        counts = write_level_crops(level, faces, data / "images", crop_dir, cfg,
                                   prev_points=prev_all)
        timings[f"level{level}_crops_s"] = time.perf_counter() - t
        t = time.perf_counter()
        tcfg = cfg.level(level).train
        for name in level_nets(level):
            tr = read_crop_table(crop_dir / f"{name}.train.parquet")
            va = read_crop_table(crop_dir / f"{name}.val.parquet")
            result = fit_one(name, ArrayBatches(tr, tcfg.batch_size, shuffle=True,
                                                seed=cfg.resources.seed),
                             ArrayBatches(va, 1024, shuffle=False, seed=0), tcfg,
                             seed=cfg.resources.seed,
                             **net_options(name, cfg))
            weights[name] = result.state_dict
            per_net[name] = {"best_val_nme": result.best_val_nme, "epochs": result.epochs_run,
                             "train_rows": counts[name]["train"], "seconds": result.seconds}
            print(f"  {name}: val NME {100 * result.best_val_nme:.2f}% after "
                  f"{result.epochs_run} epochs ({result.seconds:.0f} s)")
        timings[f"level{level}_train_s"] = time.perf_counter() - t
        cascade = Cascade(cfg, weights, levels=level, device="cpu")
        t = time.perf_counter()
        prev_all = predict_faces(cascade, faces, data / "images", level=level,
                                 prev_points=prev_all, max_pixels=cfg.data.max_image_pixels)
        timings[f"level{level}_predict_s"] = time.perf_counter() - t
        preds[f"level{level}"] = prev_all[val]
        print(format_table(level_report(preds, gt[val], boxes[val],
                                        failure_threshold=cfg.evaluate.failure_threshold,
                                        ced_max=cfg.evaluate.ced_max)))

    report = level_report(preds, gt[val], boxes[val],
                          failure_threshold=cfg.evaluate.failure_threshold,
                          ced_max=cfg.evaluate.ced_max)
    base = report["baseline"]["nme_iod"]
    checks = {
        "level1_vs_baseline": 1 - report["level1"]["nme_iod"] / base,
        "level2_below_level1": report["level2"]["nme_iod"] < report["level1"]["nme_iod"],
        "level3_below_level2": report["level3"]["nme_iod"] < report["level2"]["nme_iod"],
    }
    print(format_table(report))
    print(f"level 1 is {100 * checks['level1_vs_baseline']:.1f}% below the baseline; "
          f"level 2 < level 1: {checks['level2_below_level1']}; "
          f"level 3 < level 2: {checks['level3_below_level2']}")
    write_json_atomic({"data": dataset_name(data, args.list), "faces": int(len(faces)),
                       "train_faces": int(train.sum()), "val_faces": int(val.sum()),
                       "overrides": {k: v for k, v in overrides.items() if k != "data.root"},
                       "report": report, "checks": checks, "nets": per_net,
                       "timings_s": timings, "torch_threads": args.threads}, args.out)
    print(f"saved {args.out}")
    if args.save_cascade:
        save_cascade(cascade, args.save_cascade,
                     extra={"trained_on": str(data / args.list),
                            "val_nme_iod": {k: float(v["nme_iod"]) for k, v in report.items()}})
        print(f"saved cascade {args.save_cascade}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
