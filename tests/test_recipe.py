"""Recipes: the committed real-data recipe loads, becomes -S arguments, and settings are
written back into a params file keeping its comments."""

from pathlib import Path

import pytest
import yaml

from facecascade.cli import main
from facecascade.config import ConfigError, load_config
from facecascade.recipe import apply_settings, load_recipe, recipe_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_real_recipe_loads_on_top_of_params_yaml():
    recipe = load_recipe(ROOT / "recipes/real.yaml", base=load_config(ROOT / "params.yaml"))
    overrides = dict(s.split("=", 1) for s in recipe_overrides(recipe))
    cfg = load_config(ROOT / "params.yaml",
                      {k: yaml.safe_load(v) for k, v in overrides.items()})
    assert cfg.level1.train.optimizer == recipe["level1"]["train"]["optimizer"]
    assert cfg.level1.train.epochs == recipe["level1"]["train"]["epochs"]


def test_a_recipe_with_an_unknown_or_bad_key_is_refused_naming_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("level1:\n  train:\n    optimiser: adam\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key\(s\) level1\.train\.optimiser"):
        load_recipe(bad)
    bad.write_text("level2:\n  train:\n    lr: -1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: level2\.train\.lr == -1\.0, must be > 0"):
        load_recipe(bad)


def test_recipe_command_prints_dvc_exp_run_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside a project: the built-in defaults are the base
    recipe = tmp_path / "r.yaml"
    recipe.write_text("level1:\n  crops:\n    augment:\n      scales: []\n"
                      "  train: {optimizer: adam, lr: 0.003}\n")
    assert main(["recipe", str(recipe), "data.format=cuhk"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["-S", "level1.crops.augment.scales=[]", "-S", "level1.train.optimizer=adam",
                   "-S", "level1.train.lr=0.003", "-S", "data.format=cuhk"]


def test_apply_settings_changes_only_the_section_and_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    params.write_text(text)
    changed = apply_settings(params, "level2.train", {"lr": 0.0123, "optimizer": "adam",
                                                      "epochs": 10})
    assert changed == ["level2.train.lr", "level2.train.optimizer"]
    new = params.read_text()
    assert "# iterations between decays" in new and "# facecascade parameters" in new
    before, after = load_config(ROOT / "params.yaml"), load_config(params)
    assert after.level2.train.lr == 0.0123 and after.level2.train.optimizer == "adam"
    assert after.level1 == before.level1 and after.level3 == before.level3
    assert after.level2.crops == before.level2.crops
