"""The project cites only what a clone has: docs/METHOD.md, data sets by name, no machine paths."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: paths of the development machine: the shared folder beside the repo, /work, /tmp
MACHINE_PATH = re.compile(r"\.\./shared|(?<![\w.])shared/(?:data|METHOD)|/work/|/tmp/")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", *patterns], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).is_file()]


#: files that are not text (the benchmarks' plots)
BINARY = {".png", ".jpg", ".jpeg"}


def test_code_docs_params_and_bench_cite_no_machine_path():
    files = [f for f in tracked("src", "pipeline", "bench", "docs", "README.md", "params.yaml",
                                "dvc.yaml", "Makefile", "pyproject.toml")
             if f.suffix.lower() not in BINARY]
    hits = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}" for f in files
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
            if MACHINE_PATH.search(line)]
    assert not hits, "\n".join(hits)


def test_the_method_is_the_projects_own():
    method = (ROOT / "docs/METHOD.md").read_text(encoding="utf-8")
    for section in ("## Task", "## Coordinates", "## Level 1", "## Levels 2 and 3", "## Shake",
                    "## Augmentation", "## Training", "## Evaluation", "## Published figures",
                    "## Deviations from the papers"):
        assert section in method, section
    for f in tracked("src", "pipeline", "params.yaml", "README.md", "docs"):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            for m in re.finditer(r"[\w./]*METHOD\.md", line):
                assert m.group(0) in ("docs/METHOD.md", "METHOD.md") and (
                    m.group(0) == "docs/METHOD.md" or f.parent.name == "docs"), \
                    f"{f.relative_to(ROOT)}:{n} cites {m.group(0)}"


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


@pytest.mark.parametrize("path", sorted((ROOT / "bench/results").glob("*.json")),
                         ids=lambda p: p.name)
def test_results_name_data_sets_not_paths(path):
    strings = list(_strings(json.loads(path.read_text(encoding="utf-8"))))
    absolute = [s for s in strings if s.startswith(("/", "~")) or re.match(r"[A-Za-z]:\\", s)]
    assert not absolute, absolute


def test_bench_data_comes_from_the_option_or_the_environment(monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import argparse

        from benchdata import DATA_ENV, add_data_argument
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert DATA_ENV in (ROOT / "README.md").read_text()
    monkeypatch.delenv(DATA_ENV, raising=False)
    ap = argparse.ArgumentParser()
    add_data_argument(ap)
    with pytest.raises(SystemExit):
        ap.parse_args([])
    monkeypatch.setenv(DATA_ENV, "/data/mtfl-train")
    ap = argparse.ArgumentParser()
    add_data_argument(ap)
    assert ap.parse_args([]).data == "/data/mtfl-train"
    assert ap.parse_args(["--data", "elsewhere"]).data == "elsewhere"
