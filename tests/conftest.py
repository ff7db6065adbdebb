"""Fixtures shared by the test modules: the real data set, and one MLflow store per module."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from facecascade.config import Config

#: the MTFL training set of the development machines; tests that use it are marked `realdata`
MTFL = Path(__file__).resolve().parents[2] / "shared/data/mtfl-train"


@pytest.fixture
def mtfl() -> Path:
    """The MTFL training set folder; the test is skipped when it is absent."""
    if not MTFL.is_dir():
        pytest.skip(f"MTFL data not found at {MTFL}")
    return MTFL


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """An untrained 3-level cascade artifact directory, shared read-only (copy it to edit)."""
    import torch

    from facecascade.cascade import Cascade, save_cascade

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("model") / "cascade"
    save_cascade(Cascade.untrained(Config(), levels=3, seed=0), path)
    return path


def with_store(cfg: Config, db: Path, **serve) -> Config:
    """``cfg`` with the SQLite store ``db`` and the given ``serve`` limits."""
    return dataclasses.replace(
        cfg, mlflow=dataclasses.replace(cfg.mlflow, tracking_uri=f"sqlite:///{db}"),
        serve=dataclasses.replace(cfg.serve, **serve))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds); tests use own keys/names.

    Yields ``(cfg, client, experiment_id)``.
    """
    from facecascade import tracking

    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: start empty, restore afterwards
        mp.setenv("MLFLOW_TRACKING_URI", "")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)  # nothing may land in the repository
        cfg = with_store(Config(), root / "mlflow.db")
        client = tracking.configure(cfg, project_dir=root)
        yield cfg, client, tracking.experiment_id(client, cfg.mlflow.experiment)
        assert not (Path.cwd() / "mlruns").exists()
