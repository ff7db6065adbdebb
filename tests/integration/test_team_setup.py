"""The team setup, for real: an `mlflow server` for runs and models, a DVC remote for data.

One pipeline run (the tiny project of test_pipeline.py) logs to a real `mlflow server`
on loopback (SQLite backend, its own artifact store behind `--artifacts-destination`,
artifacts proxied over HTTP). Then:

- `models:/facecascade@champion` is loaded over HTTP and predicts 5 points, and the
  model's files live in the server's artifact store, not in the project;
- the project pushes its data and outputs to a local-directory DVC remote; a fresh git
  clone pulls them and `dvc repro` there reports that everything is up to date.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pipeline import make_project, run  # noqa: E402

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1: SQLite backend, proxied artifact store."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true",
                "PATH": f"{BIN}{os.pathsep}{env['PATH']}"})
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600  # a liveness guard only: the machine may be loaded
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "mlflow server did not answer /health"
            time.sleep(1)
        yield url, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def project(server, tmp_path_factory):
    url, _ = server
    return make_project(tmp_path_factory.mktemp("team") / "proj",
                        extra_env={"MLFLOW_TRACKING_URI": url})


def test_champion_is_served_by_the_tracking_server(project, server):
    proj, env, log = project
    url, root = server
    assert "Running stage 'register'" in log
    assert not (proj / "mlflow.db").exists() and not (proj / "mlruns").exists()
    import mlflow

    # both URIs: an earlier test in this process may have left a registry URI set
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
        version = client.get_model_version_by_alias("facecascade", "champion")
        assert version.tags.get("params_hash")
        model = mlflow.pyfunc.load_model("models:/facecascade@champion")
        faces = pd.read_csv(proj / "data/raw/faces.txt", sep=" ", header=None)
        row = faces.iloc[0]
        out = model.predict(pd.DataFrame({
            "image": [str(proj / "data/raw" / row[0])], "box_left": [row[1]],
            "box_top": [row[3]], "box_right": [row[2]], "box_bottom": [row[4]]}))
        pts = out[[f"{a}{i}" for i in range(1, 6) for a in "xy"]].to_numpy()
        assert pts.shape == (1, 10) and np.isfinite(pts).all()
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    # the model's files went through the server into its artifact store
    assert list((root / "artifacts").rglob("manifest.json"))
    assert list((root / "artifacts").rglob("weights.pt"))


def test_dvc_remote_push_then_fresh_clone_pull_is_up_to_date(project, tmp_path):
    proj, env, _ = project
    dvc = str(BIN / "dvc")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    remote = tmp_path / "dvc-remote"
    run([dvc, "remote", "add", "-d", "store", str(remote)], proj, env)
    run([dvc, "push"], proj, env, timeout=600)
    assert any(remote.rglob("*")), "nothing pushed"
    run(git + ["add", "-A"], proj, env)
    run(git + ["commit", "-qm", "pipeline outputs (dvc.lock) and the remote"], proj, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(proj), str(clone)], tmp_path, env)
    assert not (clone / "models/cascade").exists()
    run([dvc, "pull"], clone, env, timeout=600)
    assert (clone / "models/cascade/weights.pt").is_file()
    assert (clone / "data/raw/faces.txt").is_file()
    out = run([dvc, "repro"], clone, env)
    assert "Data and pipelines are up to date." in out, out
