"""A stage killed in the middle leaves no partial outputs, and rerunning it completes.

Runs the real crops stage (pipeline/crops.py) as a process on procedural faces, kills it
with SIGKILL while it writes, then checks the output directory does not exist (only a
hidden temp directory may remain, which the next run removes) and that a rerun finishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from facecascade.formats import assign_split, ingest
from facecascade.synth import write_synthetic_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_killed_crops_stage_leaves_nothing_and_rerun_completes(tmp_path):
    data = tmp_path / "raw"
    list_path = write_synthetic_dataset(data, n=400, size=96, seed=3)
    faces, _, _ = ingest("cuhk", root=data, list_path=list_path, max_image_pixels=10**7)
    faces = assign_split(faces, val_fraction=0.1, seed=0)
    faces.to_parquet(tmp_path / "faces.parquet")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(data)
    params["level1"]["crops"]["augment"]["copies"] = 6  # make the stage take a few seconds
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "crops" / "level1"
    cmd = [sys.executable, str(ROOT / "pipeline/crops.py"), str(tmp_path / "params.yaml"), "1",
           str(tmp_path / "faces.parquet"), str(tmp_path / "faces.parquet"), str(out)]

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # wait until the stage has started writing its tables into its temp directory
    while time.monotonic() < deadline:
        temps = list(out.parent.glob(".level1.*.tmp"))
        if temps and any(p.stat().st_size > 0 for p in temps[0].glob("*.parquet")):
            break
        assert proc.poll() is None, "stage finished before it could be interrupted"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed stage must not leave its output in place"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["level1"]  # temp removed
    f1 = pd.read_parquet(out / "F1.train.parquet", columns=["face_id"])
    assert len(f1) == (faces["split"] == "train").sum() * (1 + 1 + 2 + 2 + 2 + 4 + 6)
