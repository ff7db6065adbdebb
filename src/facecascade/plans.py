"""The plan of a cascade level's graph: its nets in graph order, how they are grouped,
where their windows go and how their points are fused.

A :class:`LevelPlan` is data: :mod:`facecascade.fused` builds a level graph from one
(with the nets' weights), :mod:`facecascade.fastpath` cuts the crops and windows it reads,
and a cascade artifact keeps the plan of each saved graph (``graphs/index.json``) so that
serving needs neither the nets nor PyTorch. :data:`GRAPH_VERSION` and :data:`OPSET` are
the layout of those graphs: a saved graph of another layout is not used.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import Config
from .crops import net_windows
from .specs import get_spec, level_nets

#: ONNX opset of the level graphs
OPSET = 17
#: fewest nets of one layer plan run as one grouped module, for a single face. Measured
#: with onnxruntime on one thread (aligned widths, us per face): the ten patch nets grouped
#: 77 at batch 1, 80 at 256; as ten nets 96 and 31 (the grouped convolutions miss
#: onnxruntime's blocked NCHWc kernels, which win from two faces on); EN1 and NM1 grouped
#: 158 (level 1) against 147 apart. So one face runs the grouped graph, a batch the other.
MIN_GROUP = 3
#: layout version of the level graphs; part of a graph's key and of the graph index
GRAPH_VERSION = 3


@dataclass(frozen=True)
class CropLayout:
    """Where each window's crop goes: groups of ``((W, H), count)``; per window its crop
    size ``sizes (m, 2)``, its ``group`` and its ``slot`` in the group
    (:func:`facecascade.sampling.crop_groups`)."""

    groups: tuple[tuple[tuple[int, int], int], ...]
    sizes: np.ndarray
    group: np.ndarray
    slot: np.ndarray

    @classmethod
    def of(cls, groups: Sequence[tuple[tuple[int, int], int]]) -> CropLayout:
        """The layout of ``groups``: ``((W, H), count)`` in window order."""
        groups = tuple((tuple(int(v) for v in size), int(count)) for size, count in groups)
        return cls(groups,
                   np.array([size for size, count in groups for _ in range(count)], np.int64),
                   np.array([g for g, (_, count) in enumerate(groups) for _ in range(count)],
                            np.int64),
                   np.array([s for _, count in groups for s in range(count)], np.int64))


@dataclass(frozen=True)
class LevelPlan:
    """Which nets a level has, in graph order, and how their windows are placed.

    ``groups`` are ``(names, (W, H))`` of nets run as one module; ``order`` is
    every net of the level in graph order (the groups one after the other).
    A net's window is ``anchor + fractions * (frame w, h, w, h)`` where the
    anchor is the frame's top-left corner (level 1) or the previous estimate of
    the net's point (``anchor_points``; levels 2 and 3).
    """

    level: int
    groups: tuple[tuple[tuple[str, ...], tuple[int, int]], ...]
    order: tuple[str, ...]
    fractions: np.ndarray  # (m, 4)
    anchor_points: np.ndarray | None  # (m,) point index, None at level 1
    fusion: np.ndarray  # (5, P): fused point q = sum_p fusion[q, p] * net point p
    keep: float = 0.0  # share of the previous estimate (the window centres), levels 2 and 3

    @functools.cached_property
    def layout(self) -> CropLayout:
        """The crop groups of :func:`facecascade.sampling.crop_groups`, in graph order."""
        return CropLayout.of([(size, len(names)) for names, size in self.groups])

    @functools.cached_property
    def anchors(self) -> np.ndarray:
        """Per net, the point its window is centred on, or -1 for the frame (level 1)."""
        m = len(self.order)
        return (np.full(m, -1, np.int64) if self.anchor_points is None
                else np.ascontiguousarray(self.anchor_points, np.int64))

    def same_windows(self, other: LevelPlan) -> bool:
        """Whether ``other`` places, orders and fuses the same nets alike (its groups may
        differ: the two graphs of a level)."""
        return (self.level == other.level and self.order == other.order
                and self.keep == other.keep and self.fractions.shape == other.fractions.shape
                and np.array_equal(self.fractions, other.fractions)
                and np.array_equal(self.anchors, other.anchors)
                and self.fusion.shape == other.fusion.shape
                and np.array_equal(self.fusion, other.fusion))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (floats written exactly: ``repr`` round-trips)."""
        return {"level": self.level,
                "groups": [[list(names), list(size)] for names, size in self.groups],
                "order": list(self.order),
                "fractions": self.fractions.tolist(),
                "anchor_points": (None if self.anchor_points is None
                                  else self.anchors.tolist()),
                "fusion": self.fusion.tolist(),
                "keep": self.keep}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LevelPlan:
        """The plan of :meth:`to_dict`; a ValueError when it is not one.

        >>> import json
        >>> from facecascade.config import Config
        >>> plan = plan_level(Config(), 2)
        >>> LevelPlan.from_dict(json.loads(json.dumps(plan.to_dict()))).same_windows(plan)
        True
        """
        try:
            groups = tuple((tuple(str(n) for n in names), (int(size[0]), int(size[1])))
                           for names, size in d["groups"])
            plan = cls(int(d["level"]), groups, tuple(str(n) for n in d["order"]),
                       np.array(d["fractions"], np.float64).reshape(-1, 4),
                       None if d["anchor_points"] is None
                       else np.array(d["anchor_points"], np.int64),
                       np.array(d["fusion"], np.float64), float(d["keep"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"not a level plan: {exc!r}") from None
        if tuple(n for names, _ in plan.groups for n in names) != plan.order:
            raise ValueError("not a level plan: its groups are not its order")
        if (len(plan.fractions) != len(plan.order)
                or plan.fusion.shape[0] != 5 or plan.anchors.shape != (len(plan.order),)):
            raise ValueError("not a level plan: its arrays do not match its nets")
        return plan


def plan_level(cfg: Config, level: int,
               signatures: Mapping[str, Hashable] | None = None) -> LevelPlan:
    """The :class:`LevelPlan` of ``level`` under ``cfg``.

    ``signatures`` name each net's layer plan (:func:`facecascade.fused.level_plan`
    reads them from the nets): nets of the same input size and signature are one group
    when there are at least :data:`MIN_GROUP` of them (the ten patch nets). Without
    signatures, or for a net without one, every net is a group of its own. Either way
    the nets keep their order of :func:`facecascade.specs.level_nets`, so the windows
    are the same.

    >>> from facecascade.config import Config
    >>> plan_level(Config(), 1).order
    ('F1', 'EN1', 'NM1')
    """
    names = level_nets(level)
    keys: dict[Any, list[str]] = {}
    for name in names:
        sig = name if signatures is None else signatures.get(name, name)
        keys.setdefault((get_spec(name).input_size, sig), []).append(name)
    groups = tuple(group for (size, _), ns in keys.items()
                   for group in ([(tuple(ns), size)] if len(ns) >= MIN_GROUP
                                 else [((n,), size) for n in ns]))
    order = tuple(n for ns, _ in groups for n in ns)
    unit = np.array([[0.0, 0.0, 1.0, 1.0]])
    zeros = np.zeros((1, 5, 2))
    fractions = np.ascontiguousarray(
        np.concatenate([net_windows(get_spec(n), unit, cfg, zeros) for n in order]))
    anchors = None if level == 1 else np.array([get_spec(n).points[0] for n in order])
    weights = [cfg.level1.model.fusion[n] if level == 1 else 1.0 for n in order]
    point_of = [p for n in order for p in get_spec(n).points]
    weight_of = [w for n, w in zip(order, weights, strict=True) for _ in get_spec(n).points]
    fusion = np.zeros((5, len(point_of)))
    for j, (p, w) in enumerate(zip(point_of, weight_of, strict=True)):
        fusion[p, j] = w
    fusion /= fusion.sum(axis=1, keepdims=True)
    keep = 0.0 if level == 1 else cfg.level(level).model.keep
    return LevelPlan(level, groups, order, fractions, anchors, fusion, keep)
