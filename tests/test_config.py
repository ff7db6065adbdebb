"""Config: params.yaml loads into the typed object; bad keys and values are named."""

from pathlib import Path

import pytest
import yaml

from facecascade.config import Config, ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_load_and_round_trip():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.level2.crops.windows == (0.16, 0.18)
    assert cfg.level3.crops.windows == (0.08, 0.09)
    assert cfg.level1.train.lr == 0.005 and cfg.level1.train.lr_step == 100
    assert config_from_dict(cfg.to_dict()) == cfg


def test_every_params_key_is_known():
    # the YAML file holds every field of the config (one place for each number)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == set(Config.__dataclass_fields__)
    assert config_from_dict(raw).to_dict() == load_config(ROOT / "params.yaml").to_dict()


def test_out_of_range_value_names_the_dotted_key(tmp_path):
    with pytest.raises(ConfigError, match=r"level2\.crops\.shake_sigma == -0\.01, must be >= 0"):
        load_config(ROOT / "params.yaml", overrides={"level2.crops.shake_sigma": -0.01})


def test_unknown_key_is_rejected(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("level3:\n  crops:\n    shake_sgima: 0.01\n")
    with pytest.raises(ConfigError, match=r"level3\.crops\.shake_sgima"):
        load_config(p)


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match=r"level1\.train\.epochs must be an integer"):
        config_from_dict({"level1": {"train": {"epochs": "ten"}}})
    with pytest.raises(ConfigError, match=r"data\.format"):
        config_from_dict({"data": {"format": "coco"}})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")


def test_level_accessor():
    cfg = Config()
    assert cfg.level(1) is cfg.level1
    with pytest.raises(ValueError):
        cfg.level(4)
