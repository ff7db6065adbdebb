"""The benchmark scripts' docstring examples run (pytest collects tests/ and src/ only)."""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
#: the scripts with examples (the others need the bench extras or have none)
WITH_EXAMPLES = ["benchdata", "level_overhead", "tune_ranking"]


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_bench_examples_run(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(name)
    try:
        result = doctest.testmod(module)
    finally:
        sys.modules.pop(name, None)
    assert result.attempted > 0 and result.failed == 0


def test_every_bench_script_with_examples_is_listed():
    have = sorted(p.stem for p in BENCH.glob("*.py") if ">>>" in p.read_text(encoding="utf-8"))
    assert have == sorted(WITH_EXAMPLES)
