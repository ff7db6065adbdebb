"""Typed, frozen view of ``params.yaml``.

Every number of the method is a field here; its default is the value ``params.yaml``
sets (``tests/test_config.py`` compares the two key by key), so the CLI outside a
project, with no params file, behaves as inside one. Edit both together. :func:`load_config` rejects
unknown keys and out-of-range values with the dotted key in the message, e.g.
``level2.shake_sigma == -0.01, must be >= 0``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .io import plain
from .specs import WIDTHS

#: annotation list formats (their readers are in facecascade.formats)
FORMATS = ("cuhk", "mtfl", "pts")
#: values of data.format: a list format, or the procedural set (written as a CUHK list)
DATA_FORMATS = ("synthetic", *FORMATS)
#: values of levelN.model.widths: the names of the nets' conv channel plans
NET_WIDTHS = tuple(WIDTHS)


class ConfigError(ValueError):
    """A params file has an unknown key, a wrong type or a value out of range."""


def _check(cond: bool, key: str, value: Any, rule: str) -> None:
    if not cond:
        raise ConfigError(f"{key} == {value!r}, must be {rule}")


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = 0.1
    seed: int = 0

    def validate(self, key: str) -> None:
        _check(0.0 < self.val_fraction < 1.0, f"{key}.val_fraction", self.val_fraction,
               "in (0, 1)")


@dataclass(frozen=True)
class DataConfig:
    format: str = "synthetic"
    root: str = "data/raw"
    list: str = "data/raw/faces.txt"
    boxes: str = ""
    strict: bool = False
    max_image_pixels: int = 40_000_000
    split: SplitConfig = field(default_factory=SplitConfig)

    def validate(self, key: str) -> None:
        _check(self.format in DATA_FORMATS, f"{key}.format", self.format,
               f"one of {DATA_FORMATS}")
        _check(self.max_image_pixels > 0, f"{key}.max_image_pixels", self.max_image_pixels, "> 0")


@dataclass(frozen=True)
class SynthConfig:
    n_faces: int = 1200
    image_size: int = 128
    seed: int = 7

    def validate(self, key: str) -> None:
        _check(self.n_faces >= 10, f"{key}.n_faces", self.n_faces, ">= 10")
        _check(self.image_size >= 48, f"{key}.image_size", self.image_size, ">= 48")


PATCH_FRAMES = ("box", "points")


@dataclass(frozen=True)
class FrameConfig:
    """The face frame, and what sizes the windows of levels 2 and 3.

    ``patches: box`` (the papers): level-2/3 windows and shake are fractions of the
    detector box's frame. ``patches: points``: of a frame of side ``points_scale *
    frame.landmark_size(previous level's points)``, so they no longer depend on the
    detector's box style or scale (:func:`facecascade.frame.points_frame`).
    """

    scale: float = 1.0
    patches: str = "box"
    points_scale: float = 2.5

    def validate(self, key: str) -> None:
        _check(self.scale > 0, f"{key}.scale", self.scale, "> 0")
        _check(self.patches in PATCH_FRAMES, f"{key}.patches", self.patches,
               f"one of {PATCH_FRAMES}")
        _check(self.points_scale > 0, f"{key}.points_scale", self.points_scale, "> 0")


OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cosine")
LOSSES = ("euclidean", "distance", "l1")


@dataclass(frozen=True)
class TrainConfig:
    """One network's training: optimiser, learning-rate schedule, regularisation, stopping.

    ``optimizer`` is ``sgd`` (with ``momentum``, the papers') or ``adam`` (``momentum``
    is then Adam's beta1). ``lr_schedule`` is ``step`` (``lr * lr_decay ** (iteration //
    lr_step)``, the papers') or ``cosine`` (from ``lr`` down to 0 over ``epochs``, set
    every iteration; ``lr_decay`` and ``lr_step`` are unused). ``weight_decay`` is the L2
    term of eq. 6 (coupled, as in Caffe, for both optimisers). ``loss`` is ``euclidean``
    (eq. 6's data term, half the squared error, the papers'), ``distance`` (the
    summed point-to-point distance, what NME measures) or ``l1`` (the summed absolute
    coordinate errors); see ``train.LOSSES``.
    """

    epochs: int = 6
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 5e-3
    lr_schedule: str = "step"
    lr_decay: float = 0.9
    lr_step: int = 100
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float = 0.25
    patience: int = 6
    loss: str = "euclidean"

    def validate(self, key: str) -> None:
        _check(self.loss in LOSSES, f"{key}.loss", self.loss, f"one of {LOSSES}")
        _check(self.optimizer in OPTIMIZERS, f"{key}.optimizer", self.optimizer,
               f"one of {OPTIMIZERS}")
        _check(self.lr_schedule in LR_SCHEDULES, f"{key}.lr_schedule", self.lr_schedule,
               f"one of {LR_SCHEDULES}")
        _check(self.epochs >= 1, f"{key}.epochs", self.epochs, ">= 1")
        _check(self.batch_size >= 1, f"{key}.batch_size", self.batch_size, ">= 1")
        _check(self.lr > 0, f"{key}.lr", self.lr, "> 0")
        _check(0 < self.lr_decay <= 1, f"{key}.lr_decay", self.lr_decay, "in (0, 1]")
        _check(self.lr_step >= 1, f"{key}.lr_step", self.lr_step, ">= 1")
        _check(0 <= self.momentum < 1, f"{key}.momentum", self.momentum, "in [0, 1)")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", self.weight_decay, ">= 0")
        _check(0 <= self.dropout < 1, f"{key}.dropout", self.dropout, "in [0, 1)")
        _check(self.patience >= 1, f"{key}.patience", self.patience, ">= 1")


@dataclass(frozen=True)
class BoxStyleConfig:
    """A box convention (see :class:`facecascade.frame.BoxStyle`): height/width, eye line
    depth as a fraction of the height, inter-ocular distance as a fraction of the width."""

    aspect: float = 1.0
    eye_y: float = 0.25
    iod: float = 0.47

    def validate(self, key: str) -> None:
        _check(0.5 <= self.aspect <= 2.0, f"{key}.aspect", self.aspect, "in [0.5, 2]")
        _check(0.0 < self.eye_y < 1.0, f"{key}.eye_y", self.eye_y, "in (0, 1)")
        _check(0.1 <= self.iod <= 1.0, f"{key}.iod", self.iod, "in [0.1, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    copies: int = 1
    mirror: bool = True
    rotations: tuple[float, ...] = (-15.0, 12.0)
    small_rotations: tuple[float, ...] = (-5.0, 5.0)
    scales: tuple[float, ...] = (0.9, 1.1)
    translations: tuple[float, ...] = (0.05, 0.05)
    jitter_scale: float = 0.08
    jitter_aspect: float = 0.08
    jitter_shift: float = 0.05
    jitter_rotation: float = 5.0
    square_fraction: float = 0.0
    square_style: BoxStyleConfig = field(default_factory=BoxStyleConfig)

    def validate(self, key: str) -> None:
        _check(self.copies >= 0, f"{key}.copies", self.copies, ">= 0")
        _check(0.0 <= self.square_fraction <= 1.0, f"{key}.square_fraction",
               self.square_fraction, "in [0, 1]")
        for name in ("jitter_scale", "jitter_aspect", "jitter_shift", "jitter_rotation"):
            _check(getattr(self, name) >= 0, f"{key}.{name}", getattr(self, name), ">= 0")
        _check(len(self.translations) == 2, f"{key}.translations", self.translations,
               "a pair [dx, dy]")
        for s in self.scales:
            _check(s > 0, f"{key}.scales", self.scales, "all > 0")


@dataclass(frozen=True)
class Level1CropsConfig:
    top_fraction: float = 0.7949
    bottom_fraction: float = 0.7949
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self, key: str) -> None:
        for name in ("top_fraction", "bottom_fraction"):
            v = getattr(self, name)
            _check(0.3 <= v <= 1.0, f"{key}.{name}", v, "in [0.3, 1]")


@dataclass(frozen=True)
class Level1ModelConfig:
    fusion: dict[str, float] = field(default_factory=lambda: {"F1": 1.0, "EN1": 1.0, "NM1": 1.0})
    local_share: bool = False
    widths: str = "paper"

    def validate(self, key: str) -> None:
        _check(self.widths in NET_WIDTHS, f"{key}.widths", self.widths, f"one of {NET_WIDTHS}")
        _check(set(self.fusion) == {"F1", "EN1", "NM1"}, f"{key}.fusion", self.fusion,
               "a weight for each of F1, EN1, NM1")
        for n, w in self.fusion.items():
            _check(w > 0, f"{key}.fusion.{n}", w, "> 0")


@dataclass(frozen=True)
class LevelResourcesConfig:
    """A level's own share of ``resources`` (0: the ``resources`` value)."""

    cpus_per_net: float = 0.0

    def validate(self, key: str) -> None:
        _check(self.cpus_per_net >= 0, f"{key}.cpus_per_net", self.cpus_per_net,
               ">= 0 (0: resources.cpus_per_net)")


@dataclass(frozen=True)
class Level1Config:
    crops: Level1CropsConfig = field(default_factory=Level1CropsConfig)
    model: Level1ModelConfig = field(default_factory=Level1ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: LevelResourcesConfig = field(default_factory=LevelResourcesConfig)


@dataclass(frozen=True)
class PatchCropsConfig:
    windows: tuple[float, float] = (0.16, 0.18)
    shake_sigma: float = 0.01
    shakes: int = 4
    min_window_px: float = 0.0

    def validate(self, key: str) -> None:
        _check(all(0 < w < 1 for w in self.windows), f"{key}.windows", self.windows,
               "two fractions in (0, 1)")
        _check(self.min_window_px >= 0, f"{key}.min_window_px", self.min_window_px, ">= 0")
        _check(self.shake_sigma >= 0, f"{key}.shake_sigma", self.shake_sigma, ">= 0")
        _check(self.shakes >= 0, f"{key}.shakes", self.shakes, ">= 0")


@dataclass(frozen=True)
class PatchModelConfig:
    keep: float = 0.0
    widths: str = "paper"

    def validate(self, key: str) -> None:
        _check(self.widths in NET_WIDTHS, f"{key}.widths", self.widths, f"one of {NET_WIDTHS}")
        _check(0 <= self.keep < 1, f"{key}.keep", self.keep, "in [0, 1)")


@dataclass(frozen=True)
class PatchLevelConfig:
    crops: PatchCropsConfig = field(default_factory=PatchCropsConfig)
    model: PatchModelConfig = field(default_factory=PatchModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, batch_size=128))
    resources: LevelResourcesConfig = field(default_factory=LevelResourcesConfig)


@dataclass(frozen=True)
class EvaluateConfig:
    failure_threshold: float = 0.10
    ced_max: float = 0.10
    grid_faces: int = 8

    def validate(self, key: str) -> None:
        _check(self.failure_threshold > 0, f"{key}.failure_threshold", self.failure_threshold,
               "> 0")
        _check(self.ced_max > 0, f"{key}.ced_max", self.ced_max, "> 0")
        _check(self.grid_faces >= 1, f"{key}.grid_faces", self.grid_faces, ">= 1")


@dataclass(frozen=True)
class ResourcesConfig:
    cpus_per_net: float = 1.0
    gpus_per_net: float = 0.0
    max_concurrent: int = 0
    max_failures: int = 2
    seed: int = 0
    torch_threads: int = 1
    storage_path: str = "ray_results"
    checkpoint_seconds: float = 20.0
    poll_seconds: float = 0.2

    def validate(self, key: str) -> None:
        _check(bool(self.storage_path), f"{key}.storage_path", self.storage_path, "non-empty")
        _check(self.poll_seconds > 0, f"{key}.poll_seconds", self.poll_seconds, "> 0")
        _check(self.checkpoint_seconds >= 0, f"{key}.checkpoint_seconds",
               self.checkpoint_seconds, ">= 0")
        _check(self.cpus_per_net > 0, f"{key}.cpus_per_net", self.cpus_per_net, "> 0")
        _check(self.gpus_per_net >= 0, f"{key}.gpus_per_net", self.gpus_per_net, ">= 0")
        _check(self.max_concurrent >= 0, f"{key}.max_concurrent", self.max_concurrent, ">= 0")
        _check(self.max_failures >= 0, f"{key}.max_failures", self.max_failures, ">= 0")
        _check(self.torch_threads >= 1, f"{key}.torch_threads", self.torch_threads, ">= 1")


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "facecascade"
    model_name: str = "facecascade"

    def validate(self, key: str) -> None:
        _check(bool(self.experiment), f"{key}.experiment", self.experiment, "non-empty")
        _check(bool(self.model_name), f"{key}.model_name", self.model_name, "non-empty")


@dataclass(frozen=True)
class ServeConfig:
    max_image_bytes: int = 10_000_000
    max_image_pixels: int = 40_000_000

    def validate(self, key: str) -> None:
        _check(self.max_image_bytes > 0, f"{key}.max_image_bytes", self.max_image_bytes, "> 0")
        _check(self.max_image_pixels > 0, f"{key}.max_image_pixels", self.max_image_pixels, "> 0")


@dataclass(frozen=True)
class DetectConfig:
    """Faces found by opencv's Haar detector when no box is given (predict, serving).

    A Haar box is square and looser than the boxes of the training set; ``scale``
    and ``shift_x`` / ``shift_y`` (in box sides) map it to the training boxes'
    face frame, as measured by ``bench/detector_boxes.py`` on that set.
    """

    scale: float = 0.9309
    shift_x: float = -0.0128
    shift_y: float = -0.0017
    min_size_frac: float = 0.1

    def validate(self, key: str) -> None:
        _check(0.25 <= self.scale <= 4, f"{key}.scale", self.scale, "in [0.25, 4]")
        _check(abs(self.shift_x) <= 1, f"{key}.shift_x", self.shift_x, "in [-1, 1]")
        _check(abs(self.shift_y) <= 1, f"{key}.shift_y", self.shift_y, "in [-1, 1]")
        _check(0 < self.min_size_frac <= 1, f"{key}.min_size_frac", self.min_size_frac,
               "in (0, 1]")


@dataclass(frozen=True)
class SearchConfig:
    """A Ray Tune hyperparameter search over one network's training (``tune`` in params.yaml).

    ``net`` is the level's representative network: the best settings are applied to
    its level's ``train`` section. ``lr`` and ``momentum`` are ``[low, high]`` ranges
    (log-uniform and uniform); ``batch_size``, ``dropout``, ``weight_decay``, ``optimizer``,
    ``lr_schedule`` and ``loss`` are lists of choices. ``subset`` is the share of the training
    faces whose crops the trials train on (validation is always whole). Trials train for at most
    ``max_epochs``; ASHA stops weak ones at ``grace_period * reduction_factor**k`` epochs.
    """

    net: str = "F1"
    num_samples: int = 8
    max_epochs: int = 10
    grace_period: int = 2
    reduction_factor: int = 2
    lr: tuple[float, float] = (1e-3, 3e-2)
    momentum: tuple[float, float] = (0.8, 0.95)
    batch_size: tuple[int, ...] = (32, 64, 128)
    dropout: tuple[float, ...] = (0.0, 0.25)
    weight_decay: tuple[float, ...] = (0.0, 5e-4)
    optimizer: tuple[str, ...] = ("sgd", "adam")
    lr_schedule: tuple[str, ...] = ("step", "cosine")
    loss: tuple[str, ...] = ("euclidean", "distance", "l1")
    subset: float = 1.0
    seed: int = 0

    def validate(self, key: str) -> None:  # ``net`` is checked against the registry by tuning
        _check(bool(self.net), f"{key}.net", self.net, "a network name")
        _check(self.num_samples >= 1, f"{key}.num_samples", self.num_samples, ">= 1")
        _check(self.max_epochs >= 1, f"{key}.max_epochs", self.max_epochs, ">= 1")
        _check(1 <= self.grace_period <= self.max_epochs, f"{key}.grace_period",
               self.grace_period, "in [1, max_epochs]")
        _check(self.reduction_factor >= 2, f"{key}.reduction_factor", self.reduction_factor,
               ">= 2")
        _check(0 < self.lr[0] <= self.lr[1], f"{key}.lr", list(self.lr), "0 < low <= high")
        _check(0 <= self.momentum[0] <= self.momentum[1] < 1, f"{key}.momentum",
               list(self.momentum), "0 <= low <= high < 1")
        _check(bool(self.batch_size) and min(self.batch_size) >= 1, f"{key}.batch_size",
               list(self.batch_size), "non-empty, each >= 1")
        _check(bool(self.dropout) and all(0 <= d < 1 for d in self.dropout), f"{key}.dropout",
               list(self.dropout), "non-empty, each in [0, 1)")
        _check(bool(self.weight_decay) and all(w >= 0 for w in self.weight_decay),
               f"{key}.weight_decay", list(self.weight_decay), "non-empty, each >= 0")
        _check(bool(self.optimizer) and set(self.optimizer) <= set(OPTIMIZERS),
               f"{key}.optimizer", list(self.optimizer), f"non-empty, each one of {OPTIMIZERS}")
        _check(bool(self.lr_schedule) and set(self.lr_schedule) <= set(LR_SCHEDULES),
               f"{key}.lr_schedule", list(self.lr_schedule),
               f"non-empty, each one of {LR_SCHEDULES}")
        _check(bool(self.loss) and set(self.loss) <= set(LOSSES), f"{key}.loss",
               list(self.loss), f"non-empty, each one of {LOSSES}")
        _check(0 < self.subset <= 1, f"{key}.subset", self.subset, "in (0, 1]")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    frame: FrameConfig = field(default_factory=FrameConfig)
    level1: Level1Config = field(default_factory=Level1Config)
    level2: PatchLevelConfig = field(default_factory=PatchLevelConfig)
    level3: PatchLevelConfig = field(default_factory=lambda: PatchLevelConfig(
        crops=PatchCropsConfig(windows=(0.08, 0.09))))
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    tune: SearchConfig = field(default_factory=SearchConfig)

    def level(self, k: int) -> Level1Config | PatchLevelConfig:
        """The section of level ``k`` (1, 2 or 3)."""
        if k not in (1, 2, 3):
            raise ValueError(f"level == {k!r}, must be 1, 2 or 3")
        return (self.level1, self.level2, self.level3)[k - 1]

    def level_resources(self, k: int) -> ResourcesConfig:
        """``resources`` with level ``k``'s own ``cpus_per_net`` where it sets one."""
        cpus = self.level(k).resources.cpus_per_net
        return dataclasses.replace(self.resources, cpus_per_net=cpus) if cpus > 0 \
            else self.resources

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples), as in params.yaml."""
        return plain(dataclasses.asdict(self))


def _convert(tp: Any, value: Any, key: str, base: Any = None) -> Any:
    """Convert a YAML value to the annotated type ``tp``, naming ``key`` on failure.

    ``base`` is the default of a nested section: the keys a partial mapping leaves out
    take its values (``level2.train`` without ``epochs`` keeps level 2's epochs).
    """
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, not {type(value).__name__}")
        return _build(tp, value, key, base)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, not {type(value).__name__}")
        args = typing.get_args(tp)
        item_tp = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(t, v, f"{key}[{i}]") for i, (t, v) in pairs)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, not {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for t in typing.get_args(tp):
            try:
                return _convert(t, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} == {value!r} has the wrong type")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, not {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, not {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, not {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, not {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # pragma: no cover


def _build(cls: type, mapping: Mapping[str, Any], prefix: str, base: Any = None) -> Any:
    hints = typing.get_type_hints(cls)
    base = cls() if base is None else base
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(where + k for k in unknown)}; "
            f"allowed: {', '.join(sorted(names))}")
    kwargs = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
    for name, value in mapping.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(hints[name], value, key, getattr(base, name))
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def config_from_dict(mapping: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested mapping (missing keys take defaults)."""
    return _build(Config, mapping, "")


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The YAML mapping in ``path`` (empty file: ``{}``); a :class:`ConfigError` naming the
    file and ``what`` it is for a missing file, bad YAML or a top level that is no mapping."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def load_config(path: str | Path = "params.yaml",
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load ``params.yaml`` into a validated :class:`Config`.

    ``overrides`` maps dotted keys to values (``{"level2.shake_sigma": 0.02}``),
    applied before validation.

    >>> load_config.__name__
    'load_config'
    """
    path = Path(path)
    raw = read_mapping(path, "params file")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
