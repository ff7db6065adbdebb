"""PNG figures of the evaluation: CED curves, per-point bars, faces with their points.

Headless by construction: figures are :class:`matplotlib.figure.Figure` objects
on an explicit Agg canvas, created inside each function (no ``pyplot``, no
global backend switch, nothing done at import). Every PNG is written
atomically through :func:`facecascade.io.atomic_path`.

Colours: ground truth is drawn as green crosses, a single prediction as red
dots; several levels get one colour each (:data:`LEVEL_COLOURS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .geometry import POINT_NAMES, apply_affine, window_to_output
from .io import atomic_path
from .metrics import auc, ced, failure_rate, level_name

#: matplotlib colours for successive levels (tab10), and the same in BGR for OpenCV
LEVEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f")
GT_BGR = (0, 220, 0)
PRED_BGR = (0, 0, 255)


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return (b, g, r)


def new_figure(width: float, height: float) -> Any:
    """A fresh Figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """``fig`` written to ``path`` as PNG, atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _errors_1d(errors: Any, name: str = "errors") -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"{name} has shape {e.shape}, expected (n,) (one NME per face)")
    return e


# --------------------------------------------------------------------------- plots
def plot_ced(errors_by_level: Mapping[int | str, np.ndarray], path: str | Path, *,
             max_error: float = 0.10, failure_threshold: float = 0.10, steps: int = 1001,
             title: str = "Cumulative error distribution") -> Path:
    """One CED curve per level; the legend gives each level's mean NME, AUC and FR.

    Parameters
    ----------
    errors_by_level : mapping
        ``{"level1": nme (n,), ...}`` (int keys become ``"level{k}"``), NME as fractions of IOD.
    path : path
        Output PNG, written atomically.
    max_error : float
        Right end of the x axis and upper limit of the AUC.
    failure_threshold : float
        Threshold of the failure rate shown in the legend (drawn as a dotted line).

    Returns
    -------
    Path
        ``path``.
    """
    if not errors_by_level:
        raise ValueError("errors_by_level is empty; pass at least one level")
    fig = new_figure(6.4, 4.6)
    ax = fig.add_subplot()
    for i, (key, errors) in enumerate(errors_by_level.items()):
        e = _errors_1d(errors, f"errors_by_level[{key!r}]")
        x, y = ced(e, max_error=max_error, steps=steps)
        a = auc(e, max_error=max_error)
        fr = failure_rate(e, failure_threshold)
        label = (f"{level_name(key)}: NME {100 * e.mean():.2f}%, "
                 f"AUC {100 * a:.2f}%, FR {100 * fr:.2f}%")
        ax.plot(100 * x, y, color=LEVEL_COLOURS[i % len(LEVEL_COLOURS)], lw=2, label=label)
    if failure_threshold <= max_error:
        ax.axvline(100 * failure_threshold, color="0.5", ls=":", lw=1)
    ax.set_xlim(0, 100 * max_error)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("NME (% of inter-ocular distance)")
    ax.set_ylabel("fraction of faces")
    ax.set_title(f"{title} (AUC and FR at {100 * max_error:g}% / {100 * failure_threshold:g}%)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_search_curves(curves: Mapping[str, Sequence[float]], path: str | Path, *,
                       best: str | None = None,
                       title: str = "Hyperparameter search") -> Path:
    """Validation NME per epoch of each trial of a search; the best trial drawn bold.

    Trials the scheduler stopped early end where they stopped.

    Parameters
    ----------
    curves : mapping
        ``{trial label: [val NME after epoch 1, 2, ...]}`` (fractions of IOD).
    path : path
        Output PNG, written atomically.
    best : str, optional
        Label of the best trial.
    """
    if not curves:
        raise ValueError("curves is empty; pass at least one trial")
    fig = new_figure(6.4, 4.6)
    ax = fig.add_subplot()
    for i, (label, values) in enumerate(curves.items()):
        v = _errors_1d(values, f"curves[{label!r}]")
        if not len(v):
            continue
        bold = label == best
        ax.plot(np.arange(1, len(v) + 1), 100 * v, marker="o", ms=3, lw=2.5 if bold else 1,
                color="black" if bold else LEVEL_COLOURS[i % len(LEVEL_COLOURS)],
                alpha=1.0 if bold else 0.7, label=f"{label}{' (best)' if bold else ''}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NME (% of inter-ocular distance)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=7)
    return save_figure(fig, path)


def plot_point_errors(report: Mapping[str, Mapping[str, Any]], path: str | Path, *,
                      title: str = "Mean error per point") -> Path:
    """Grouped bars of a :func:`facecascade.metrics.level_report`.

    One group per point (LE, RE, N, LM, RM, then the mean over points), one bar
    per level, height the NME in % of the inter-ocular distance.
    """
    if not report:
        raise ValueError("report is empty; pass at least one level")
    groups = [*POINT_NAMES, "mean"]
    names = list(report)
    width = 0.8 / len(names)
    fig = new_figure(max(6.4, 1.0 + 0.25 * len(groups) * len(names)), 4.2)
    ax = fig.add_subplot()
    centres = np.arange(len(groups))
    for i, name in enumerate(names):
        r = report[name]
        vals = 100 * np.array([*(r["per_point"][p] for p in POINT_NAMES), r["nme_iod"]])
        xs = centres - 0.4 + width * (i + 0.5)
        bars = ax.bar(xs, vals, width, label=name, color=LEVEL_COLOURS[i % len(LEVEL_COLOURS)])
        if len(names) <= 4:
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(centres, groups)
    ax.set_ylabel("NME (% of inter-ocular distance)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    top = max(100 * max(max(r["per_point"].values()), r["nme_iod"]) for r in report.values())
    ax.set_ylim(0, 1.25 * top if top > 0 else 1.0)
    ax.legend(fontsize=8, loc="upper center", ncols=min(len(names), 6), frameon=False)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- faces
def _as_bgr(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img.copy()
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    raise ValueError(f"image has shape {img.shape}, expected (h, w) grey or (h, w, 3) BGR")


def _one_face(points: Any, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (5, 2):
        raise ValueError(f"{name} has shape {p.shape}, expected (5, 2)")
    return p


def draw_points(image: np.ndarray, points_by_level: Mapping[str, np.ndarray] | np.ndarray, *,
                gt: np.ndarray | None = None, radius: int | None = None) -> np.ndarray:
    """A BGR uint8 copy of ``image`` with the 5 points of one face drawn on it.

    Parameters
    ----------
    image : array (h, w) or (h, w, 3)
        Grey or BGR image; not modified.
    points_by_level : array (5, 2) or mapping of name to (5, 2)
        Predicted points; one array is drawn as red dots, several levels in
        the colours of :data:`LEVEL_COLOURS`.
    gt : array (5, 2), optional
        Ground truth, drawn as green crosses.
    radius : int, optional
        Dot radius in pixels. By default about 1.5% of the shorter image side, but
        at most 4% of the face's extent (that of ``gt``, else of the first
        prediction), so that markers on a small face in a large image stay apart;
        never below 2.

    Examples
    --------
    >>> out = draw_points(np.zeros((40, 60), np.uint8), np.full((5, 2), 20.0))
    >>> out.shape, out.dtype.name, int(out[20, 20, 2])
    ((40, 60, 3), 'uint8', 255)
    """
    out = _as_bgr(image)
    h, w = out.shape[:2]
    if isinstance(points_by_level, Mapping):
        items = [(str(k), _one_face(v, f"points_by_level[{k!r}]"))
                 for k, v in points_by_level.items()]
        colours = ([PRED_BGR] if len(items) == 1 else
                   [_bgr(LEVEL_COLOURS[i % len(LEVEL_COLOURS)]) for i in range(len(items))])
    else:
        items = [("pred", _one_face(points_by_level, "points"))]
        colours = [PRED_BGR]
    if radius is None:
        r = max(2, round(0.015 * min(h, w)))
        face = gt if gt is not None else (items[0][1] if items else None)
        if face is not None:
            extent = np.nanmax(np.ptp(np.asarray(face, dtype=np.float64), axis=0))
            if np.isfinite(extent) and extent > 0:
                r = max(2, min(r, round(0.04 * extent)))
    else:
        r = int(radius)
        if r < 1:
            raise ValueError(f"radius == {radius!r}, must be >= 1")
    thick = max(1, r // 2)
    shift = 4
    if gt is not None:
        for x, y in _one_face(gt, "gt"):
            if np.isfinite([x, y]).all():
                cv2.drawMarker(out, (round(x), round(y)), GT_BGR, cv2.MARKER_CROSS,
                               markerSize=4 * r, thickness=thick, line_type=cv2.LINE_AA)
    for (_, pts), colour in zip(items, colours, strict=True):
        for x, y in pts:
            if np.isfinite([x, y]).all():
                centre = (round(x * (1 << shift)), round(y * (1 << shift)))
                cv2.circle(out, centre, r << shift, colour, -1, cv2.LINE_AA, shift)
    return out


def _crop_window(points: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """A square window (4,) around a face's points (and box), with a margin."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    if box is not None:
        lo, hi = np.minimum(lo, box[:2]), np.maximum(hi, box[2:])
        side = 1.15 * max(hi - lo)
    else:
        side = 1.8 * max(hi - lo)
    side = max(side, 8.0)
    c = (lo + hi) / 2
    return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])


def face_tile(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, *,
              box: np.ndarray | None = None, size: int = 192) -> np.ndarray:
    """A ``size x size`` BGR crop around one face with ``gt`` (crosses) and ``pred`` (dots)."""
    img = _as_bgr(image)
    gt = _one_face(gt, "gt")
    pred = _one_face(pred, "pred")
    b = None if box is None else np.asarray(box, dtype=np.float64).reshape(4)
    both = np.concatenate([gt, pred])
    window = _crop_window(both[np.isfinite(both).all(axis=1)], b)
    m = window_to_output(window[None], (size, size))
    tile = cv2.warpAffine(img, m[0], (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(60, 60, 60))
    moved = apply_affine(np.repeat(m, 2, axis=0), np.stack([gt, pred]))
    return draw_points(tile, moved[1], gt=moved[0])


def _short_label(label: str, width: int = 26) -> str:
    """A tile label that fits over its tile: ``folder/name.jpg:12`` keeps its end."""
    label = str(label).replace("\\", "/")
    return label if len(label) <= width else "\u2026" + label[-(width - 1):]


def plot_face_grid(images: Sequence[np.ndarray], gt: np.ndarray, pred: np.ndarray,
                   errors: np.ndarray, path: str | Path, *, boxes: np.ndarray | None = None,
                   title: str = "", labels: Sequence[str] | None = None, cols: int = 4,
                   tile: int = 192) -> Path:
    """A grid of faces, each cropped around its box and points, labelled with its NME.

    Used for the best and worst faces (:func:`best_and_worst`).

    Parameters
    ----------
    images : sequence of n arrays
        The image of each face (grey or BGR; the same image may repeat).
    gt, pred : array (n, 5, 2)
        Ground truth (green crosses) and prediction (red dots), image pixels.
    errors : array (n,)
        NME of each face (fraction of IOD), shown in % above its tile.
    path : path
        Output PNG, written atomically.
    boxes : array (n, 4), optional
        Face boxes; the crop covers box and points. Without boxes, the points
        with a margin.
    labels : sequence of n str, optional
        Prefix of each tile's label (e.g. the face id).
    """
    n = len(images)
    if n == 0:
        raise ValueError("images is empty; pass at least one face")
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    errors = _errors_1d(errors)
    for name, arr, want in (("gt", gt, (n, 5, 2)), ("pred", pred, (n, 5, 2)),
                            ("errors", errors, (n,))):
        if arr.shape != want:
            raise ValueError(f"{name} has shape {arr.shape}, expected {want} "
                             f"(one per image, {n} images)")
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (n, 4):
            raise ValueError(f"boxes has shape {boxes.shape}, expected ({n}, 4)")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} items, expected {n}")
    cols = max(1, min(int(cols), n))
    rows = -(-n // cols)
    fig = new_figure(2.0 * cols, 2.3 * rows + 0.55)
    for i in range(n):
        t = face_tile(images[i], gt[i], pred[i], box=None if boxes is None else boxes[i],
                      size=tile)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(t[:, :, ::-1], interpolation="nearest")
        ax.set_axis_off()
        label = f"{_short_label(labels[i])}\n" if labels is not None else ""
        ax.set_title(f"{label}NME {100 * errors[i]:.2f}%", fontsize=8)
    key = "green + ground truth,  red \u25cf prediction"
    fig.suptitle(f"{title}\n{key}" if title else key, fontsize=9)
    return save_figure(fig, path)


def best_and_worst(errors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` lowest-error faces (best first) and ``k`` highest (worst first).

    Ties keep the original order; ``k`` is capped at ``n``, so the two sets
    overlap when ``n < 2 k``.

    >>> best_and_worst(np.array([0.3, 0.1, 0.2, 0.5]), 2)
    (array([1, 2]), array([3, 0]))
    """
    e = _errors_1d(errors)
    if int(k) < 0:
        raise ValueError(f"k == {k!r}, must be >= 0")
    if np.isnan(e).any():
        raise ValueError("errors contains NaN")
    k = min(int(k), e.size)
    return np.argsort(e, kind="stable")[:k], np.argsort(-e, kind="stable")[:k]
