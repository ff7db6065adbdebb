"""A network that keeps failing, through the real train stage process.

`python -m pipeline.train_level` runs as a subprocess on a real local Ray with a real
MLflow SQLite store. One of level 2's ten crop tables is not Parquet, so that network's
Ray Train job fails on every attempt. The stage must exit 1 naming the network, write
no output directory, and leave MLflow telling the truth: that network's run FAILED,
the other nine FINISHED, the level run and the pipeline run FAILED (none left RUNNING).
Runtime on the 2-core development machine: about 1 min.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_orchestration import write_tables  # same directory (rootdir import mode)

from facecascade.specs import level_nets

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BAD_NET = "RE21"


def test_failing_network_fails_the_stage_and_its_mlflow_runs(tmp_path: Path) -> None:
    nets = level_nets(2)
    write_tables(tmp_path / "crops", nets, n_train=64, n_val=32)
    (tmp_path / "crops" / f"{BAD_NET}.train.parquet").write_bytes(b"this is not parquet")
    params = {
        "level2": {"train": {"epochs": 1, "batch_size": 32, "patience": 5}},
        "resources": {"cpus_per_net": 0.5, "max_failures": 1, "torch_threads": 1},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])})
    proc = subprocess.run([sys.executable, "-m", "pipeline.train_level", "params.yaml", "2",
                           "crops", "models/level2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)

    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the stage's last words: which network failed, and why (its file)
    assert f"train_level: level 2: 1 of 10 network(s) failed: {BAD_NET}" in proc.stderr
    assert f"{BAD_NET}.train.parquet" in proc.stderr.split("train_level: level 2")[-1]
    assert not (tmp_path / "models" / "level2").exists()  # atomic: nothing half-written
    assert not list(tmp_path.glob("models/*.tmp*"))

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("facecascade")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    by_name = {r.info.run_name: r for r in runs}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert by_name["level2"].info.status == "FAILED"
    assert by_name["level2"].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    statuses = {n: by_name[n].info.status for n in nets}
    assert statuses[BAD_NET] == "FAILED", statuses
    assert all(s == "FINISHED" for n, s in statuses.items() if n != BAD_NET), statuses
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]


def test_failed_stage_without_mlflow_ends_the_pipeline_run_failed(tmp_path: Path) -> None:
    """crops@2 fails (its faces table is missing) after train@1 opened and ended its run."""
    from mlflow import MlflowClient

    from facecascade import lineage, tracking
    from facecascade.config import load_config

    (tmp_path / "params.yaml").write_text("resources: {seed: 0}\n")
    cfg = load_config(tmp_path / "params.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = tracking.experiment_id(client, cfg.mlflow.experiment)
    key = lineage.lineage(cfg, project_dir=tmp_path)["pipeline_key"]
    parent = tracking.parent_run(client, exp, key)
    tracking.end_stage(client, parent, "train@1")  # as the train@1 stage leaves it: FINISHED
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])})
    proc = subprocess.run([sys.executable, "-m", "pipeline.crops", "params.yaml", "2",
                           "outputs/faces.parquet", "outputs/predictions/level1.parquet",
                           "outputs/crops/level2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "faces.parquet" in proc.stderr
    run = client.get_run(parent)
    assert run.info.status == "FAILED", run.info
    assert "faces.parquet" in run.data.tags["facecascade.error"]
    assert not (tmp_path / "outputs" / "crops").exists()
