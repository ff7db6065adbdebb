"""Benchmark: does a Ray Tune search on a subset of the crops rank settings as on all of them?

`facecascade tune` may train its trials on a share ``tune.subset`` of the training faces'
crops. That is only sound if the settings it ranks best on the subset are the ones that
are best on the full tables. This runs the same search twice on the same tables:

- the same sampler seed (``tune.seed``), so both searches sample the same settings;
- ASHA off (``grace_period = max_epochs``), so every trial runs every epoch and no
  trial's rank depends on when it was stopped;
- once with ``tune.subset = --subset`` and once with the full tables,

then matches the trials by their settings and reports the Spearman rank correlation of
their best validation NME, whether both pick the same best trial, and the regret: the
full-table NME of the subset's pick against the full-table best.

The tables are a level's crop tables: ``--crops DIR`` (e.g. ``outputs/crops/level1`` of
a `make real` run), or cut from ``--data`` as ``bench/level_overhead.py`` cuts them
(levels 2 and 3; the previous level is the truth plus noise).

    python bench/tune_ranking.py --crops outputs/crops/level1 --net F1 --data-name mtfl-train
    python bench/tune_ranking.py --data DIR --level 2 --net LE21
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from facecascade import orchestration
from facecascade.config import load_config
from facecascade.io import write_json_atomic
from facecascade.tuning import SEARCHED, tune_net

ROOT = Path(__file__).resolve().parents[1]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties get their mean rank).

    >>> round(spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])), 2)
    0.5
    """
    return float(pd.DataFrame({"a": a, "b": b}).corr(method="spearman").iloc[0, 1])


def settings_key(config: dict) -> str:
    """A trial's searched settings as a string (the same sample in both searches)."""
    return json.dumps({k: config[k] for k in SEARCHED if k in config}, sort_keys=True)


def search(cfg, crops: Path, net: str, subset: float, storage: Path) -> dict[str, float]:
    """Best val NME of each sampled setting, ASHA off, on ``subset`` of the faces."""
    tune = dataclasses.replace(cfg.tune, subset=subset, grace_period=cfg.tune.max_epochs)
    run_cfg = dataclasses.replace(cfg, tune=tune)
    result = tune_net(run_cfg, crops, storage_path=storage, net=net,
                      name=f"ranking-{net}-{subset}", progress=False)
    return {settings_key(t.config): t.best_val_nme for t in result.trials if t.history}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", help="a level's crop tables (instead of cutting them from --data)")
    ap.add_argument("--data", default=os.environ.get("FACECASCADE_DATA"),
                    help="'synth' or a CUHK-format data set, when --crops is not given")
    ap.add_argument("--data-name", help="the data set's name in the results (with --crops)")
    ap.add_argument("--level", type=int, default=2, choices=(2, 3))
    ap.add_argument("--net", help="the network searched (default: params' tune.net)")
    ap.add_argument("--subset", type=float, default=0.1)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="params override, e.g. tune.num_samples=8 or tune.max_epochs=3")
    ap.add_argument("--out", help="JSON (default bench/results/tune_ranking_{data}_{net}.json)")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = load_config(args.params, overrides)
    net = args.net or cfg.tune.net
    if args.crops:
        crops, name = Path(args.crops), args.data_name or Path(args.crops).name
    elif args.data:
        from level_overhead import build_tables  # bench/ is the script's directory

        name = "demo" if args.data == "synth" else Path(args.data).name
        ns = argparse.Namespace(data=args.data, level=args.level, prev_noise=0.05)
        crops = build_tables(ns, cfg, ROOT / f"outputs/bench/level{args.level}-{name}")
    else:
        ap.error("give --crops DIR or --data DIR")
    if not (crops / f"{net}.train.parquet").is_file():
        print(f"{crops / (net + '.train.parquet')}: no crop table of {net}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    orchestration.connect()
    try:
        with tempfile.TemporaryDirectory(prefix="fc-ranking-") as tmp:
            sub = search(cfg, crops, net, args.subset, Path(tmp))
            full = search(cfg, crops, net, 1.0, Path(tmp))
    finally:
        orchestration.shutdown()
    keys = sorted(set(sub) & set(full))
    if len(keys) < 3:
        print(f"only {len(keys)} settings reported in both searches", file=sys.stderr)
        return 1
    a = np.array([sub[k] for k in keys])
    b = np.array([full[k] for k in keys])
    pick = keys[int(np.argmin(a))]
    best = keys[int(np.argmin(b))]
    trials = sorted(({"settings": json.loads(k), "val_nme_subset": sub[k],
                      "val_nme_full": full[k]} for k in keys), key=lambda t: t["val_nme_full"])
    result = {
        "data": name, "net": net, "subset": args.subset, "trials": len(keys),
        "max_epochs": cfg.tune.max_epochs, "seed": cfg.tune.seed,
        "spearman": spearman(a, b),
        "same_best": pick == best,
        "subset_pick_full_nme": full[pick], "full_best_nme": full[best],
        "regret_nme": full[pick] - full[best],
        "seconds": time.perf_counter() - t0,
        "by_full_nme": trials,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for t in trials:
        s = t["settings"]
        print(f"  {s.get('optimizer', '-'):>4s} {s.get('lr_schedule', '-'):>6s} "
              f"lr {s['lr']:.2e} bs {s['batch_size']:3d} dropout {s['dropout']:.2f} "
              f"wd {s.get('weight_decay', float('nan')):.0e}: "
              f"subset {100 * t['val_nme_subset']:6.2f}%  full {100 * t['val_nme_full']:6.2f}%")
    print(f"{net} on {name}: {len(keys)} settings, subset {args.subset} vs full: Spearman "
          f"{result['spearman']:.2f}; same best: {result['same_best']}; the subset's pick "
          f"scores {100 * full[pick]:.2f}% on the full tables against the best "
          f"{100 * full[best]:.2f}% ({result['seconds']:.0f} s)")
    out = Path(args.out or ROOT / f"bench/results/tune_ranking_{name}_{net}.json")
    write_json_atomic(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
