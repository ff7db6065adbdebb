"""Atomic writes: an interrupted write leaves the old file (or nothing), never half a file."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from facecascade.io import KILL_HOOK_ENV, atomic_path, remove_stale_temps, write_json_atomic


def test_atomic_file_replaces_on_success(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic({"a": 1}, target)
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_directory(tmp_path):
    target = tmp_path / "dir"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "b").write_text("2")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_stale_temps_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "crops"
    (tmp_path / ".crops.abc123.tmp").mkdir()
    (tmp_path / ".crops.abc123.tmp" / "F1.train.parquet").write_text("half")
    (tmp_path / ".other.x.tmp").write_text("not ours")
    with atomic_path(target, directory=True) as tmp:
        (tmp / "ok").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.x.tmp", "crops"]


def test_a_writer_killed_between_the_two_renames_loses_nothing(tmp_path):
    # a real SIGKILL after "old -> .old" and before "new -> place" (the io test hook)
    target = tmp_path / "crops"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "F1.parquet").write_text("old")
    script = ("import sys; from pathlib import Path; from facecascade.io import atomic_path\n"
              "with atomic_path(sys.argv[1], directory=True) as tmp:\n"
              "    (Path(tmp) / 'F1.parquet').write_text('new')\n")
    env = {**os.environ, KILL_HOOK_ENV: "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(target)], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and (tmp_path / ".crops.old" / "F1.parquet").read_text() == "old"
    # the next writer fails: the old output is back in place, not deleted
    with pytest.raises(RuntimeError):
        with atomic_path(target, directory=True) as tmp:
            raise RuntimeError("this writer fails too")
    assert (target / "F1.parquet").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops"]
    # killed after the swap completed (both present): the stale .old goes, the new output stays
    shutil.copytree(target, tmp_path / ".crops.old")
    (target / "F1.parquet").write_text("new")
    assert remove_stale_temps(target) == [tmp_path / ".crops.old"]
    assert (target / "F1.parquet").read_text() == "new"
