"""``mlflow models serve`` of the registered champion, over real HTTP.

An untrained cascade is logged, registered and made ``champion`` in a temporary
SQLite store; ``mlflow models serve -m models:/NAME@champion --env-manager local``
runs as a subprocess on a free loopback port (its own process group, always
terminated). Requests use MLflow's ``dataframe_split`` JSON. Takes about 20-30 s on
the 2-core development machine, most of it the server's start.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecascade import lineage, registry
from facecascade import tracking as tr
from facecascade.cascade import Cascade, save_cascade
from facecascade.config import Config
from facecascade.inference import BOX_EDGE_COLUMNS

pytestmark = pytest.mark.integration

NAME = "facecascade-serve-test"
MAX_BYTES = 50_000
START_TIMEOUT = 60.0
COLUMNS = ["image", *BOX_EDGE_COLUMNS]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: dict, *, timeout: float = 30.0) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def png_b64(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(data.tobytes()).decode("ascii")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """URL of a running scoring server of ``models:/NAME@champion``."""
    root = tmp_path_factory.mktemp("serve")
    t0 = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", "")  # configure() exports the store's URI
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)
        cfg = Config()
        cfg = dataclasses.replace(
            cfg, mlflow=dataclasses.replace(cfg.mlflow, tracking_uri=f"sqlite:///{root}/m.db"),
            serve=dataclasses.replace(cfg.serve, max_image_bytes=MAX_BYTES))
        client = tr.configure(cfg, project_dir=root)
        exp = tr.experiment_id(client, cfg.mlflow.experiment)
        cascade_dir = save_cascade(Cascade.untrained(cfg, levels=3, seed=0), root / "cascade")
        parent = tr.parent_run(client, exp, "serve1")
        uri = registry.log_cascade_model(client, parent, cascade_dir, cfg)
        tr.finish_run(client, parent)
        version = registry.register_cascade(uri, name=NAME, val_nme=0.1, lineage={
            "git_commit": "unknown", "data_dvc_md5": "0", "params_hash": lineage.params_hash(cfg),
            "pipeline_key": "serve1"})
        assert registry.promote_if_better(client, NAME, version, 0.1)
        tracking = tr.tracking_uri(cfg, project_dir=root)

    bindir = Path(sys.executable).parent  # the server execs `uvicorn` by name
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": tracking, "MLFLOW_DISABLE_TELEMETRY": "true"}
    port = free_port()
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(bindir / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion",
         "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n"
                            f"{(root / 'serve.log').read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"server not up after {START_TIMEOUT} s:\n"
                            f"{(root / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        print(f"\nserve fixture: model logged + server up in {time.monotonic() - t0:.1f} s")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group holds bash -> uvicorn
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


def test_good_request_returns_five_points(server):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    box = [20.0, 18.0, 76.0, 80.0]
    payload = {"dataframe_split": {"columns": COLUMNS, "data": [[png_b64(image), *box]]}}
    status, body = post(f"{server}/invocations", payload)
    assert status == 200, body
    preds = json.loads(body)["predictions"]
    assert len(preds) == 1 and preds[0]["row"] == 0 and preds[0]["face"] == 0
    pts = np.array([[preds[0][f"x{i}"], preds[0][f"y{i}"]] for i in range(1, 6)])
    assert pts.shape == (5, 2) and np.isfinite(pts).all()
    assert (pts[:, 0] > box[0] - 56).all() and (pts[:, 0] < box[2] + 56).all()
    assert (pts[:, 1] > box[1] - 62).all() and (pts[:, 1] < box[3] + 62).all()


def test_null_box_means_detect(server):
    image = np.full((64, 64), 128, np.uint8)  # no face: an empty answer, not an error
    payload = {"dataframe_split": {"columns": COLUMNS,
                                   "data": [[png_b64(image), None, None, None, None]]}}
    status, body = post(f"{server}/invocations", payload)
    assert status == 200, body
    assert json.loads(body)["predictions"] == []


def test_garbage_base64_is_400_with_reason(server):
    payload = {"dataframe_split": {"columns": ["image"], "data": [["%%% not base64 %%%"]]}}
    status, body = post(f"{server}/invocations", payload)
    assert status == 400, body
    err = json.loads(body)
    assert err["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "row 0" in err["message"] and "valid base64" in err["message"]


def test_undecodable_image_is_400_with_reason(server):
    junk = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()
    payload = {"dataframe_split": {"columns": ["image"], "data": [[junk]]}}
    status, body = post(f"{server}/invocations", payload)
    assert status == 400, body
    assert "image unreadable" in json.loads(body)["message"]


def test_oversize_image_is_400_before_decoding(server):
    big = base64.b64encode(bytes(2 * MAX_BYTES)).decode()
    payload = {"dataframe_split": {"columns": ["image"], "data": [[big]]}}
    status, body = post(f"{server}/invocations", payload)
    assert status == 400, body
    assert "serve.max_image_bytes" in json.loads(body)["message"]
