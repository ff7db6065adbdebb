"""Landmark accuracy: NME, failure rate, CED and its AUC, per point and per cascade level.

Names follow MMPose (NME, FR, AUC). All errors are *fractions* of a
normaliser (0.05 means 5%); only :func:`format_table` shows percentages.

Normalisers (``norm=``):

``"iod"``
    Inter-ocular distance: the distance between the *ground-truth* eye centres
    (points 0 and 1), the measure of the CCNN paper and of docs/METHOD.md.
``"box"``
    Box size ``sqrt(w * h)`` of the face box ``(left, top, right, bottom)``,
    the "box size" normaliser common in the field (e.g. NME_box on
    300W / COFW benchmarks). It is the geometric mean of the sides, so a tall
    and a square box of the same area normalise alike (the same choice as the
    face frame in :mod:`facecascade.frame`).

CED and AUC. The cumulative error distribution is ``F(x) = share of faces
with error <= x``. Its area up to ``m = max_error``, normalised by ``m``, is

.. math::

    AUC = \\frac{1}{m}\\int_0^m F(x)\\,dx
        = \\frac{1}{n}\\sum_i \\frac{1}{m}\\int_0^m [e_i \\le x]\\,dx
        = \\frac{1}{n}\\sum_i \\Bigl(1 - \\frac{\\min(e_i, m)}{m}\\Bigr),

which :func:`auc` computes exactly (no grid). The trapezoid rule on
:func:`ced`'s grid of ``steps`` points differs from it by at most
``1 / (2 (steps - 1))`` (half a grid step per jump, averaged over faces).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .frame import face_frame
from .geometry import POINT_NAMES, to_abs, to_rel

NORMS = ("iod", "box")
BASELINE = "baseline"


# --------------------------------------------------------------------------- validation
def _as_points(arr: Any, name: str, n: int | None = None, ref: str = "") -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (5, 2) or (n is not None and a.shape[0] != n):
        want = "(n, 5, 2)" if n is None else f"(n, 5, 2) with n == {n} as {ref}"
        raise ValueError(f"{name} has shape {a.shape}, expected {want}")
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=(1, 2)))
        raise ValueError(f"{name} contains NaN or inf at face(s) {bad[:10].tolist()}")
    return a


def _as_boxes(arr: Any, name: str, n: int | None = None, ref: str = "") -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 4 or (n is not None and a.shape[0] != n):
        want = "(n, 4)" if n is None else f"(n, 4) with n == {n} as {ref}"
        raise ValueError(f"{name} has shape {a.shape}, expected {want} "
                         "(left, top, right, bottom)")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    bad = np.flatnonzero((a[:, 2] <= a[:, 0]) | (a[:, 3] <= a[:, 1]))
    if bad.size:
        raise ValueError(f"{name} has degenerate boxes (right <= left or bottom <= top) "
                         f"at face(s) {bad[:10].tolist()}")
    return a


def _as_errors(errors: Any) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"errors has shape {e.shape}, expected (n,) (one NME per face)")
    if e.size == 0:
        raise ValueError("errors is empty; need at least one face")
    if not np.isfinite(e).all() or (e < 0).any():
        raise ValueError("errors must be finite and >= 0")
    return e


def _check_positive(value: float, name: str) -> float:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} == {value!r}, must be > 0")
    return float(value)


# --------------------------------------------------------------------------- per face
def normaliser(gt: np.ndarray, *, norm: str = "iod", boxes: np.ndarray | None = None
               ) -> np.ndarray:
    """Normalising length ``(n,)`` of each face: ground-truth IOD or box size ``sqrt(w h)``.

    >>> gt = np.zeros((1, 5, 2)); gt[0, 1, 0] = 10.0
    >>> normaliser(gt).tolist()
    [10.0]
    >>> normaliser(gt, norm="box", boxes=np.array([[0., 0., 4., 9.]])).tolist()
    [6.0]
    """
    gt = _as_points(gt, "gt")
    if norm == "iod":
        d = np.linalg.norm(gt[:, 0] - gt[:, 1], axis=1)
        zero = np.flatnonzero(d <= 0)
        if zero.size:
            raise ValueError(f"inter-ocular distance is 0 at face {int(zero[0])} "
                             f"(faces {zero[:10].tolist()}): both ground-truth eyes coincide")
        return d
    if norm == "box":
        if boxes is None:
            raise ValueError('norm="box" needs boxes (n, 4) as left, top, right, bottom')
        b = _as_boxes(boxes, "boxes", len(gt), "gt")
        return np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    raise ValueError(f"norm == {norm!r}, must be one of {NORMS}")


def point_errors(pred: np.ndarray, gt: np.ndarray, *, norm: str = "iod",
                 boxes: np.ndarray | None = None) -> np.ndarray:
    """Normalised Euclidean error ``(n, 5)`` of each point of each face.

    Parameters
    ----------
    pred, gt : array (n, 5, 2)
        Predicted and ground-truth points (LE, RE, N, LM, RM), pixels.
    norm : {"iod", "box"}
        Normaliser: ground-truth inter-ocular distance, or box size ``sqrt(w h)``.
    boxes : array (n, 4), optional
        Face boxes (left, top, right, bottom); required for ``norm="box"``.

    Examples
    --------
    >>> gt = np.array([[[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]]], dtype=float)
    >>> point_errors(gt + 1.0, gt).round(4).tolist()
    [[0.1414, 0.1414, 0.1414, 0.1414, 0.1414]]
    """
    gt = _as_points(gt, "gt")
    pred = _as_points(pred, "pred", len(gt), "gt")
    d = normaliser(gt, norm=norm, boxes=boxes)
    return np.linalg.norm(pred - gt, axis=2) / d[:, None]


def nme(pred: np.ndarray, gt: np.ndarray, *, norm: str = "iod",
        boxes: np.ndarray | None = None) -> np.ndarray:
    """Normalised mean error ``(n,)`` of each face: :func:`point_errors` averaged over the 5 points.

    >>> gt = np.array([[[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]]], dtype=float)
    >>> nme(gt + [1.0, 0.0], gt).tolist()
    [0.1]
    """
    return point_errors(pred, gt, norm=norm, boxes=boxes).mean(axis=1)


# --------------------------------------------------------------------------- over faces
def failure_rate(errors: np.ndarray, threshold: float = 0.10) -> float:
    """Share of faces whose error is strictly above ``threshold`` (FR@10% by default).

    >>> failure_rate(np.array([0.02, 0.10, 0.11, 0.5]))
    0.5
    """
    e = _as_errors(errors)
    threshold = _check_positive(threshold, "threshold")
    return float(np.mean(e > threshold))


def ced(errors: np.ndarray, *, max_error: float = 0.10, steps: int = 1001
        ) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution on a grid ``x = linspace(0, max_error, steps)``.

    Returns ``(x, y)`` with ``y[i]`` the share of faces with error ``<= x[i]``;
    ``y`` is non-decreasing and reaches 1 when every error is ``<= max_error``.

    >>> x, y = ced(np.array([0.0, 0.05, 0.2]), max_error=0.1, steps=3)
    >>> x.tolist(), y.round(3).tolist()
    ([0.0, 0.05, 0.1], [0.333, 0.667, 0.667])
    """
    e = np.sort(_as_errors(errors))
    max_error = _check_positive(max_error, "max_error")
    if int(steps) < 2:
        raise ValueError(f"steps == {steps!r}, must be >= 2")
    x = np.linspace(0.0, max_error, int(steps))
    y = np.searchsorted(e, x, side="right") / e.size
    return x, y


def auc(errors: np.ndarray, *, max_error: float = 0.10) -> float:
    """Area under the CED from 0 to ``max_error``, divided by ``max_error`` (in [0, 1]).

    Exact for the step-shaped CED: the mean over faces of
    ``1 - min(e, max_error) / max_error`` (see the module docstring).
    1 when every error is 0; 0 when every error is ``>= max_error``.

    >>> auc(np.array([0.0, 0.05, 0.2]), max_error=0.1)
    0.5
    """
    e = _as_errors(errors)
    max_error = _check_positive(max_error, "max_error")
    return float(np.mean(1.0 - np.minimum(e, max_error) / max_error))


# --------------------------------------------------------------------------- per level
def level_name(key: int | str) -> str:
    """Report name of a level key: ``1 -> "level1"``, ``"baseline"`` and other strings kept.

    >>> level_name(2), level_name("baseline"), level_name("level3")
    ('level2', 'baseline', 'level3')
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return f"level{int(key)}"
    if isinstance(key, str) and key:
        return key
    raise ValueError(f"level key {key!r} must be an int (1, 2, 3) or a non-empty string")


def level_report(preds: Mapping[int | str, np.ndarray], gt: np.ndarray, boxes: np.ndarray, *,
                 failure_threshold: float = 0.10, ced_max: float = 0.10
                 ) -> dict[str, dict[str, Any]]:
    """Metrics of each level's predictions against the same ground truth.

    Parameters
    ----------
    preds : mapping
        ``{1: (n, 5, 2), 2: ..., "baseline": ...}``; int keys become ``"level{k}"``,
        string keys (``"baseline"``, ``"level2"``) are kept. Order is kept.
    gt : array (n, 5, 2)
        Ground-truth points.
    boxes : array (n, 4)
        Face boxes for the box-size normaliser.
    failure_threshold, ced_max : float
        FR counts faces with NME (IOD) above ``failure_threshold``; AUC is up to ``ced_max``.

    Returns
    -------
    dict
        ``{"level1": {"nme_iod", "nme_box", "failure_rate", "auc", "per_point": {"LE", "RE",
        "N", "LM", "RM"}, "n_faces"}, ...}``, plain floats and ints (JSON-ready).
        All errors are fractions; FR, AUC and per-point errors use the IOD normaliser.

    Examples
    --------
    >>> gt = np.array([[[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]]], dtype=float)
    >>> r = level_report({1: gt + [1.0, 0.0]}, gt, np.array([[-5., -5., 15., 15.]]))
    >>> r["level1"]["nme_iod"], r["level1"]["nme_box"], r["level1"]["per_point"]["N"]
    (0.1, 0.05, 0.1)
    """
    if not preds:
        raise ValueError("preds is empty; pass at least one level")
    gt = _as_points(gt, "gt")
    boxes = _as_boxes(boxes, "boxes", len(gt), "gt")
    failure_threshold = _check_positive(failure_threshold, "failure_threshold")
    ced_max = _check_positive(ced_max, "ced_max")
    iod = normaliser(gt, norm="iod")
    size = normaliser(gt, norm="box", boxes=boxes)
    out: dict[str, dict[str, Any]] = {}
    for key, pred in preds.items():
        name = level_name(key)
        if name in out:
            raise ValueError(f"level {name!r} given twice (keys {list(preds)})")
        pred = _as_points(pred, f"preds[{key!r}]", len(gt), "gt")
        dist = np.linalg.norm(pred - gt, axis=2)
        pe = dist / iod[:, None]
        e = pe.mean(axis=1)
        out[name] = {
            "nme_iod": float(e.mean()),
            "nme_box": float((dist / size[:, None]).mean()),
            "failure_rate": failure_rate(e, failure_threshold),
            "auc": auc(e, max_error=ced_max),
            "per_point": {p: float(v) for p, v in zip(POINT_NAMES, pe.mean(axis=0), strict=True)},
            "n_faces": int(len(gt)),
        }
    return out


def mean_shape_baseline(train_points: np.ndarray, train_boxes: np.ndarray,
                        test_boxes: np.ndarray, *, frame_scale: float = 1.0) -> np.ndarray:
    """The "no network" baseline: the training mean shape placed in each test face frame.

    The mean is taken over training points relative to their canonical face
    frames (:func:`facecascade.frame.face_frame` with ``frame_scale``), then
    mapped into each test box's frame.

    Returns
    -------
    array (m, 5, 2)
        Predicted points for the ``m`` test boxes.

    Examples
    --------
    >>> pts = np.array([[[3, 4], [7, 4], [5, 6], [4, 8], [6, 8]]], dtype=float)
    >>> mean_shape_baseline(pts, np.array([[0., 0., 10., 10.]]),
    ...                     np.array([[10., 0., 30., 20.]]))[0, 0].tolist()
    [16.0, 8.0]
    """
    train_points = _as_points(train_points, "train_points")
    if len(train_points) == 0:
        raise ValueError("train_points is empty; need at least one training face")
    train_boxes = _as_boxes(train_boxes, "train_boxes", len(train_points), "train_points")
    test_boxes = _as_boxes(test_boxes, "test_boxes")
    frame_scale = _check_positive(frame_scale, "frame_scale")
    mean_rel = to_rel(train_points, face_frame(train_boxes, frame_scale)).mean(axis=0)
    rel = np.broadcast_to(mean_rel, (len(test_boxes), 5, 2))
    return to_abs(rel, face_frame(test_boxes, frame_scale))


# --------------------------------------------------------------------------- output
def format_table(report: Mapping[str, Mapping[str, Any]], *, failure_threshold: float = 0.10,
                 ced_max: float = 0.10) -> str:
    """Fixed-width text table of a :func:`level_report`, one row per level, values in %.

    ``failure_threshold`` and ``ced_max`` only label the FR and AUC columns;
    pass the values given to :func:`level_report`.

    >>> gt = np.array([[[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]]], dtype=float)
    >>> r = level_report({1: gt + [1.0, 0.0]}, gt, np.array([[-5., -5., 15., 15.]]))
    >>> print(format_table(r))  # doctest: +NORMALIZE_WHITESPACE
    level     NME%(iod)  NME%(box)  FR@10%  AUC@10%     LE     RE      N     LM     RM
    level1        10.00       5.00    0.00     0.00  10.00  10.00  10.00  10.00  10.00
    """
    fr_head = f"FR@{100 * failure_threshold:g}%"
    auc_head = f"AUC@{100 * ced_max:g}%"
    heads = ["NME%(iod)", "NME%(box)", fr_head, auc_head, *POINT_NAMES]
    name_w = max(8, *(len(k) for k in report))
    widths = [max(len(h), 6) for h in heads]
    head = "  ".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True))
    lines = [f"{'level':<{name_w}}  {head}"]
    for name, r in report.items():
        vals = [r["nme_iod"], r["nme_box"], r["failure_rate"], r["auc"],
                *(r["per_point"][p] for p in POINT_NAMES)]
        lines.append(f"{name:<{name_w}}  "
                     + "  ".join(f"{100 * v:>{w}.2f}" for v, w in zip(vals, widths, strict=True)))
    return "\n".join(lines)


def ced_table(errors_by_level: Mapping[int | str, np.ndarray], *, max_error: float = 0.10,
              steps: int = 101, wide: bool = False) -> list[dict[str, Any]]:
    """CED rows for a DVC plots JSON, one series per level.

    Long form (default): rows ``{"level", "nme", "fraction"}``; a template must
    colour by the ``level`` field to split the series. Wide form
    (``wide=True``): one row per grid point, ``{"nme", "level1", "level2", ...}``,
    which DVC's built-in ``linear`` template draws as one line per field with
    ``y: {ced.json: [level1, level2, ...]}``. ``nme`` is the error as a fraction
    (like ``metrics.json``); values are rounded to 6 decimals.

    >>> ced_table({1: np.array([0.0, 0.2])}, max_error=0.1, steps=2)[-1]
    {'level': 'level1', 'nme': 0.1, 'fraction': 0.5}
    >>> ced_table({1: np.array([0.0, 0.2]), 2: np.zeros(2)}, max_error=0.1, steps=2, wide=True)
    [{'nme': 0.0, 'level1': 0.5, 'level2': 1.0}, {'nme': 0.1, 'level1': 0.5, 'level2': 1.0}]
    """
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, errors in errors_by_level.items():
        name = level_name(key)
        if name in curves:
            raise ValueError(f"level {name!r} given twice (keys {list(errors_by_level)})")
        curves[name] = ced(errors, max_error=max_error, steps=steps)
    if wide:
        x = np.linspace(0.0, float(max_error), int(steps))
        return [{"nme": round(float(xi), 6),
                 **{name: round(float(y[i]), 6) for name, (_, y) in curves.items()}}
                for i, xi in enumerate(x)]
    return [{"level": name, "nme": round(float(xi), 6), "fraction": round(float(yi), 6)}
            for name, (x, y) in curves.items() for xi, yi in zip(x, y, strict=True)]


def point_error_rows(report: Mapping[str, Mapping[str, Any]], *, wide: bool = False
                     ) -> list[dict[str, Any]]:
    """Per-point rows of a :func:`level_report`, for a DVC bar plot.

    Points are LE, RE, N, LM, RM, then ``"mean"`` (the level's ``nme_iod``);
    errors are fractions of the inter-ocular distance. Long form (default):
    rows ``{"level", "point", "nme"}``. Wide form (``wide=True``): one row per
    point, ``{"point", "level1", "level2", ...}``.
    """
    points = [*POINT_NAMES, "mean"]

    def value(r: Mapping[str, Any], p: str) -> float:
        return float(r["nme_iod"] if p == "mean" else r["per_point"][p])

    if wide:
        return [{"point": p, **{name: value(r, p) for name, r in report.items()}}
                for p in points]
    return [{"level": name, "point": p, "nme": value(r, p)}
            for name, r in report.items() for p in points]
