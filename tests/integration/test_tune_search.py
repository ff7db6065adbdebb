"""A real Ray Tune search (`facecascade tune`) on a local Ray, logged to a real MLflow store.

The crop tables are the blob tables of test_orchestration (target = blob centre), so
training visibly beats predicting the mean centre. Runtime on the 2-core development
machine: about 1 min.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_orchestration import write_tables  # same directory (rootdir import mode)

from facecascade.cli import main
from facecascade.crops import read_crop_table

pytestmark = pytest.mark.integration

NET = "LE21"
SEARCH = {"net": NET, "num_samples": 4, "max_epochs": 3, "grace_period": 1,
          "reduction_factor": 2, "lr": [0.002, 0.05], "momentum": [0.85, 0.9],
          "batch_size": [32, 64], "dropout": [0.0], "weight_decay": [0.0, 0.001], "seed": 3}


def mean_centre_nme(crop_dir: Path) -> float:
    """Val NME of always predicting the mean training target (the known baseline)."""
    tr = read_crop_table(crop_dir / f"{NET}.train.parquet")
    va = read_crop_table(crop_dir / f"{NET}.val.parquet")
    err = (tr["target"].mean(axis=0) - va["target"]) * va["win_wh"]
    return float((np.linalg.norm(err, axis=1) / va["iod"]).mean())


def test_tune_command_searches_reports_and_logs(tmp_path: Path, monkeypatch, capsys) -> None:
    import yaml

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    write_tables(tmp_path / "crops", [NET], n_train=512, n_val=128)
    params = {"tune": SEARCH, "level2": {"train": {"batch_size": 32}},
              "resources": {"cpus_per_net": 1.0, "max_failures": 0, "torch_threads": 1}}
    Path("params.yaml").write_text(yaml.safe_dump(params))

    assert main(["tune", "--crops", "crops", "--out", "tune", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best:" in out and "4 trials" in out

    doc = json.loads(Path("tune/search.json").read_text())
    assert doc["net"] == NET and doc["level"] == 2 and len(doc["trials"]) == 4
    for trial in doc["trials"]:
        epochs = [h["epoch"] for h in trial["history"]]
        assert epochs == list(range(1, len(epochs) + 1)) and 1 <= len(epochs) <= 3, trial
        assert trial["status"] == ("finished" if len(epochs) == 3 else "stopped"), trial
        c = trial["config"]
        assert 0.002 <= c["lr"] <= 0.05 and 0.85 <= c["momentum"] <= 0.9
        assert c["batch_size"] in (32, 64) and c["dropout"] == 0.0
        assert c["weight_decay"] in (0.0, 0.001)
        assert c["loss"] in ("euclidean", "distance", "l1")  # the default choices
    assert len({t["config"]["lr"] for t in doc["trials"]}) == 4  # sampled, not repeated
    best = doc["best"]
    assert best["best_val_nme"] == min(t["best_val_nme"] for t in doc["trials"])
    # training beat the known answer of predicting the mean centre
    assert best["best_val_nme"] < 0.8 * mean_centre_nme(tmp_path / "crops")
    suggested = doc["suggested_level2_train"]
    from facecascade.config import Config

    assert suggested["lr"] == best["config"]["lr"]
    assert suggested["weight_decay"] == best["config"]["weight_decay"]
    assert suggested["loss"] == best["config"]["loss"]
    assert suggested["epochs"] == Config().level2.train.epochs  # not searched: the level's
    assert Path("tune/curves.png").stat().st_size > 5000

    # a finished search is not run again; --apply writes the best settings into params.yaml
    assert main(["tune", "--crops", "crops", "--out", "tune", "--quiet",
                 "--apply", "params.yaml"]) == 0
    out = capsys.readouterr().out
    assert "not run again" in out
    applied_line = next(line for line in out.splitlines() if line.startswith("applied to"))
    assert applied_line.startswith("applied to params.yaml: ") and "level2.train.lr" in applied_line
    applied = yaml.safe_load(Path("params.yaml").read_text())["level2"]["train"]
    assert {k: applied[k] for k in best["config"]} == best["config"]
    assert applied["batch_size"] == best["config"]["batch_size"]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("facecascade")
    runs = client.search_runs([exp.experiment_id], max_results=50)
    search = [r for r in runs if r.data.tags.get("facecascade.kind") == "search"]
    assert len(search) == 1 and search[0].info.status == "FINISHED"
    assert search[0].data.metrics["best_val_nme"] == pytest.approx(best["best_val_nme"])
    assert float(search[0].data.params["best.lr"]) == pytest.approx(best["config"]["lr"])
    trials = [r for r in runs
              if r.data.tags.get("mlflow.parentRunId") == search[0].info.run_id]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    for r in trials:
        history = client.get_metric_history(r.info.run_id, "val_nme")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
    artifacts = {a.path for a in client.list_artifacts(search[0].info.run_id)}
    assert {"search.json", "curves.png"} <= artifacts


def test_an_interrupted_search_resumes_its_trials(tmp_path: Path, monkeypatch) -> None:
    """SIGKILL `facecascade tune` once a trial has reported; the same command resumes the
    Tune experiment (same key) and finishes the search with the same trials."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    write_tables(tmp_path / "crops", [NET], n_train=512, n_val=128)
    search = {**SEARCH, "num_samples": 3, "max_epochs": 6, "grace_period": 6}
    params = {"tune": search, "resources": {"cpus_per_net": 1.0, "max_failures": 0,
                                            "max_concurrent": 1, "torch_threads": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "facecascade.cli", "-v", "tune", "--crops", "crops",
           "--out", "tune", "--no-mlflow", "--quiet"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    reported: set[str] = set()
    while time.monotonic() < deadline and first.poll() is None:
        reported = {p.parent.name for p in (tmp_path / "ray_results").glob("tune-*/*/result.json")
                    if p.stat().st_size > 0}
        if reported:
            break
        time.sleep(1)
    assert first.poll() is None, "the search ended before it could be interrupted"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert reported and not (tmp_path / "tune/search.json").exists()

    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming the interrupted search" in second.stderr
    doc = json.loads((tmp_path / "tune/search.json").read_text())
    assert len(doc["trials"]) == 3
    assert all(t["status"] == "finished" and t["epochs"] == 6 for t in doc["trials"]), doc
    experiments = list((tmp_path / "ray_results").glob("tune-*"))
    assert len(experiments) == 1  # the same Tune experiment, not a second one
