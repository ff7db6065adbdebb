"""The fast path's compiled passes: a level's windows and crops for many faces at once.

:func:`level_windows` places every net's window for every face (the arithmetic of
:func:`facecascade.crops.patch_frames` and :func:`facecascade.crops.net_windows`, bit for
bit); :func:`crop_groups` cuts them. Both are numba-compiled (``cache=True``); loading
them costs a process about 0.6 s, which :class:`facecascade.fastpath.FastCascade` spends
only on calls of many faces (``compiled``).

The reference crops (:func:`facecascade.crops.cut`) call ``cv2.warpAffine`` once
per window (``INTER_LINEAR``, ``BORDER_REPLICATE``) with the map
:func:`facecascade.geometry.window_to_output`. At inference every window is
axis-aligned, so the source column of an output pixel depends only on its
column and the source row only on its row. :func:`crop_groups` reproduces
``warpAffine``'s arithmetic per window, in one compiled pass per image (numba,
``cache=True``, without the GIL):

- the map is inverted in double precision (``D = 1 / (a d)``, ``A = d D``,
  ``b = -A t``);
- source coordinates are rounded to 1/1024 pixel (``AB_BITS = 10``), then
  truncated to 1/32 pixel (``INTER_BITS = 5``): an integer pixel and a 1/32
  fraction per axis, the pixel kept in a short as in OpenCV's maps;
- the pixel is interpolated as ``remap`` does for 8-bit images: weights
  ``(32 - f) / 32`` and ``f / 32`` per axis in fixed point, rounded; pixels outside
  the image repeat the border.

The crops are the reference crops to the bit (``tests/test_sampling.py`` checks this
against ``cv2.warpAffine``), not merely close to them, so the fast path sees exactly
the pixels the reference sees; they can then be standardised in the same pass.

Examples
--------
>>> img = (np.arange(16, dtype=np.uint8) * 10).reshape(4, 4)
>>> crop_groups([img], np.array([0]), np.array([[[0.0, 0.0, 4.0, 4.0]]]),
...             [((2, 2), 1)])[0][0, 0].tolist()
[[50.0, 70.0], [130.0, 150.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

from .plans import CropLayout, LevelPlan

#: OpenCV's fixed-point constants of ``warpAffine`` / ``remap`` (``imgwarp.cpp``)
AB_BITS = 10
INTER_BITS = 5
_INTER_TAB = 1 << INTER_BITS
_ROUND_DELTA = (1 << AB_BITS) // _INTER_TAB // 2


@numba.njit(cache=True, nogil=True)
def _axis_taps(n_out: int, a1024: float, b1024: float, rint_b_first: bool, size: int,
               i0: np.ndarray, i1: np.ndarray, frac: np.ndarray) -> None:
    """Source pixels (border-clamped) and 1/32 fractions along one axis of a crop,
    with ``warpAffine``'s fixed-point rounding, bit for bit."""
    rb = np.int64(np.rint(b1024))
    for k in range(n_out):
        if rint_b_first:  # x: round(A x 1024) + round(b 1024)
            fixed = np.int64(np.rint(a1024 * k)) + rb
        else:  # y: round(A y 1024 + b 1024)
            fixed = np.int64(np.rint(a1024 * k + b1024))
        fixed = (fixed + _ROUND_DELTA) >> (AB_BITS - INTER_BITS)
        pix = min(max(fixed >> INTER_BITS, -32768), 32767)  # warpAffine's short maps
        frac[k] = fixed & (_INTER_TAB - 1)
        i0[k] = min(max(pix, 0), size - 1)  # BORDER_REPLICATE
        i1[k] = min(max(pix + 1, 0), size - 1)


@numba.njit(cache=True, nogil=True)
def _crop_faces(img: np.ndarray, rows: np.ndarray, windows: np.ndarray, sizes: np.ndarray,
                group: np.ndarray, slot: np.ndarray, outs: Any, min_std: float,
                standardise: bool) -> None:
    """Crops of the faces ``rows`` of one image into ``outs[group[j]][row, slot[j]]``."""
    height, width = img.shape
    w_max, h_max = sizes[:, 0].max(), sizes[:, 1].max()
    x0, x1, fx = (np.empty(w_max, np.int64), np.empty(w_max, np.int64),
                  np.empty(w_max, np.int64))
    y0, y1, fy = (np.empty(h_max, np.int64), np.empty(h_max, np.int64),
                  np.empty(h_max, np.int64))
    for row in rows:
        for j in range(windows.shape[1]):
            w_out, h_out = sizes[j, 0], sizes[j, 1]
            left, top = windows[row, j, 0], windows[row, j, 1]
            # window_to_output: out = s x + t, s = W / w, t = -left s - 0.5; warpAffine's
            # inverse of diag(sx, sy): D = 1 / (sx sy), A_x = sy D, A_y = sx D, b = -A t
            sx = w_out / (windows[row, j, 2] - left)
            sy = h_out / (windows[row, j, 3] - top)
            tx, ty = -left * sx - 0.5, -top * sy - 0.5
            inv_det = 1.0 / (sx * sy)
            ax, ay = sy * inv_det, sx * inv_det
            _axis_taps(w_out, ax * (1 << AB_BITS), (-ax * tx) * (1 << AB_BITS), True, width,
                       x0, x1, fx)
            _axis_taps(h_out, ay * (1 << AB_BITS), (-ay * ty) * (1 << AB_BITS), False, height,
                       y0, y1, fy)
            out = outs[group[j]][row, slot[j]]
            total, squares = 0, 0
            for y in range(h_out):
                wy = fy[y]
                r0, r1 = img[y0[y]], img[y1[y]]
                for x in range(w_out):
                    wx, a, b = fx[x], x0[x], x1[x]
                    # remap's bilinear: weights (32 - f) and f per axis, products over 1024
                    v = ((_INTER_TAB - wy) * ((_INTER_TAB - wx) * np.int32(r0[a])
                                              + wx * np.int32(r0[b]))
                         + wy * ((_INTER_TAB - wx) * np.int32(r1[a]) + wx * np.int32(r1[b]))
                         + 512) >> 10
                    out[y, x] = v
                    total += v
                    squares += v * v
            if standardise:  # integer sums: exact mean and variance
                n = h_out * w_out
                mean = total / n
                std = max(np.sqrt(max(squares / n - mean * mean, 0.0)), min_std)
                for y in range(h_out):
                    for x in range(w_out):
                        out[y, x] = (out[y, x] - mean) / std


def crop_groups(grays: Sequence[np.ndarray], image_index: np.ndarray, windows: np.ndarray,
                groups: Sequence[tuple[tuple[int, int], int]] | CropLayout, *,
                min_std: float | None = None) -> list[np.ndarray]:
    """The crops of ``windows (n, m, 4)`` (left, top, right, bottom in their image's
    pixels; ``m`` windows per face, ordered by group) as float32 arrays, one
    ``(n, count, H, W)`` per group of ``groups`` (``((W, H), count)``, or a
    :class:`CropLayout`). ``image_index (n,)`` is the image of each face in ``grays``
    (grey uint8 images).

    Each crop holds the bytes ``warpAffine`` cuts for its window (module docstring).
    With ``min_std`` it is standardised as :func:`facecascade.crops.standardise` does
    (minus its mean, over its std floored at ``min_std``), from exact integer sums
    (within about 1e-6 of that function's float32 arithmetic).
    """
    windows = np.asarray(windows, np.float64)
    n, m = windows.shape[:2]
    layout = groups if isinstance(groups, CropLayout) else CropLayout.of(groups)
    if layout.sizes.shape != (m, 2):
        raise ValueError(f"windows have {m} nets per face, the groups {len(layout.sizes)}")
    outs = tuple(np.empty((n, count, h, w), np.float32) for (w, h), count in layout.groups)
    if n == 0:
        return list(outs)
    image_index = np.asarray(image_index, np.int64)
    if len(grays) == 1 or (image_index == image_index[0]).all():
        parts = [np.arange(n)]
    else:
        order = np.argsort(image_index, kind="stable")
        parts = np.split(order, np.flatnonzero(np.diff(image_index[order])) + 1)
    std = -1.0 if min_std is None else float(min_std)
    for rows in parts:
        i = int(image_index[rows[0]])
        img = grays[i]
        if img.ndim != 2 or img.dtype != np.uint8:
            raise ValueError(f"image {i}: expected a grey uint8 (H, W) image, got "
                             f"{img.dtype} {img.shape}")
        _crop_faces(np.ascontiguousarray(img), rows, windows, layout.sizes, layout.group,
                    layout.slot, outs, std, min_std is not None)
    return list(outs)


# ---------------------------------------------------------------------------- windows

@numba.njit(cache=True, nogil=True)
def _level_windows(frames: np.ndarray, prev: np.ndarray, fractions: np.ndarray,
                   anchors: np.ndarray, points_scale: float, windows: np.ndarray,
                   patch: np.ndarray) -> None:
    for i in range(frames.shape[0]):
        left, top, right, bottom = frames[i, 0], frames[i, 1], frames[i, 2], frames[i, 3]
        if points_scale > 0:  # frame.points_frame, operation for operation
            p = prev[i]
            dx, dy = p[1, 0] - p[0, 0], p[1, 1] - p[0, 1]
            iod = np.sqrt(dx * dx + dy * dy)
            dx = (p[3, 0] + p[4, 0]) / 2 - (p[0, 0] + p[1, 0]) / 2
            dy = (p[3, 1] + p[4, 1]) / 2 - (p[0, 1] + p[1, 1]) / 2
            size = points_scale * np.sqrt(iod * np.sqrt(dx * dx + dy * dy))
            side = np.sqrt((right - left) * (bottom - top))
            size = min(max(size, 0.5 * side), 2.0 * side)
            cx, cy, half = (left + right) / 2, (top + bottom) / 2, size / 2
            left, top, right, bottom = cx - half, cy - half, cx + half, cy + half
        patch[i, 0], patch[i, 1], patch[i, 2], patch[i, 3] = left, top, right, bottom
        w, h = right - left, bottom - top
        for j in range(fractions.shape[0]):
            if anchors[j] < 0:
                ax, ay = left, top
            else:
                ax, ay = prev[i, anchors[j], 0], prev[i, anchors[j], 1]
            windows[i, j, 0] = ax + fractions[j, 0] * w
            windows[i, j, 1] = ay + fractions[j, 1] * h
            windows[i, j, 2] = ax + fractions[j, 2] * w
            windows[i, j, 3] = ay + fractions[j, 3] * h


def level_windows(plan: LevelPlan, frames: np.ndarray, prev: np.ndarray,
                  points_scale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``(n, m, 4)`` of the plan's nets and the patch frames ``(n, 4)`` they use.

    ``frames`` are the faces' box frames; with ``points_scale > 0`` (``frame.patches:
    points``, levels 2 and 3) the patch frames are
    :func:`facecascade.frame.points_frame` of ``prev``, else ``frames``. A level-1 window
    is anchored at its frame's top-left corner, a patch window at the previous estimate
    of its point. The same numbers as :func:`facecascade.crops.patch_frames` and
    :func:`facecascade.crops.net_windows`, bit for bit, in one compiled pass.
    """
    frames = np.ascontiguousarray(frames, np.float64)
    n, m = len(frames), len(plan.order)
    windows, patch = np.empty((n, m, 4)), np.empty((n, 4))
    _level_windows(frames, np.ascontiguousarray(prev, np.float64), plan.fractions,
                   plan.anchors, float(points_scale), windows, patch)
    return windows, patch
