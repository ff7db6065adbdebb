"""Vectorised face geometry: boxes, windows, relative coordinates, affine maps, mirroring.

Conventions (used by every module):

- A point is ``(x, y)`` in pixel-index coordinates of its image: the centre of
  pixel ``(i, j)`` is at ``x = i, y = j``. Points are arrays of shape
  ``(n, k, 2)`` (``k = 5`` for a whole face, in the order LE, RE, N, LM, RM
  where "left" is the image's left).
- A box or window is ``(left, top, right, bottom)``; arrays have shape ``(n, 4)``.
- Relative coordinates inside a window (paper eq. 9): ``x' = (x - left) / w``,
  ``y' = (y - top) / h``; 0..1 inside the window.
- An affine map is a ``(n, 2, 3)`` array acting on column vectors ``(x, y, 1)``.
  Images and points are moved with the same matrix.
"""

from __future__ import annotations

import numpy as np

POINT_NAMES = ("LE", "RE", "N", "LM", "RM")
#: permutation applied to the points when the image is mirrored left-right
MIRROR_PERMUTATION = np.array([1, 0, 2, 4, 3])


def box_size(boxes: np.ndarray) -> np.ndarray:
    """Width and height ``(n, 2)`` of boxes ``(n, 4)``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return boxes[:, 2:] - boxes[:, :2]


def box_center(boxes: np.ndarray) -> np.ndarray:
    """Centre ``(n, 2)`` of boxes ``(n, 4)``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def boxes_from_center(center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Boxes ``(n, 4)`` from centres ``(n, 2)`` and sizes ``(n, 2)`` (or ``(n,)`` for squares)."""
    center = np.asarray(center, dtype=np.float64)
    half = np.asarray(size, dtype=np.float64) / 2
    if half.ndim == 1:
        half = half[:, None]
    return np.concatenate([center - half, center + half], axis=1)


def sub_box(boxes: np.ndarray, fractions: tuple[float, float, float, float]) -> np.ndarray:
    """Part of each box given as fractions ``(x0, y0, x1, y1)`` of its width and height.

    >>> sub_box(np.array([[10., 20., 50., 60.]]), (0, 0, 1, 0.5)).tolist()
    [[10.0, 20.0, 50.0, 40.0]]
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    wh = box_size(boxes)
    x0, y0, x1, y1 = fractions
    return np.stack([
        boxes[:, 0] + x0 * wh[:, 0], boxes[:, 1] + y0 * wh[:, 1],
        boxes[:, 0] + x1 * wh[:, 0], boxes[:, 1] + y1 * wh[:, 1],
    ], axis=1)


def windows_around(points: np.ndarray, frames: np.ndarray, half: tuple[float, float]) -> np.ndarray:
    """Windows centred on ``points (n, 2)`` with half-sizes ``(a * w, b * h)`` of ``frames``.

    This is paper eq. 5: a level-2/3 window around the previous estimate, its
    size a fraction of the face frame.
    """
    points = np.asarray(points, dtype=np.float64)
    wh = box_size(frames)
    a, b = half
    return boxes_from_center(points, 2 * np.stack([a * wh[:, 0], b * wh[:, 1]], axis=1))


def shake(windows: np.ndarray, frames: np.ndarray, sigma: float,
          rng: np.random.Generator) -> np.ndarray:
    """Shift each window by ``N(0, sigma^2)`` times its frame's size, in x and y independently."""
    windows = np.asarray(windows, dtype=np.float64)
    offsets = rng.normal(0.0, sigma, size=(len(windows), 2)) * box_size(frames)
    return windows + np.concatenate([offsets, offsets], axis=1)


def to_rel(points_abs: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Absolute points ``(n, k, 2)`` to coordinates relative to ``windows (n, 4)``."""
    points_abs = np.asarray(points_abs, dtype=np.float64)
    windows = np.asarray(windows, dtype=np.float64)
    origin = windows[:, None, 0:2]
    return (points_abs - origin) / box_size(windows)[:, None, :]


def to_abs(points_rel: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Relative points ``(n, k, 2)`` in ``windows (n, 4)`` back to absolute coordinates."""
    points_rel = np.asarray(points_rel, dtype=np.float64)
    windows = np.asarray(windows, dtype=np.float64)
    return points_rel * box_size(windows)[:, None, :] + windows[:, None, 0:2]


def mirror_points(points: np.ndarray, widths: np.ndarray | float) -> np.ndarray:
    """Mirror 5-point faces ``(n, 5, 2)`` in images of the given widths; swaps left/right labels.

    ``x' = width - 1 - x`` (the map of ``cv2.flip(img, 1)``), then LE<->RE and
    LM<->RM so that "left" stays the image's left. Mirroring twice is the identity.
    """
    points = np.array(points, dtype=np.float64, copy=True)
    widths = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(points),))
    points[..., 0] = widths[:, None] - 1 - points[..., 0]
    return points[:, MIRROR_PERMUTATION]


def mirror_boxes(boxes: np.ndarray, widths: np.ndarray | float) -> np.ndarray:
    """Boxes ``(n, 4)`` mirrored in images of the given widths (left and right exchange)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    widths = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(boxes),))
    return np.stack([widths - 1 - boxes[:, 2], boxes[:, 1], widths - 1 - boxes[:, 0], boxes[:, 3]],
                    axis=1)


def mirror_matrix(widths: np.ndarray | float, n: int | None = None) -> np.ndarray:
    """Affine maps ``(n, 2, 3)`` of a left-right flip of images of the given widths."""
    widths = np.atleast_1d(np.asarray(widths, dtype=np.float64))
    if n is not None:
        widths = np.broadcast_to(widths, (n,))
    m = np.zeros((len(widths), 2, 3))
    m[:, 0, 0] = -1.0
    m[:, 0, 2] = widths - 1
    m[:, 1, 1] = 1.0
    return m


def similarity(center: np.ndarray, angle_deg: np.ndarray | float, scale: np.ndarray | float = 1.0,
               shift: np.ndarray | None = None) -> np.ndarray:
    """Rotation by ``angle_deg`` (counter-clockwise on screen) and scaling about ``center``,
    then translation by ``shift``: one ``(n, 2, 3)`` matrix for image and points (paper eq. 8).
    """
    center = np.atleast_2d(np.asarray(center, dtype=np.float64))
    n = len(center)
    theta = np.deg2rad(np.broadcast_to(np.asarray(angle_deg, dtype=np.float64), (n,)))
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
    shift = np.zeros((n, 2)) if shift is None else np.broadcast_to(
        np.asarray(shift, dtype=np.float64), (n, 2))
    # image y points down, so a screen-counter-clockwise rotation is R(-theta) in these axes
    c, si = np.cos(theta) * s, np.sin(theta) * s
    m = np.empty((n, 2, 3))
    m[:, 0, 0], m[:, 0, 1] = c, si
    m[:, 1, 0], m[:, 1, 1] = -si, c
    lin = m[:, :, :2]
    m[:, :, 2] = center - np.einsum("nij,nj->ni", lin, center) + shift
    return m


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The map ``outer(inner(p))`` of two ``(n, 2, 3)`` affine maps."""
    outer = np.asarray(outer, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.float64)
    lin = np.einsum("nij,njk->nik", outer[:, :, :2], inner[:, :, :2])
    t = np.einsum("nij,nj->ni", outer[:, :, :2], inner[:, :, 2]) + outer[:, :, 2]
    return np.concatenate([lin, t[:, :, None]], axis=2)


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of affine maps ``(n, 2, 3)``."""
    m = np.asarray(m, dtype=np.float64)
    lin = np.linalg.inv(m[:, :, :2])
    t = -np.einsum("nij,nj->ni", lin, m[:, :, 2])
    return np.concatenate([lin, t[:, :, None]], axis=2)


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``(n, 2, 3)`` maps to points ``(n, k, 2)``."""
    m = np.asarray(m, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return np.einsum("nij,nkj->nki", m[:, :, :2], points) + m[:, None, :, 2]


def window_to_output(windows: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Maps ``(n, 2, 3)`` taking each window onto an output image of ``out_size = (W, H)``.

    The window's edges land on the output's pixel edges, so relative coordinate
    ``r`` lands at output pixel-index ``r * W - 0.5``.
    """
    windows = np.asarray(windows, dtype=np.float64)
    w_out, h_out = out_size
    wh = box_size(windows)
    m = np.zeros((len(windows), 2, 3))
    m[:, 0, 0] = w_out / wh[:, 0]
    m[:, 1, 1] = h_out / wh[:, 1]
    m[:, 0, 2] = -windows[:, 0] * m[:, 0, 0] - 0.5
    m[:, 1, 2] = -windows[:, 1] * m[:, 1, 1] - 0.5
    return m


def transform_boxes(m: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Axis-aligned bounds ``(n, 4)`` of boxes moved by affine maps ``(n, 2, 3)``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]],
                       axis=1)
    moved = apply_affine(m, corners)
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """Distance ``(n,)`` between the two eye centres of faces ``(n, 5, 2)``."""
    points = np.asarray(points, dtype=np.float64)
    return np.linalg.norm(points[:, 0] - points[:, 1], axis=1)
