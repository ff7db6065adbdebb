"""A real Ray head on loopback (`ray start --head`), a level submitted to it as a Ray job.

The train stage entry point runs unchanged under `ray job submit --working-dir . -- python -m
pipeline.train_level ...`; RAY_ADDRESS makes it attach to the cluster instead of starting
its own. The test checks the job succeeded and the level's 10 networks were trained.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from facecascade.config import load_config
from facecascade.formats import assign_split, ingest
from facecascade.synth import write_synthetic_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_level_runs_as_a_ray_job_on_a_loopback_head(tmp_path):
    from facecascade.crops import write_level_crops
    from facecascade.geometry import box_center

    # tiny level-2 crop tables cut around noisy "level-1" points
    data = tmp_path / "raw"
    list_path = write_synthetic_dataset(data, n=80, size=96, seed=5)
    faces, _, _ = ingest("cuhk", root=data, list_path=list_path, max_image_pixels=10**7)
    faces = assign_split(faces, val_fraction=0.2, seed=0)
    from facecascade.formats import faces_to_arrays

    gt, boxes = faces_to_arrays(faces)
    prev = gt + np.random.default_rng(0).normal(0, 2.0, gt.shape)
    assert np.isfinite(box_center(boxes)).all()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(data)
    params["level2"]["train"]["epochs"] = 2
    params["level2"]["crops"]["shakes"] = 1
    params["resources"]["cpus_per_net"] = 0.5
    params["resources"]["storage_path"] = str(tmp_path / "ray_results")
    params["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "job"
    shutil.copytree(ROOT / "pipeline", work / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    crops = tmp_path / "crops2"
    write_level_crops(2, faces, data, crops, load_config(work / "params.yaml"), prev_points=prev)
    out = tmp_path / "models2"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # Ray 2.60 authenticates cluster access with a token: a fresh one for this cluster,
    # shared by `ray start` and `ray job submit` through the environment (never a file)
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    port, dash = free_port(), free_port()
    head = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--include-dashboard", "true",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    assert head.returncode == 0, head.stdout + head.stderr
    try:
        runtime_env = {"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "true"}}
        job = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
             "--working-dir", str(work), "--runtime-env-json", json.dumps(runtime_env), "--",
             "python", "-m", "pipeline.train_level", "params.yaml", "2", str(crops), str(out)],
            env=env, capture_output=True, text=True, timeout=900)
        log = job.stdout + job.stderr
        assert job.returncode == 0, log[-5000:]
        # the stage attached to the cluster (RAY_ADDRESS set by the job) rather than
        # starting a Ray of its own
        assert "(local, Train" not in log, log[-3000:]
        assert "succeeded" in log.lower(), log[-3000:]
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True,
                       timeout=120)
    nets = sorted(p.stem for p in out.glob("*.pt"))
    assert len(nets) == 10 and "LE21" in nets and "RM22" in nets
    for name in nets:
        state = torch.load(out / f"{name}.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in state.values())
    level = json.loads((out / "level.json").read_text())
    assert set(level["jobs"]) == set(nets)
