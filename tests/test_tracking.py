"""MLflow tracking on a real SQLite store: run tree, failures, registry, pyfunc model."""

from __future__ import annotations

import base64
import dataclasses
import shutil
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from facecascade import tracking as tr
from facecascade.cascade import Cascade, save_cascade
from facecascade.config import Config

mlflow = pytest.importorskip("mlflow")
from mlflow.exceptions import MlflowException  # noqa: E402

LFW = Path(__file__).resolve().parents[2] / "shared/data/mtfl-train/images/lfw_5590"
LINEAGE = {"git_commit": "0" * 40, "data_dvc_md5": "d41d8cd98f00b204e9800998ecf8427e.dir",
           "params_hash": "ab" * 32}


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


def with_store(cfg: Config, db: Path, **serve) -> Config:
    return dataclasses.replace(
        cfg, mlflow=dataclasses.replace(cfg.mlflow, tracking_uri=f"sqlite:///{db}"),
        serve=dataclasses.replace(cfg.serve, **serve))


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds); tests use own keys/names."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: start empty, restore afterwards
        mp.setenv("MLFLOW_TRACKING_URI", "")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)  # nothing may land in the repository
        cfg = with_store(Config(), root / "mlflow.db")
        client = tr.configure(cfg, project_dir=root)
        yield cfg, client, tr.experiment_id(client, cfg.mlflow.experiment)
        assert not (Path.cwd() / "mlruns").exists()


def png_b64(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(data.tobytes()).decode("ascii")


def face_like(size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)


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


def test_params_hash_and_pipeline_key_are_stable():
    cfg = Config()
    assert tr.params_hash(cfg) == tr.params_hash(Config())
    changed = dataclasses.replace(cfg, serve=dataclasses.replace(cfg.serve, max_image_bytes=7))
    assert tr.params_hash(changed) != tr.params_hash(cfg)
    k = tr.pipeline_key(git_commit="a", params_hash="b", data_md5="c")
    assert k == tr.pipeline_key(git_commit="a", params_hash="b", data_md5="c")
    assert k != tr.pipeline_key(git_commit="a-dirty", params_hash="b", data_md5="c")


def test_dvc_file_md5(tmp_path):
    f = tmp_path / "data.dvc"
    f.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 10\n"
                 "  nfiles: 2\n  hash: md5\n  path: raw\n")
    assert tr.dvc_file_md5(f) == "0123456789abcdef0123456789abcdef.dir"
    with pytest.raises(FileNotFoundError):
        tr.dvc_file_md5(tmp_path / "missing.dvc")
    (tmp_path / "empty.dvc").write_text("outs: []\n")
    with pytest.raises(ValueError, match="no output"):
        tr.dvc_file_md5(tmp_path / "empty.dvc")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_dirty_ignores_dvc_lock(tmp_path):
    assert tr.git_commit(tmp_path) == "unknown"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    clean = tr.git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (tmp_path / "untracked.txt").write_text("u")
    assert tr.git_commit(tmp_path) == clean
    (tmp_path / "a.py").write_text("x = 2\n")
    assert tr.git_commit(tmp_path) == f"{clean}-dirty"


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
    # a finished pipeline is never reopened
    tr.finish_run(client, parent)
    assert tr.parent_run(client, exp, "key2") != parent


def test_failed_stage_ends_its_open_pipeline_run(store, tmp_path):
    cfg, client, exp = store
    project = Path(client.tracking_uri[len("sqlite:///"):]).parent
    key = tr.lineage(cfg, project_dir=project)["pipeline_key"]
    parent = tr.parent_run(client, exp, key)
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
    orchestration = pytest.importorskip("facecascade.orchestration")
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


# ----------------------------------------------------------------------------- registry + model
@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    return save_cascade(Cascade.untrained(Config(), levels=3, seed=0),
                        tmp_path_factory.mktemp("art") / "cascade")


def log_pipeline(client, exp, cfg, cascade_dir, key, *, finish=True):
    parent = tr.parent_run(client, exp, key)
    uri = tr.log_cascade_model(client, parent, cascade_dir, cfg)
    if finish:
        tr.finish_run(client, parent)
    return parent, uri


def test_register_versions_lineage_and_champion(store, cascade_dir):
    cfg, client, exp = store
    name = "fc-test"
    versions = []
    for key, nme in (("p1", 0.10), ("p2", 0.12), ("p3", 0.08)):
        parent, uri = log_pipeline(client, exp, cfg, cascade_dir, key)
        assert uri.startswith("models:/")
        v = tr.register_cascade(uri, name=name, val_nme=nme,
                                lineage={**LINEAGE, "pipeline_key": key})
        versions.append(v)
        mv = client.get_model_version(name, v)
        assert mv.run_id == parent
        assert {k: mv.tags[k] for k in LINEAGE} == LINEAGE
        assert mv.tags["pipeline_key"] == key and float(mv.tags["val_nme"]) == nme
        promoted = tr.promote_if_better(client, name, v, nme)
        champion = str(client.get_model_version_by_alias(name, "champion").version)
        if key == "p1":
            assert promoted and champion == "1"
        elif key == "p2":  # worse: champion stays
            assert not promoted and champion == "1"
        else:  # better: champion moves
            assert promoted and champion == "3"
        if key == "p1":  # re-running the register stage does not duplicate
            assert tr.register_cascade(uri, name=name, val_nme=nme,
                                       lineage={**LINEAGE, "pipeline_key": key}) == v
    assert versions == ["1", "2", "3"]


def test_unfinished_pipeline_never_becomes_champion(store, cascade_dir):
    cfg, client, exp = store
    parent, uri = log_pipeline(client, exp, cfg, cascade_dir, "u1", finish=False)
    with pytest.raises(RuntimeError, match="RUNNING"):
        tr.register_cascade(uri, name="fc-u", val_nme=0.01,
                            lineage={**LINEAGE, "pipeline_key": "u1"})
    tr.finish_run(client, parent)
    v = tr.register_cascade(uri, name="fc-u", val_nme=0.05,
                            lineage={**LINEAGE, "pipeline_key": "u1"})
    client.update_run(parent, status="FAILED")  # e.g. marked failed after registering
    with pytest.raises(RuntimeError, match="FAILED"):
        tr.promote_if_better(client, "fc-u", v, 0.05)
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("fc-u", "champion")


@pytest.fixture(scope="module")
def champion(store, cascade_dir):
    cfg, client, exp = store
    small = dataclasses.replace(cfg, serve=dataclasses.replace(
        cfg.serve, max_image_bytes=60_000, max_image_pixels=250_000))
    _, uri = log_pipeline(client, exp, small, cascade_dir, "c1")
    v = tr.register_cascade(uri, name="fc-serve", val_nme=0.1,
                            lineage={**LINEAGE, "pipeline_key": "c1"})
    assert tr.promote_if_better(client, "fc-serve", v, 0.1)
    return mlflow.pyfunc.load_model("models:/fc-serve@champion")


def check_faces(out: pd.DataFrame, boxes: np.ndarray | None = None) -> None:
    assert list(out.columns) == list(tr.OUTPUT_COLUMNS)
    pts = out[list(tr.POINT_COLUMNS)].to_numpy().reshape(-1, 5, 2)
    assert np.isfinite(pts).all()
    if boxes is not None:
        for p, (left, top, right, bottom) in zip(pts, boxes, strict=True):
            w, h = right - left, bottom - top
            assert (p[:, 0] >= left - w).all() and (p[:, 0] <= right + w).all()
            assert (p[:, 1] >= top - h).all() and (p[:, 1] <= bottom + h).all()


def test_champion_predicts_from_path_and_base64_with_box(champion, tmp_path):
    image = face_like()
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), image)
    box = [20.0, 18.0, 76.0, 80.0]
    req = pd.DataFrame({"image": [str(path), png_b64(image), png_b64(image[:, :, 0])],
                        "box_left": [box[0]] * 3, "box_top": [box[1]] * 3,
                        "box_right": [box[2]] * 3, "box_bottom": [box[3]] * 3})
    out = champion.predict(req)
    assert out["row"].tolist() == [0, 1, 2] and out["face"].tolist() == [0, 0, 0]
    check_faces(out, np.array([box] * 3))
    # path and base64 of the same pixels give the same points (to float32 precision: the
    # nets run in float32 on pixel coordinates of about 100)
    np.testing.assert_allclose(out.iloc[0, 2:], out.iloc[1, 2:], rtol=0, atol=1e-4)


def test_champion_detects_faces_without_box(champion, tmp_path):
    files = sorted(LFW.glob("*.jpg"))[:2] if LFW.is_dir() else []
    if not files:
        pytest.skip(f"needs real faces in {LFW}")
    b64 = base64.b64encode(files[1].read_bytes()).decode("ascii")
    req = pd.DataFrame({"image": [str(files[0]), b64, str(files[0])],
                        "box_left": [np.nan, np.nan, 20.0], "box_top": [np.nan, np.nan, 20.0],
                        "box_right": [np.nan, np.nan, 60.0],
                        "box_bottom": [np.nan, np.nan, 60.0]})
    out = champion.predict(req)
    assert set(out["row"]) == {0, 1, 2}
    check_faces(out, out[list(tr.BOX_COLUMNS)].to_numpy())
    # box columns may also be left out entirely
    only = champion.predict(pd.DataFrame({"image": [str(files[0])]}))
    assert len(only) >= 1 and (only["row"] == 0).all()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width x height``, with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))


@pytest.mark.parametrize(("image", "reason"), [
    ("this is not base64!", "valid base64"),
    (base64.b64encode(b"hello, not an image at all").decode(), "unknown image format"),
    (base64.b64encode(png_claiming(30_000, 30_000)).decode(), "too large"),
    (base64.b64encode(bytes(90_000)).decode(), "serve.max_image_bytes"),
    ("data:image/png,abc", "must be base64"),
    ("/no/such/face.jpg", "does not exist"),
], ids=["garbage", "not-image", "pixel-bomb", "over-bytes", "data-uri", "missing-file"])
def test_bad_images_are_refused_with_reason(champion, image, reason):
    req = pd.DataFrame({"image": [png_b64(face_like(48)), image]})
    with pytest.raises(MlflowException, match=reason) as err:
        champion.predict(req)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "row 1" in err.value.message


def test_truncated_png_and_bad_boxes_are_refused(champion):
    data = base64.b64decode(png_b64(face_like(64)))
    truncated = base64.b64encode(data[: len(data) // 2]).decode()
    with pytest.raises(MlflowException, match="row 0: base64 image: image unreadable"):
        champion.predict(pd.DataFrame({"image": [truncated]}))
    good = png_b64(face_like(64))
    partial = pd.DataFrame({"image": [good], "box_left": [1.0], "box_top": [np.nan],
                            "box_right": [30.0], "box_bottom": [30.0]})
    with pytest.raises(MlflowException, match="finite numbers or all null"):
        champion.predict(partial)
    inverted = partial.assign(box_top=[40.0])
    with pytest.raises(MlflowException, match="bottom > top"):
        champion.predict(inverted)
