"""Stage train@L: train the 3 or 10 networks of level L as concurrent Ray Train jobs.

Attaches to the Ray cluster in RAY_ADDRESS or starts a local one; logs the level as a
child run of the pipeline's MLflow run and each network as a grandchild run (params,
per-epoch curves, weights, start/end times, FINISHED or FAILED). Writes
OUT_DIR/{net}.pt (state dicts), OUT_DIR/{net}.history.json and OUT_DIR/level.json (the
level's and each network's MLflow run, the lineage of a level reused from DVC's cache)
atomically, and ends the pipeline run FINISHED with train@L among its stages.

Also runs as a Ray job: ray job submit --working-dir . -- python -m pipeline.train_level ...
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from facecascade import lineage, orchestration, tracking
from facecascade.io import atomic_path, write_json_atomic
from facecascade.stage import parse_argv, run


def main() -> None:
    cfg, paths = parse_argv(__doc__, ["level", "crop_dir", "out_dir"])
    level = int(paths["level"])
    project = Path.cwd()
    client = tracking.configure(cfg, project_dir=project)
    tags = lineage.lineage(cfg, project_dir=project)
    parent = tracking.parent_run(client, tracking.experiment_id(client, cfg.mlflow.experiment),
                                 tags["pipeline_key"], tags=tags)
    storage = (project / cfg.resources.storage_path).resolve()
    params = dataclasses.asdict(cfg.level(level))
    with tracking.level_run(client, parent, level, params) as run_id:
        orchestration.connect()
        try:
            with atomic_path(paths["out_dir"], directory=True) as tmp:
                try:
                    result = orchestration.train_level(
                        level, crop_dir=paths["crop_dir"], out_dir=tmp, cfg=cfg,
                        run_name=f"{tags['pipeline_key']}-level{level}", storage_path=storage)
                except orchestration.LevelTrainingError as exc:
                    for job in exc.result.jobs.values():
                        tracking.log_network_run(client, run_id, job)
                    raise
                runs = {net: tracking.log_network_run(client, run_id, job)
                        for net, job in result.jobs.items()}
                write_json_atomic({"level": level, "level_run_id": run_id,
                                   "parent_run_id": parent, "network_runs": runs,
                                   "seconds": result.seconds, "concurrency": result.concurrency,
                                   "jobs": {n: {"best_val_nme": j.best_val_nme,
                                                "seconds": j.seconds, "restarts": j.restarts}
                                            for n, j in result.jobs.items()}},
                                  Path(tmp) / lineage.LEVEL_FILE)
        finally:
            orchestration.shutdown()
    tracking.end_stage(client, parent, f"train@{level}")
    for net, job in result.jobs.items():
        print(f"{net:5s} val NME {100 * job.best_val_nme:6.2f}%  epochs {job.epochs_run:3d}  "
              f"{job.seconds:6.1f} s  restarts {job.restarts}")
    print(f"level {level}: {len(result.jobs)} nets in {result.seconds:.1f} s wall")


if __name__ == "__main__":
    try:
        run(main)
    except orchestration.LevelTrainingError as exc:
        print(f"train_level: {exc}", file=sys.stderr)
        sys.exit(1)
