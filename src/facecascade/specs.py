"""The 23 named networks of the cascade as data: specs and their registry.

Every network is a :class:`NetSpec` (data, not a class) in :data:`SPECS`, generated
from the layer tables of docs/METHOD.md:

- level 1 (face box): ``F1`` (39x39, all 5 points), ``EN1`` (39 wide x 31 high,
  LE RE N) and ``NM1`` (39x31, N LM RM); conv 4x4x20, pool, conv 3x3x40, pool,
  conv 3x3x60, pool, conv 2x2x80, fc 120, fc out.
- levels 2 and 3 (patches): for each point two nets, ``LE21 LE22 ... RM22`` and
  ``LE31 ... RM32``; 15x15 input, conv 4x4x20, pool, conv 3x3x40, pool, fc 60, fc 2.

Those are the papers' widths (``"paper"``). :data:`WIDTHS` names other conv channel
plans of the same layers: ``"aligned"`` (level 1 16, 32, 64, 80; patches 16, 32) has
channel counts in multiples of 16, the block of the SIMD convolution kernels of
onnxruntime and oneDNN on AVX-512 (a 20-channel map is computed as 32), which halves
the cascade's inference time for about the papers' parameter count
(``levelN.model.widths``; docs/METHOD.md has the measurements).

This module needs no PyTorch: inference from saved level graphs
(:mod:`facecascade.fastpath`) reads the specs without importing it.
:mod:`facecascade.nets` builds the networks themselves.

>>> list_nets("LE2*")
['LE21', 'LE22']
>>> get_spec("EN1").feature_shapes()[-1]  # (channels, height, width)
(80, 1, 2)
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .geometry import POINT_NAMES
from .io import plain

#: total number of learnable parameters of the 23 networks reported by the CCNN paper
PAPER_TOTAL_PARAMETERS = 643_920

REGIONS = ("full", "top", "bottom")

# Layer plans of docs/METHOD.md: (kernel, channels) per conv, pooling after each conv, hidden fcs.
_LEVEL1_PLAN: dict[str, Any] = {
    "convs": ((4, 20), (3, 40), (3, 60), (2, 80)),
    "pool_after": (True, True, True, False),
    "fcs": (120,),
}
_PATCH_PLAN: dict[str, Any] = {
    "convs": ((4, 20), (3, 40)),
    "pool_after": (True, True),
    "fcs": (60,),
}
# Level-1 table: name, input (W, H), points, region of the face box.
_LEVEL1_TABLE = (
    ("F1", (39, 39), (0, 1, 2, 3, 4), "full"),
    ("EN1", (39, 31), (0, 1, 2), "top"),
    ("NM1", (39, 31), (2, 3, 4), "bottom"),
)
_PATCH_INPUT = (15, 15)
#: named conv channel plans: ``{name: {"level1": channels, "patch": channels}}``, one
#: channel count per conv of the level-1 / patch layer plan (``levelN.model.widths``)
WIDTHS: Mapping[str, Mapping[str, tuple[int, ...]]] = types.MappingProxyType({
    "paper": {"level1": (20, 40, 60, 80), "patch": (20, 40)},
    "aligned": {"level1": (16, 32, 64, 80), "patch": (16, 32)},
})


@dataclass(frozen=True)
class NetSpec:
    """Architecture and role of one named network.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"F1"`` or ``"LE21"``.
    level : int
        Cascade level, 1, 2 or 3.
    points : tuple of int
        Indices of the points it predicts (0 LE, 1 RE, 2 N, 3 LM, 4 RM).
    input_size : tuple of int
        Input ``(width, height)`` in pixels.
    convs : tuple of (int, int)
        ``(kernel, channels)`` of each (square, unpadded, stride 1) convolution.
    pool_after : tuple of bool
        Whether a 2x2 max pooling (stride 2, floor) follows each convolution.
    fcs : tuple of int
        Widths of the hidden fully connected layers (the output layer is added).
    region : str or None
        Level 1 only: part of the face frame seen, ``"full"``, ``"top"`` or ``"bottom"``.
    pair_index : int or None
        Levels 2 and 3 only: 0 or 1, which of the level's two ``windows`` fractions.
    """

    name: str
    level: int
    points: tuple[int, ...]
    input_size: tuple[int, int]
    convs: tuple[tuple[int, int], ...]
    pool_after: tuple[bool, ...]
    fcs: tuple[int, ...]
    region: str | None = None
    pair_index: int | None = None

    def __post_init__(self) -> None:
        where = f"NetSpec {self.name!r}"
        if self.level not in (1, 2, 3):
            raise ValueError(f"{where}: level == {self.level!r}, must be 1, 2 or 3")
        if not self.points or any(p not in range(len(POINT_NAMES)) for p in self.points):
            raise ValueError(f"{where}: points == {self.points!r}, must be indices in 0..4")
        if len(self.pool_after) != len(self.convs):
            raise ValueError(f"{where}: pool_after has {len(self.pool_after)} entries "
                             f"for {len(self.convs)} convs")
        if self.level == 1:
            if self.region not in REGIONS or self.pair_index is not None:
                raise ValueError(f"{where}: level 1 needs region in {REGIONS} and no pair_index")
        elif self.pair_index not in (0, 1) or self.region is not None:
            raise ValueError(f"{where}: levels 2 and 3 need pair_index 0 or 1 and no region")

    @property
    def n_outputs(self) -> int:
        """Number of outputs, ``2 * len(points)`` (x0, y0, x1, y1, ...)."""
        return 2 * len(self.points)

    @property
    def point_names(self) -> tuple[str, ...]:
        """Names of the predicted points, e.g. ``("LE", "RE", "N")``."""
        return tuple(POINT_NAMES[p] for p in self.points)

    def feature_shapes(
        self, input_size: int | tuple[int, int] | None = None
    ) -> list[tuple[int, int, int]]:
        """``(channels, height, width)`` after each conv stage (after its pooling, if any).

        Parameters
        ----------
        input_size : int or (int, int), optional
            Input ``(width, height)`` (an int for squares) instead of the spec's.

        Raises
        ------
        ValueError
            If the input is too small for the layer plan.

        Examples
        --------
        >>> get_spec("F1").feature_shapes()
        [(20, 18, 18), (40, 8, 8), (60, 3, 3), (80, 2, 2)]
        """
        return [(ch, h, w) for ch, _, (h, w) in conv_stages(self, input_wh(self, input_size))]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), fit for JSON and ``torch.load(weights_only=True)``."""
        return plain(dataclasses.asdict(self))


def input_wh(spec: NetSpec, input_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """Normalise an input size override to ``(width, height)``."""
    if input_size is None:
        return spec.input_size
    if isinstance(input_size, int):
        return (input_size, input_size)
    w, h = (int(v) for v in input_size)
    return (w, h)


def conv_stages(
    spec: NetSpec, size: tuple[int, int]
) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
    """Per conv: channels, ``(h, w)`` after the conv and ``(h, w)`` after its pooling."""
    w, h = size
    stages = []
    for i, ((k, ch), pool) in enumerate(zip(spec.convs, spec.pool_after, strict=True)):
        conv_hw = (h - k + 1, w - k + 1)
        h, w = (conv_hw[0] // 2, conv_hw[1] // 2) if pool else conv_hw
        if min(conv_hw) < 1 or min(h, w) < 1:
            raise ValueError(
                f"{spec.name}: input (width, height) == {size} is too small: conv{i + 1} "
                f"({k}x{k}{', pool 2' if pool else ''}) leaves a {w}x{h} map")
        stages.append((ch, conv_hw, (h, w)))
    return stages


def _build_specs() -> dict[str, NetSpec]:
    """The 23 specs from docs/METHOD.md's tables (level 1 rows, then level x point x pair)."""
    specs = [NetSpec(name=name, level=1, points=points, input_size=size, region=region,
                     **_LEVEL1_PLAN)
             for name, size, points, region in _LEVEL1_TABLE]
    specs += [NetSpec(name=f"{point}{level}{pair + 1}", level=level, points=(p,),
                      input_size=_PATCH_INPUT, pair_index=pair, **_PATCH_PLAN)
              for level in (2, 3)
              for p, point in enumerate(POINT_NAMES)
              for pair in (0, 1)]
    return {spec.name: spec for spec in specs}


#: the 23 networks by name, in canonical order (F1, EN1, NM1, LE21, LE22, RE21, ..., RM32)
SPECS: Mapping[str, NetSpec] = types.MappingProxyType(_build_specs())


def get_spec(name: str, widths: str = "paper") -> NetSpec:
    """The :class:`NetSpec` called ``name``, with the conv channels of :data:`WIDTHS` ``widths``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the closest valid names) or widths.

    Examples
    --------
    >>> get_spec("N31").points
    (2,)
    >>> get_spec("F1", widths="aligned").convs
    ((4, 16), (3, 32), (3, 64), (2, 80))
    """
    try:
        spec = SPECS[name]
    except (KeyError, TypeError):
        spec = None
    if spec is not None:
        if widths == "paper":
            return spec
        if widths not in WIDTHS:
            raise ValueError(f"widths == {widths!r}, must be one of {tuple(WIDTHS)}")
        channels = WIDTHS[widths]["level1" if spec.level == 1 else "patch"]
        return dataclasses.replace(spec, convs=tuple(
            (k, ch) for (k, _), ch in zip(spec.convs, channels, strict=True)))
    upper = {n.upper(): n for n in SPECS}
    close = difflib.get_close_matches(str(name).upper(), list(upper), n=5, cutoff=0.5)
    hint = (f"; did you mean {', '.join(upper[c] for c in close)}?" if close
            else f"; valid names: {', '.join(SPECS)}")
    raise ValueError(f"unknown network {name!r}{hint}")


def list_nets(pattern: str = "*") -> list[str]:
    """Names matching an fnmatch ``pattern`` (case-insensitive), in canonical order.

    The order is F1, EN1, NM1, then levels 2 and 3 by point (LE, RE, N, LM, RM)
    and pair.

    Examples
    --------
    >>> list_nets("*1")[:4]
    ['F1', 'EN1', 'NM1', 'LE21']
    >>> len(list_nets())
    23
    """
    pat = pattern.upper()
    return [n for n in SPECS if fnmatch.fnmatchcase(n.upper(), pat)]


def net_options(name: str, cfg: Any) -> dict[str, Any]:
    """The architecture keywords of :func:`create_net` for net ``name`` under a
    :class:`facecascade.config.Config`: ``local_share`` (level 1's
    ``model.local_share``) and ``widths`` (its level's ``model.widths``).

    >>> from facecascade.config import config_from_dict
    >>> net_options("LE21", config_from_dict({"level2": {"model": {"widths": "aligned"}}}))
    {'local_share': False, 'widths': 'aligned'}
    """
    level = get_spec(name).level
    model = cfg.level(level).model
    return {"local_share": bool(level == 1 and model.local_share), "widths": model.widths}


def level_nets(level: int) -> list[str]:
    """Networks of ``level`` in registry order (F1 EN1 NM1; LE21 ... RM22; LE31 ... RM32).

    >>> level_nets(1)
    ['F1', 'EN1', 'NM1']
    """
    if level not in (1, 2, 3):
        raise ValueError(f"level == {level!r}, must be 1, 2 or 3")
    return [n for n in list_nets() if get_spec(n).level == level]
