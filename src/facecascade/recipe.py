"""Recipes: named sets of params overrides, and writing settings back into a params file.

``params.yaml`` stays demo-sized and paper-faithful. A recipe (``recipes/real.yaml``)
is a YAML file shaped like a part of ``params.yaml``; only the keys it names change.
:func:`recipe_overrides` turns it into ``dvc exp run -S key=value`` arguments, so a
recipe run is an ordinary DVC experiment whose params DVC tracks key by key.

:func:`apply_settings` writes settings (the best trial of a Ray Tune search) into a
params or recipe file in place, keeping its comments and layout, so that
``dvc status`` then names exactly the stages that read the changed section.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError, config_from_dict, read_mapping


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of the leaves of a nested mapping.

    Mappings whose type in the config is a dict of values (``level1.model.fusion``)
    are still split into leaves; DVC's ``-S`` sets them key by key.

    >>> list(flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}))
    [('a.b', 1), ('a.c', [1, 2]), ('d', 'x')]
    """
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_recipe(path: str | Path, base: Config | None = None) -> dict[str, Any]:
    """The nested overrides of a recipe file, checked against the config schema.

    Raises :class:`~facecascade.config.ConfigError` naming the file and the dotted
    key for an unknown key or a bad value (the recipe applied on top of ``base``,
    by default the built-in defaults, must load).
    """
    path = Path(path)
    raw = read_mapping(path, "recipe")
    try:
        config_from_dict(_merge((base or Config()).to_dict(), raw))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return raw


def format_value(value: Any) -> str:
    """A value as one YAML flow-style token, as ``dvc exp run -S key=VALUE`` reads it.

    >>> format_value("adam"), format_value([-15.0, 12.0]), format_value(0.003), format_value(True)
    ('adam', '[-15.0, 12.0]', '0.003', 'true')
    """
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix(" ...").strip()


def recipe_overrides(recipe: Mapping[str, Any]) -> list[str]:
    """``key=value`` strings of a recipe, one per leaf, for ``dvc exp run -S``.

    >>> recipe_overrides({"level1": {"train": {"optimizer": "adam", "lr": 0.003}}})
    ['level1.train.optimizer=adam', 'level1.train.lr=0.003']
    """
    return [f"{key}={format_value(value)}" for key, value in flatten(recipe)]


def apply_settings(path: str | Path, section: str, values: Mapping[str, Any]) -> list[str]:
    """Set ``values`` under the dotted ``section`` of a YAML params file, in place.

    Comments, order and layout of the file are kept (ruamel's round trip); the
    file is replaced atomically. Returns the dotted keys whose value changed.
    """
    from ruamel.yaml import YAML

    from .io import atomic_path

    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if doc is None:
        doc = {}
    node = doc
    for part in section.split("."):
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
    changed = []
    for key, value in values.items():
        if node.get(key) != value:
            changed.append(f"{section}.{key}")
        node[key] = value
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        rt.dump(doc, fh)
    return changed
