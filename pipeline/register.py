"""Stage register: the trained cascade as one artifact, logged, registered and maybe promoted.

Writes OUT_DIR (models/cascade: manifest.json + weights.pt), logs it as an MLflow pyfunc
model of the pipeline run with the per-level validation metrics, marks the pipeline run
FINISHED and complete, registers a new version of mlflow.model_name tagged with its lineage
(git commit, data.dvc hash, params hash, and the MLflow run of each level and of each of the
23 networks, read from MODELS_DIR/level*/level.json, so levels reused from DVC's cache are
named too; the pipeline run gets the same run tags), and moves the alias `champion` to it
only if its validation NME beats the current champion's.
"""

from __future__ import annotations

import json
from pathlib import Path

from facecascade import lineage, registry, tracking
from facecascade.cascade import cascade_from_weight_files, save_cascade
from facecascade.stage import parse_argv, run


def main() -> None:
    cfg, paths = parse_argv(__doc__, ["models_dir", "metrics", "out_dir"])
    project = Path.cwd()
    models = Path(paths["models_dir"])
    report = json.loads(Path(paths["metrics"]).read_text(encoding="utf-8"))["levels"]
    val_nme = float(report["level3"]["nme_iod"])
    client = tracking.configure(cfg, project_dir=project)
    tags = lineage.lineage(cfg, project_dir=project)
    level_dirs = [models / f"level{k}" for k in (1, 2, 3)]
    runs = lineage.training_runs(level_dirs)  # the 3 level and 23 network runs, cached or not
    cascade = cascade_from_weight_files(cfg, level_dirs, levels=3)
    save_cascade(cascade, paths["out_dir"], extra={"lineage": {**tags, **runs},
                                                   "validation": report})
    parent = tracking.parent_run(client, tracking.experiment_id(client, cfg.mlflow.experiment),
                                 tags["pipeline_key"], tags=tags)
    with tracking.fail_on_error(client, parent):
        tracking.tag_run(client, parent, runs)
        for level, values in report.items():
            for metric in ("nme_iod", "nme_box", "failure_rate", "auc"):
                client.log_metric(parent, f"val_{level}_{metric}", float(values[metric]))
        model_uri = registry.log_cascade_model(client, parent, paths["out_dir"], cfg, tags=tags)
    tracking.end_stage(client, parent, "register", complete=True)
    version = registry.register_cascade(model_uri, name=cfg.mlflow.model_name, val_nme=val_nme,
                                        lineage={**tags, **runs}, client=client)
    promoted = registry.promote_if_better(client, cfg.mlflow.model_name, version, val_nme)
    print(f"registered {cfg.mlflow.model_name} version {version} (val NME "
          f"{100 * val_nme:.2f}%); champion {'moved to it' if promoted else 'unchanged'}")


if __name__ == "__main__":
    run(main)
