"""Benchmark: one level's networks as concurrent Ray Train jobs vs the plain loop.

On the same crop tables (a level's ``outputs/crops/levelL``) it measures

- the plain loop: ``fit_one`` for each net in this process, one after another;
- the Ray level: ``orchestration.train_level`` (one TorchTrainer per net, launched
  together): its wall time against the sum of the jobs' own times (overlap);
- MLflow: logging each job as a network run from the driver (SQLite store);

and prints the per-job overhead of Ray Train + MLflow against the plain loop. Saves JSON.

    python bench/level_overhead.py --level 2 --crops outputs/crops/level2 \\
        --out bench/results/level_overhead.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from facecascade import orchestration, tracking
from facecascade.config import load_config
from facecascade.crops import read_crop_table
from facecascade.io import write_json_atomic
from facecascade.nets import level_nets
from facecascade.train import ArrayBatches, fit_one

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--crops", default=str(ROOT / "outputs/crops/level2"))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/level_overhead.json"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = load_config(args.params, overrides)
    crops = Path(args.crops)
    if not (crops / f"{level_nets(args.level)[0]}.train.parquet").is_file():
        print(f"{crops}: no crop tables of level {args.level} (run dvc repro first)",
              file=sys.stderr)
        return 2
    tcfg = cfg.level(args.level).train
    nets = level_nets(args.level)

    torch.set_num_threads(cfg.resources.torch_threads)
    plain: dict[str, float] = {}
    for net in nets:
        tr = read_crop_table(crops / f"{net}.train.parquet")
        va = read_crop_table(crops / f"{net}.val.parquet")
        t = time.perf_counter()
        fit_one(net, ArrayBatches(tr, tcfg.batch_size, shuffle=True, seed=0),
                ArrayBatches(va, 1024, shuffle=False, seed=0), tcfg, seed=0, log_every=0,
                threads=cfg.resources.torch_threads)
        plain[net] = time.perf_counter() - t
        print(f"plain {net}: {plain[net]:.2f} s")

    with tempfile.TemporaryDirectory(prefix="fc-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        orchestration.connect(cfg)
        init_s = time.perf_counter() - t
        try:
            result = orchestration.train_level(args.level, crop_dir=crops, out_dir=tmp / "out",
                                               cfg=cfg, run_name="bench",
                                               storage_path=tmp / "ray")
        finally:
            orchestration.shutdown()
        import mlflow

        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(tracking_uri=uri)
        exp = tracking.experiment_id(client, "bench")
        parent = tracking.parent_run(client, exp, "bench", tags={})
        level_id = tracking.start_level_run(client, parent, args.level, {})
        mlflow_s: dict[str, float] = {}
        for net, job in result.jobs.items():
            t = time.perf_counter()
            tracking.log_network_run(client, level_id, job)
            mlflow_s[net] = time.perf_counter() - t

    jobs = result.jobs
    job_s = {n: j.seconds for n, j in jobs.items()}
    sum_jobs = sum(job_s.values())
    starts = [j.start for j in jobs.values()]
    ends = [j.end for j in jobs.values()]
    overlapping = sum(1 for j in jobs.values() for k in jobs.values()
                      if j is not k and j.start < k.end and k.start < j.end) // 2
    plain_sum = sum(plain.values())
    per_job_ray = (result.seconds - plain_sum / max(result.concurrency, 1)) / len(nets)
    figures = {
        "level": args.level, "nets": len(nets), "concurrency": result.concurrency,
        "train_api": result.train_api, "cpus": cfg.resources.cpus_per_net,
        "ray_init_s": init_s,
        "level_wall_s": result.seconds,
        "sum_of_job_s": sum_jobs,
        "overlap_ratio": sum_jobs / result.seconds,
        "overlapping_job_pairs": overlapping,
        "first_start_to_last_end_s": max(ends) - min(starts),
        "plain_sum_s": plain_sum,
        "plain_per_net_s": plain,
        "ray_job_s": job_s,
        "ray_inside_worker_overhead_per_job_s": (sum_jobs - plain_sum) / len(nets),
        "ray_end_to_end_overhead_per_job_s": per_job_ray,
        "mlflow_log_per_job_s": sum(mlflow_s.values()) / len(nets),
    }
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=2))
    print(f"level {args.level}: wall {result.seconds:.1f} s vs sum of jobs {sum_jobs:.1f} s "
          f"({overlapping} overlapping job pairs); plain loop {plain_sum:.1f} s for all nets; "
          f"Ray + MLflow overhead per job {per_job_ray + figures['mlflow_log_per_job_s']:.1f} s")
    write_json_atomic(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
