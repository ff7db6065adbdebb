"""Search settings, results and plots of :mod:`facecascade.tuning` (no Ray: see
tests/integration/test_tuning.py for a real search)."""

from __future__ import annotations

import pytest

from facecascade.config import Config, ConfigError, config_from_dict
from facecascade.report import plot_search_curves
from facecascade.tuning import SearchResult, TrialResult, space_description, tune_net


def test_search_params_are_validated():
    cfg = config_from_dict({"tune": {"net": "N21", "lr": [0.001, 0.01], "batch_size": [16]}})
    assert cfg.tune.net == "N21" and cfg.tune.lr == (0.001, 0.01)
    for bad, key in (({"lr": [0.1, 0.01]}, "tune.lr"), ({"lr": [0, 0.1]}, "tune.lr"),
                     ({"batch_size": []}, "tune.batch_size"), ({"dropout": [1.0]}, "tune.dropout"),
                     ({"grace_period": 20, "max_epochs": 5}, "tune.grace_period"),
                     ({"reduction_factor": 1}, "tune.reduction_factor"),
                     ({"momentum": [0.5, 1.0]}, "tune.momentum"),
                     ({"weight_decay": [-1e-4]}, "tune.weight_decay"),
                     ({"weight_decay": []}, "tune.weight_decay"),
                     ({"loss": ["l2"]}, "tune.loss"), ({"loss": []}, "tune.loss")):
        with pytest.raises(ConfigError, match=key):
            config_from_dict({"tune": bad})


def test_unknown_net_and_missing_tables_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown network 'LE2'"):
        tune_net(Config(), tmp_path, storage_path=tmp_path, net="LE2")
    with pytest.raises(FileNotFoundError, match="LE21.train.parquet"):
        tune_net(Config(), tmp_path, storage_path=tmp_path, net="LE21")


def _trial(tid, nmes, status="finished", **config):
    cfg = {"optimizer": "sgd", "lr": 0.01, "lr_schedule": "step", "momentum": 0.9,
           "batch_size": 64, "dropout": 0.0, "weight_decay": 5e-4, "loss": "euclidean",
           **config}
    hist = [{"epoch": i + 1, "train_loss": 0.1, "val_nme": v, "lr": cfg["lr"]}
            for i, v in enumerate(nmes)]
    return TrialResult(tid, cfg, status, hist)


def test_best_trial_and_suggested_params():
    trials = [_trial("a", [0.3, 0.2, 0.15]), _trial("b", [0.25], "stopped", lr=0.1),
              _trial("c", [0.2, 0.12, 0.13], lr=0.003, batch_size=32, optimizer="adam",
                     weight_decay=0.0, loss="distance"),
              TrialResult("d", {"lr": 0.02, "momentum": 0.9, "batch_size": 64, "dropout": 0.0},
                          "failed", [], "RuntimeError: boom")]
    cfg = Config()
    result = SearchResult("LE21", 2, space_description(cfg.tune), trials, 12.0)
    assert result.best.trial_id == "c" and result.best.best_val_nme == 0.12
    doc = result.to_dict(cfg)
    suggested = doc["suggested_level2_train"]
    assert suggested["lr"] == 0.003 and suggested["batch_size"] == 32
    assert suggested["optimizer"] == "adam" and suggested["lr_schedule"] == "step"
    assert suggested["weight_decay"] == 0.0  # searched: the trial's, not the level's 5e-4
    assert suggested["loss"] == "distance"
    assert SearchResult.from_dict(doc).best.config == result.best.config
    assert suggested["epochs"] == cfg.level2.train.epochs  # not searched: from the level
    lines = result.table().splitlines()
    assert lines[1].startswith("c ") and "12.00" in lines[1]
    assert lines[-1].startswith("d ") and "failed (RuntimeError: boom)" in lines[-1]
    assert doc["trials"][3]["best_val_nme"] is None  # valid JSON, no Infinity


def test_no_trial_reported_is_an_error():
    result = SearchResult("F1", 1, {}, [TrialResult("a", {}, "failed", [], "x")], 1.0)
    with pytest.raises(RuntimeError, match="no trial reported"):
        _ = result.best
    assert result.to_dict()["best"] is None


def test_search_curves_plot(tmp_path):
    path = plot_search_curves({"a": [0.3, 0.2], "b": [0.25], "c": [0.2, 0.1, 0.09]},
                              tmp_path / "c.png", best="c")
    assert path.stat().st_size > 5000
    with pytest.raises(ValueError, match="empty"):
        plot_search_curves({}, tmp_path / "d.png")


def test_search_key_follows_only_what_the_search_trains(tmp_path):
    """A patch net's search does not depend on level 1's local_share (patch nets are always
    plain), so toggling it must not throw away a finished LE21 search; F1's must change."""
    from facecascade.tuning import search_key

    plain = Config()
    shared = config_from_dict({"level1": {"model": {"local_share": True}}})
    assert search_key(plain, "LE21", tmp_path) == search_key(shared, "LE21", tmp_path)
    assert search_key(plain, "F1", tmp_path) != search_key(shared, "F1", tmp_path)
    other = config_from_dict({"level2": {"train": {"epochs": 3}}})
    assert search_key(plain, "LE21", tmp_path) != search_key(other, "LE21", tmp_path)
