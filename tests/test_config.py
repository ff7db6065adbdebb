"""Config: params.yaml loads into the typed object; bad keys and values are named."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from facecascade.config import Config, ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def _leaves(obj, prefix=""):
    """``{dotted key: value}`` of every field of a config dataclass, nested ones walked."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            out.update(_leaves(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    return {prefix[:-1]: obj}


def _yaml_leaves(node, prefix=""):
    if isinstance(node, dict) and not prefix.endswith("fusion."):
        out = {}
        for k, v in node.items():
            out.update(_yaml_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def test_dataclass_defaults_are_the_params_file_key_by_key():
    # one set of defaults: Config() (the CLI outside a project) == params.yaml, every key
    defaults = _leaves(Config())
    project = _leaves(load_config(ROOT / "params.yaml"))
    assert set(defaults) == set(project)
    differ = {k: (defaults[k], project[k]) for k in defaults if defaults[k] != project[k]}
    assert not differ, f"dataclass default != params.yaml: {differ}"
    # and params.yaml spells out every one of them (nothing silently left to a default)
    raw = _yaml_leaves(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert set(raw) == set(defaults), set(raw) ^ set(defaults)


def test_the_cli_outside_a_project_uses_the_project_defaults(tmp_path, monkeypatch):
    from facecascade import cli

    monkeypatch.chdir(tmp_path)  # no params.yaml here
    args = cli.build_parser().parse_args(["count-params"])
    assert cli._cfg(args) == load_config(ROOT / "params.yaml")


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


def test_a_level_cannot_keep_all_of_the_previous_points():
    with pytest.raises(ConfigError, match=r"level3\.model\.keep == 1\.0, must be in \[0, 1\)"):
        config_from_dict({"level3": {"model": {"keep": 1.0}}})
    assert config_from_dict({"level2": {"model": {"keep": 0.1}}}).level2.model.keep == 0.1


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
    with pytest.raises(ConfigError, match=r"frame\.patches == 'landmarks', must be one of"):
        config_from_dict({"frame": {"patches": "landmarks"}})
    with pytest.raises(ConfigError, match=r"level2\.train\.loss == 'l2', must be one of"):
        config_from_dict({"level2": {"train": {"loss": "l2"}}})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")


def test_level_accessor():
    cfg = Config()
    assert cfg.level(1) is cfg.level1
    with pytest.raises(ValueError):
        cfg.level(4)


def test_a_partial_section_keeps_its_own_defaults():
    """level2.train without epochs keeps level 2's epochs, not TrainConfig's (level 1's)."""
    from facecascade.config import Config, config_from_dict

    cfg = config_from_dict({"level2": {"train": {"batch_size": 32}},
                            "level3": {"crops": {"shakes": 2}}})
    assert cfg.level2.train.batch_size == 32
    assert cfg.level2.train.epochs == Config().level2.train.epochs
    assert cfg.level3.crops.windows == Config().level3.crops.windows
    assert cfg.level3.crops.shakes == 2


def test_unknown_widths_are_rejected_with_the_dotted_key():
    with pytest.raises(ConfigError, match=r"level2\.model\.widths == 'wide'"):
        config_from_dict({"level2": {"model": {"widths": "wide"}}})


def test_a_level_can_have_its_own_cpus_per_net():
    cfg = config_from_dict({"resources": {"cpus_per_net": 1.0, "seed": 3},
                            "level1": {"resources": {"cpus_per_net": 0.5}}})
    assert cfg.level_resources(1).cpus_per_net == 0.5
    assert cfg.level_resources(1).seed == 3  # the rest is resources'
    assert cfg.level_resources(2) == cfg.resources
    with pytest.raises(ConfigError, match=r"level3\.resources\.cpus_per_net == -1"):
        config_from_dict({"level3": {"resources": {"cpus_per_net": -1}}})


def test_the_poll_interval_must_be_positive():
    with pytest.raises(ConfigError, match=r"resources\.poll_seconds == 0"):
        config_from_dict({"resources": {"poll_seconds": 0}})
