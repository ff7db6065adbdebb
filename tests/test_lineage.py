"""Lineage: git commit, data.dvc hash, params hash and the pipeline key (no MLflow)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest

from facecascade import lineage as ln
from facecascade.config import Config


def test_params_hash_and_pipeline_key_are_stable():
    cfg = Config()
    assert ln.params_hash(cfg) == ln.params_hash(Config())
    changed = dataclasses.replace(cfg, serve=dataclasses.replace(cfg.serve, max_image_bytes=7))
    assert ln.params_hash(changed) != ln.params_hash(cfg)
    k = ln.pipeline_key(git_commit="a", params_hash="b", data_md5="c")
    assert k == ln.pipeline_key(git_commit="a", params_hash="b", data_md5="c")
    assert k != ln.pipeline_key(git_commit="a-dirty", params_hash="b", data_md5="c")


def test_dvc_file_md5(tmp_path):
    f = tmp_path / "data.dvc"
    f.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 10\n"
                 "  nfiles: 2\n  hash: md5\n  path: raw\n")
    assert ln.dvc_file_md5(f) == "0123456789abcdef0123456789abcdef.dir"
    with pytest.raises(FileNotFoundError):
        ln.dvc_file_md5(tmp_path / "missing.dvc")
    (tmp_path / "empty.dvc").write_text("outs: []\n")
    with pytest.raises(ValueError, match="no output"):
        ln.dvc_file_md5(tmp_path / "empty.dvc")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_dirty_ignores_dvc_lock(tmp_path):
    assert ln.git_commit(tmp_path) == "unknown"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    clean = ln.git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (tmp_path / "untracked.txt").write_text("u")
    assert ln.git_commit(tmp_path) == clean
    (tmp_path / "a.py").write_text("x = 2\n")
    assert ln.git_commit(tmp_path) == f"{clean}-dirty"




def test_training_runs_name_every_level_and_network(tmp_path):
    dirs = []
    for level, nets in ((1, ["F1", "EN1", "NM1"]), (2, ["LE21", "LE22"])):
        d = tmp_path / f"level{level}"
        d.mkdir()
        (d / ln.LEVEL_FILE).write_text(json.dumps({
            "level": level, "level_run_id": f"L{level}", "parent_run_id": "P",
            "network_runs": {n: f"run-{n}" for n in nets}}))
        dirs.append(d)
    assert ln.training_runs(dirs) == {
        "facecascade.level_run.1": "L1", "facecascade.level_run.2": "L2",
        **{f"facecascade.network_run.{n}": f"run-{n}"
           for n in ("F1", "EN1", "NM1", "LE21", "LE22")}}
    # a level trained by an older version records no network runs: named, with the fix
    (dirs[1] / ln.LEVEL_FILE).write_text(json.dumps({"level_run_id": "L2"}))
    with pytest.raises(ValueError, match=r"level2/level.json: no record .*\(dvc repro -f"):
        ln.training_runs(dirs)
