"""MLflow runs on a real SQLite store: the run tree, failures, network and level runs."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import with_store

from facecascade import lineage
from facecascade import tracking as tr
from facecascade.config import Config


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    torch.set_num_threads(1)


@dataclass
class FakeJob:
    """What orchestration hands to log_network_run."""

    net: str
    status: str = "FINISHED"
    history: list[dict] = field(default_factory=list)
    best_val_nme: float | None = None
    best_epoch: int | None = None
    start: float = 0.0
    end: float = 0.0
    restarts: int = 0
    error: str | None = None
    weights_path: Path | None = None


def make_job(net: str, tmp: Path, *, start: float, epochs: int = 3, status: str = "FINISHED",
             error: str | None = None) -> FakeJob:
    history = [{"epoch": e, "step": 10 * e, "train_loss": 1.0 / e, "val_nme": 0.2 - 0.01 * e,
                "lr": 5e-3 * 0.9 ** e, "seconds": 2.5, "time": start + 2.5 * e}
               for e in range(1, epochs + 1)]
    weights = tmp / f"{net}.pt"
    weights.write_bytes(b"state dict bytes")
    best = min(history, key=lambda h: h["val_nme"]) if history else None
    return FakeJob(net=net, status=status, history=history,
                   best_val_nme=best["val_nme"] if best else None,
                   best_epoch=best["epoch"] if best else None, start=start,
                   end=start + 2.5 * epochs + 1.0, restarts=1 if error else 0, error=error,
                   weights_path=weights if status == "FINISHED" else None)


# ----------------------------------------------------------------------------- helpers
def test_tracking_uri_env_wins_and_relative_sqlite_is_project_relative(tmp_path):
    cfg = Config()
    assert tr.tracking_uri(cfg, project_dir=tmp_path, environ={}) == \
        f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tr.tracking_uri(cfg, project_dir=tmp_path,
                           environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}) \
        == "http://127.0.0.1:5000"
    absolute = with_store(cfg, tmp_path / "x.db")
    assert tr.tracking_uri(absolute, project_dir="/elsewhere", environ={}) == \
        f"sqlite:///{tmp_path}/x.db"


def test_redact_drops_secrets_keeps_pipeline_key():
    out = tr.redact({"lr": 0.1, "API_KEY": "x", "my_token": "t", "db_password": "p",
                     "aws": {"secret_access": "s", "region": "eu"}, "pipeline_key": "abc",
                     "uri": "https://user:pw@host/x"})
    assert out == {"lr": 0.1, "aws": {"region": "eu"}, "pipeline_key": "abc",
                   "uri": "https://***@host/x"}


# ----------------------------------------------------------------------------- runs
def test_run_tree_parent_levels_networks(store, tmp_path):
    cfg, client, exp = store
    parent = tr.parent_run(client, exp, "key1", tags={"git_commit": "abc", "hf_token": "x"})
    assert tr.parent_run(client, exp, "key1") == parent  # a later stage finds it again
    t0 = time.time() - 3600.0
    nets = {1: ["F1", "EN1", "NM1"], 2: ["LE21", "LE22"], 3: ["RE31"]}
    jobs = {}
    for level, names in nets.items():
        train = dataclasses.asdict(cfg.level(level).train)
        with tr.level_run(client, parent, level, {"train": train, "api_token": "t"}) as lid:
            for i, name in enumerate(names):
                failed = name == "EN1"
                job = make_job(name, tmp_path, start=t0 + 100 * level + i,
                               status="FAILED" if failed else "FINISHED",
                               error="RuntimeError: out of memory" if failed else None)
                jobs[name] = job
                tr.log_network_run(client, lid, job, params={"train": train})

    ptags = client.get_run(parent).data.tags
    assert ptags[tr.PIPELINE_KEY_TAG] == "key1" and ptags["git_commit"] == "abc"
    assert "hf_token" not in ptags
    assert client.get_run(parent).info.status == "RUNNING"  # the register stage finishes it
    levels = tr.child_runs(client, parent)
    assert [r.info.run_name for r in levels] == ["level1", "level2", "level3"]
    for level_run in levels:
        assert level_run.info.status == "FINISHED"
        assert level_run.data.tags[tr.PARENT_TAG] == parent
        assert level_run.data.params["train.lr"] == "0.005"
        assert not any("token" in k for k in level_run.data.params)
        children = tr.child_runs(client, level_run.info.run_id)
        level = int(level_run.data.tags[tr.LEVEL_TAG])
        assert sorted(r.info.run_name for r in children) == sorted(nets[level])
        for run in children:
            job = jobs[run.info.run_name]
            rid = run.info.run_id
            assert run.info.start_time == round(job.start * 1000)
            assert run.info.end_time == round(job.end * 1000)
            assert run.info.status == job.status
            assert run.data.tags[tr.PARENT_TAG] == level_run.info.run_id
            assert run.data.params["net"] == job.net
            assert run.data.params["spec.level"] == str(level)
            assert run.data.params["train.batch_size"] == str(cfg.level(level).train.batch_size)
            curve = client.get_metric_history(rid, "val_nme")
            assert [m.step for m in curve] == [1, 2, 3]
            assert [m.timestamp for m in curve] == [round(h["time"] * 1000) for h in job.history]
            np.testing.assert_allclose([m.value for m in curve],
                                       [h["val_nme"] for h in job.history])
            assert {"train_loss", "lr", "epoch_seconds", "iterations", "best_val_nme",
                    "epochs_run"} <= set(run.data.metrics)
            arts = [a.path for a in client.list_artifacts(rid, "weights")]
            if job.status == "FINISHED":
                assert arts == [f"weights/{job.net}.pt"]
            else:
                assert arts == [] and "out of memory" in run.data.tags[tr.ERROR_TAG]


def test_failing_level_block_marks_runs_failed_and_key_reopens(store):
    _, client, exp = store
    parent = tr.parent_run(client, exp, "key2")
    with pytest.raises(ZeroDivisionError):
        with tr.level_run(client, parent, 2, {"a": 1}) as lid:
            1 / 0  # noqa: B018
    level = client.get_run(lid)
    assert level.info.status == "FAILED" and level.info.end_time is not None
    assert "ZeroDivisionError" in level.data.tags[tr.ERROR_TAG]
    assert client.get_run(parent).info.status == "FAILED"
    # the next attempt of the stage reopens the same pipeline run
    assert tr.parent_run(client, exp, "key2") == parent
    assert client.get_run(parent).info.status == "RUNNING"
    # a complete pipeline is never reopened
    tr.end_stage(client, parent, "register", complete=True)
    assert tr.parent_run(client, exp, "key2") != parent


def test_each_stage_ends_the_pipeline_run_and_the_next_stage_reopens_it(store):
    _, client, exp = store
    parent = tr.parent_run(client, exp, "key5")
    with tr.level_run(client, parent, 1, {}):
        pass
    tr.end_stage(client, parent, "train@1")  # `dvc exp run train@1` stops here
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.data.tags[tr.STAGES_TAG] == "train@1"
    assert run.data.tags[tr.COMPLETE_TAG] == "false"
    for stage in ("train@2", "train@2", "register"):  # train@2 run twice is listed once
        assert tr.parent_run(client, exp, "key5") == parent
        assert client.get_run(parent).info.status == "RUNNING"
        tr.end_stage(client, parent, stage, complete=stage == "register")
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tr.STAGES_TAG] == "train@1,train@2,register"
    assert run.data.tags[tr.COMPLETE_TAG] == "true"
    assert tr.parent_run(client, exp, "key5") != parent  # complete: a rerun gets its own
    tr.tag_run(client, parent, {"facecascade.network_run.F1": "abc", "an_api_token": "x"})
    tags = client.get_run(parent).data.tags
    assert tags["facecascade.network_run.F1"] == "abc" and "an_api_token" not in tags


def test_failed_stage_ends_its_open_pipeline_run(store, tmp_path):
    cfg, client, exp = store
    project = Path(client.tracking_uri[len("sqlite:///"):]).parent
    key = lineage.lineage(cfg, project_dir=project)["pipeline_key"]
    parent = tr.parent_run(client, exp, key)
    tr.end_stage(client, parent, "train@1")  # as the train@1 stage leaves it: FINISHED
    assert tr.fail_pipeline_run(cfg, project_dir=project,
                                error=FileNotFoundError("faces.parquet")) == parent
    run = client.get_run(parent)
    assert run.info.status == "FAILED" and "faces.parquet" in run.data.tags[tr.ERROR_TAG]
    # nothing open any more: nothing to do; a rerun reopens the same pipeline run
    assert tr.fail_pipeline_run(cfg, project_dir=project, error=RuntimeError()) is None
    assert tr.parent_run(client, exp, key) == parent
    tr.finish_run(client, parent)
    # no store: nothing is created
    empty = with_store(cfg, tmp_path / "none.db")
    assert tr.fail_pipeline_run(empty, project_dir=tmp_path, error=RuntimeError()) is None
    assert not (tmp_path / "none.db").exists()


def test_log_network_run_rejects_unknown_status_and_bad_key(store, tmp_path):
    _, client, exp = store
    parent = tr.parent_run(client, exp, "key3")
    with tr.level_run(client, parent, 1, {}) as lid:
        job = make_job("F1", tmp_path, start=time.time() - 10, status="DONE")
        with pytest.raises(ValueError, match="status"):
            tr.log_network_run(client, lid, job)
    with pytest.raises(ValueError, match="pipeline key"):
        tr.parent_run(client, exp, "x' OR 1=1")


def test_log_network_run_takes_orchestration_job_results(store, tmp_path):
    from facecascade import orchestration

    _, client, exp = store
    parent = tr.parent_run(client, exp, "key4")
    t0 = time.time() - 100.0
    history = [{"epoch": 1, "step": 5, "train_loss": 0.5, "val_nme": 0.3, "lr": 0.005,
                "seconds": 1.0, "samples_per_s": 900.0, "time": t0 + 1, "attempt": 0}]
    weights = tmp_path / "LE21.pt"
    weights.write_bytes(b"w")
    ok = orchestration.JobResult(net="LE21", status="ok", history=history, best_val_nme=0.3,
                                 best_epoch=1, start=t0, end=t0 + 2, weights_path=str(weights),
                                 params={"train": {"lr": 0.005}, "seed": 3})
    bad = orchestration.JobResult(net="LE22", status="failed", history=[], error="boom")
    with tr.level_run(client, parent, 2, {}) as lid:
        rid_ok = tr.log_network_run(client, lid, ok)
        rid_bad = tr.log_network_run(client, lid, bad)
    run = client.get_run(rid_ok)
    assert run.info.status == "FINISHED" and run.info.start_time == round(t0 * 1000)
    assert run.data.params["train.lr"] == "0.005" and run.data.params["seed"] == "3"
    assert run.data.metrics["samples_per_s"] == 900.0
    failed = client.get_run(rid_bad)
    assert failed.info.status == "FAILED" and failed.data.tags[tr.ERROR_TAG] == "boom"
    assert failed.info.end_time is not None


