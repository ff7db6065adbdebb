"""Atomic writes: an interrupted write leaves the old file (or nothing), never half a file."""

import pytest

from facecascade.io import atomic_path, write_json_atomic


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
