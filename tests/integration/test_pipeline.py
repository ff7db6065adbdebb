"""The whole pipeline, for real: `dvc repro` on a tiny procedural set in a copy of the project.

Real DVC, a real local Ray (started by the train stages), a real MLflow SQLite store and
registry. Checks: every stage ran; MLflow holds one pipeline run with 3 level runs and 23
network runs; the registered version carries its lineage tags and the champion alias;
`models:/facecascade@champion` predicts 5 points; a second `dvc repro` has nothing to do;
editing a level-3 parameter reruns only level 3 and what follows, and the version it
registers still names the run of each of its 23 networks (levels 1 and 2 from DVC's cache);
secrets in the environment of `dvc repro` appear nowhere in its output, files or MLflow
store; a run of part of the pipeline (`dvc exp run train@1`) leaves no MLflow run RUNNING.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from facecascade.lineage import LEVEL_RUN_TAG, NETWORK_RUN_TAG
from facecascade.specs import get_spec, list_nets

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "synth.n_faces": 60, "synth.image_size": 96,
    "level1.train.epochs": 2, "level2.train.epochs": 2, "level3.train.epochs": 2,
    "level1.crops.augment.copies": 0, "level2.crops.shakes": 1, "level3.crops.shakes": 1,
    "resources.cpus_per_net": 0.5, "evaluate.grid_faces": 2,
}
#: credentials a real user's shell may hold; none may leak into logs, params, tags or files
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "fc-secret-aws-5ba1c0ffee",
    "MLFLOW_TRACKING_PASSWORD": "fc-secret-mlflow-7e57",
    "HF_TOKEN": "hf_fcsecrettoken0123456789",
    "GITHUB_TOKEN": "ghp_fcsecret0123456789abcdef",
}


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    """Run ``cmd``; on a timeout, end its whole process group (DVC's stages, their Ray)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
        raise
    out = stdout + stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def set_params(path: Path, values: dict) -> None:
    params = yaml.safe_load(path.read_text())
    for dotted, value in values.items():
        node = params
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the project's tracked files, with tiny params, after `dvc repro`."""
    return make_project(tmp_path_factory.mktemp("pipeline") / "proj")


def make_project(proj: Path, extra_env: dict[str, str] | None = None
                 ) -> tuple[Path, dict[str, str], str]:
    """Copy the project to ``proj`` (git + DVC, tiny params) and run `dvc repro` there, with
    ``extra_env`` (e.g. ``MLFLOW_TRACKING_URI``) on top of a clean environment."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/", "tests/")):
            (proj / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, proj / f)
    set_params(proj / "params.yaml", TINY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    env.update({**SECRETS, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
                **(extra_env or {})})
    bin_dir = Path(sys.executable).parent
    run(["git", "init", "-q"], proj, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], proj, env)
    run([str(bin_dir / "facecascade"), "synth", "--out", "data/raw"], proj, env)
    run([str(bin_dir / "dvc"), "commit", "-q", "-f", "data.dvc"], proj, env)
    run(["git", "add", "-A"], proj, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"], proj, env)
    log = run([str(bin_dir / "dvc"), "repro"], proj, env, timeout=3600)  # a safety net only
    return proj, env, log


def test_every_stage_ran_and_wrote_its_outputs(project):
    proj, _, log = project
    for stage in ["ingest", "crops@1", "train@1", "predict@1", "crops@2", "train@2",
                  "predict@2", "crops@3", "train@3", "predict@3", "evaluate", "register"]:
        assert f"Running stage '{stage}'" in log
    metrics = json.loads((proj / "outputs/metrics.json").read_text())["levels"]
    assert set(metrics) == {"level1", "level2", "level3", "baseline"}
    for name in ("ced.png", "point_errors.png", "best_faces.png", "worst_faces.png"):
        assert (proj / "outputs/plots" / name).stat().st_size > 1000
    assert (proj / "models/cascade/manifest.json").is_file()
    # no temp files left behind by atomic writes
    assert not list(proj.glob("outputs/**/*.tmp")) and not list(proj.glob("models/**/*.tmp"))


def test_mlflow_holds_23_network_runs_under_3_level_runs(project):
    proj, env, _ = project
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{proj / 'mlflow.db'}")
    exp = client.get_experiment_by_name("facecascade")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_parent: dict[str | None, list] = {}
    for r in runs:
        by_parent.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r)
    parents = by_parent[None]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    levels = by_parent[parents[0].info.run_id]
    assert sorted(r.info.run_name for r in levels) == ["level1", "level2", "level3"]
    nets = [r for lv in levels for r in by_parent.get(lv.info.run_id, [])]
    assert len(nets) == 23
    assert all(r.info.status == "FINISHED" for r in nets)
    assert all(client.get_metric_history(r.info.run_id, "val_nme") for r in nets[:3])


def test_registered_version_has_lineage_and_predicts(project, tmp_path):
    proj, env, _ = project
    import mlflow

    uri = f"sqlite:///{proj / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.get_model_version_by_alias("facecascade", "champion")
        for tag in ("git_commit", "data_dvc_md5", "params_hash"):
            assert version.tags.get(tag), tag
        model = mlflow.pyfunc.load_model("models:/facecascade@champion")
        faces = pd.read_csv(proj / "data/raw/faces.txt", sep=" ", header=None)
        row = faces.iloc[0]
        image = str(proj / "data/raw" / row[0])
        box = {"box_left": [row[1]], "box_top": [row[3]], "box_right": [row[2]],
               "box_bottom": [row[4]]}
        out = model.predict(pd.DataFrame({"image": [image], **box}))
        pts = out[[f"{a}{i}" for i in range(1, 6) for a in "xy"]].to_numpy()
        assert pts.shape == (1, 10) and np.isfinite(pts).all()
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def store(proj: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{proj / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def network_runs(tags: dict) -> dict[str, str]:
    return {k[len(NETWORK_RUN_TAG):]: v for k, v in tags.items() if k.startswith(NETWORK_RUN_TAG)}


def test_repro_again_has_nothing_to_do(project):
    proj, env, _ = project
    out = run([str(Path(sys.executable).parent / "dvc"), "repro"], proj, env)
    assert "Data and pipelines are up to date." in out


def test_level3_edit_reruns_only_level3_onwards(project):
    proj, env, _ = project
    dvc = str(Path(sys.executable).parent / "dvc")
    before = run([dvc, "status"], proj, env)
    assert "up to date" in before
    original = (proj / "params.yaml").read_text()
    try:
        set_params(proj / "params.yaml", {"level3.crops.shake_sigma": 0.02})
        status = run([dvc, "status"], proj, env)
        assert "crops@3" in status and "level3.crops" in status
        for stage in ("crops@1", "train@2", "predict@2"):
            assert stage not in status
        log = run([dvc, "repro"], proj, env, timeout=900)
        ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}
        assert ran == {"crops@3", "train@3", "predict@3", "evaluate", "register"}, log
    finally:
        (proj / "params.yaml").write_text(original)
    # the new version's lineage reaches all 23 network runs, levels 1 and 2 from the cache
    client = store(proj)
    first, *_, new = sorted(client.search_model_versions("name='facecascade'"),
                            key=lambda mv: int(mv.version))
    runs, old_runs = network_runs(new.tags), network_runs(first.tags)
    assert sorted(runs) == sorted(list_nets())
    for net, run_id in runs.items():
        net_run = client.get_run(run_id)  # exists
        assert net_run.info.status == "FINISHED" and net_run.info.run_name == net
        assert (run_id == old_runs[net]) == (get_spec(net).level < 3), net
    parent = client.get_run(new.tags["pipeline_run_id"])
    assert parent.info.status == "FINISHED"
    assert network_runs(parent.data.tags) == runs  # the parent run links to all 23
    assert {k: v for k, v in parent.data.tags.items() if k.startswith(LEVEL_RUN_TAG)} == \
        {k: v for k, v in new.tags.items() if k.startswith(LEVEL_RUN_TAG)}
    children = client.search_runs([parent.info.experiment_id], filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"))
    assert [r.info.run_name for r in children] == ["level3"]  # only level 3 retrained


def test_no_secret_reaches_logs_files_or_mlflow(project):
    proj, _, log = project
    from mlflow import MlflowClient

    values = [v.encode() for v in SECRETS.values()]
    assert not [v for v in values if v in log.encode()]
    leaks = [str(f.relative_to(proj)) for f in proj.rglob("*")
             if f.is_file() and ".git" not in f.parts
             and any(v in f.read_bytes() for v in values)]
    assert not leaks  # includes mlflow.db, dvc.lock, outputs/, models/, Ray's storage
    client = MlflowClient(tracking_uri=f"sqlite:///{proj / 'mlflow.db'}")
    exp = client.get_experiment_by_name("facecascade")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    texts = [f"{k}={v}" for r in runs for k, v in {**r.data.params, **r.data.tags}.items()]
    texts += [f"{k}={v}" for mv in client.search_model_versions("name='facecascade'")
              for k, v in mv.tags.items()]
    assert len(runs) >= 27 and texts
    assert not [t for t in texts if any(v.decode() in t for v in values)]


def test_a_partial_run_leaves_no_pipeline_run_running(project):
    proj, env, _ = project
    dvc = str(Path(sys.executable).parent / "dvc")
    run([dvc, "exp", "run", "-S", "level1.train.epochs=1", "train@1"], proj, env, timeout=900)
    client = store(proj)
    exp = client.get_experiment_by_name("facecascade")
    pipelines = client.search_runs([exp.experiment_id],
                                   filter_string="tags.`facecascade.kind` = 'pipeline'")
    assert [r.info.status for r in pipelines].count("RUNNING") == 0
    partial = [r for r in pipelines if r.data.tags.get("facecascade.complete") != "true"]
    assert len(partial) == 1, [r.data.tags for r in pipelines]
    assert partial[0].info.status == "FINISHED"
    assert partial[0].data.tags["facecascade.stages"] == "train@1"
