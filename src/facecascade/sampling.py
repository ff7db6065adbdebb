"""Vectorised crop sampling: the windows of every face and every network of a level at once.

The reference crops (:func:`facecascade.crops.cut`) call ``cv2.warpAffine`` once
per window (``INTER_LINEAR``, ``BORDER_REPLICATE``) with the map
:func:`facecascade.geometry.window_to_output`. At inference every window is
axis-aligned, so the source column of an output pixel depends only on its
column and the source row only on its row. :func:`sampling_grids` computes, in
a few numpy operations over all ``n`` faces and ``m`` windows, the source
columns ``(n, m, W)`` and rows ``(n, m, H)`` exactly as ``warpAffine`` does:

- the map is inverted in double precision (``D = 1 / (a d)``, ``A = d D``,
  ``b = -A t``);
- source coordinates are rounded to 1/1024 pixel (``AB_BITS = 10``), then
  truncated to 1/32 pixel (``INTER_BITS = 5``): an integer pixel and a 1/32
  fraction per axis.

:func:`sample_windows` then writes these grids as OpenCV's fixed-point remap
maps (``CV_16SC2`` pixel coordinates and ``CV_16UC1`` fraction indices, the maps
``warpAffine`` builds internally) and cuts every window of an image with one
``cv2.remap`` call. The crops are the reference crops to the bit
(``tests/test_sampling.py`` checks this against ``cv2.warpAffine``), not merely
close to them, so the fast path sees exactly the pixels the reference sees.

Examples
--------
>>> img = (np.arange(16, dtype=np.uint8) * 10).reshape(4, 4)
>>> sample_windows([img], np.array([0]), np.array([[[0.0, 0.0, 4.0, 4.0]]]), (2, 2))[0, 0]
array([[ 50,  70],
       [130, 150]], dtype=uint8)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numba
import numpy as np

#: OpenCV's fixed-point constants of ``warpAffine`` / ``remap`` (``imgwarp.cpp``)
AB_BITS = 10
INTER_BITS = 5
_INTER_TAB = 1 << INTER_BITS
_ROUND_DELTA = (1 << AB_BITS) // _INTER_TAB // 2


def sampling_grids(windows: np.ndarray, out_size: tuple[int, int],
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source pixels and 1/32 fractions of the crops of axis-aligned ``windows``.

    Parameters
    ----------
    windows : array (n, m, 4)
        Windows (left, top, right, bottom).
    out_size : (int, int) or array (m, 2)
        Crop ``(W, H)``, or one per window; window edges land on the crop's pixel
        edges (:func:`facecascade.geometry.window_to_output`).

    Returns
    -------
    ix, fx : int64 arrays (n, m, W)  (W, H: the largest sizes; a smaller crop uses the first)
        Source column of each crop column and its fraction in 1/32 pixel.
    iy, fy : int64 arrays (n, m, H)
        The same for rows.
    """
    sizes = np.asarray(out_size, np.float64)  # (2,) or (m, 2)
    w_out, h_out = (int(v) for v in sizes.reshape(-1, 2).max(axis=0))
    windows = np.asarray(windows, np.float64)
    lt, rb = windows[..., :2], windows[..., 2:]
    # window_to_output: out = s * x + t with s = W / w, t = -left * s - 0.5 (per axis)
    scale = sizes / (rb - lt)
    shift = -lt * scale - 0.5
    # warpAffine's inverse of diag(sx, sy): D = 1 / (sx sy), A_x = sy D, A_y = sx D, b = -A t
    inv_det = 1.0 / (scale[..., 0] * scale[..., 1])
    a = scale[..., ::-1] * inv_det[..., None]
    b = (-a * shift) * (1 << AB_BITS)
    ramp = (a * (1 << AB_BITS))[..., None] * np.arange(max(w_out, h_out), dtype=np.float64)
    # x: round(b 1024) + round(A x 1024), per column; y: round((A y + b) 1024), per row
    fixed_x = np.rint(ramp[..., 0, :w_out]).astype(np.int64) + np.rint(b[..., 0:1]).astype(np.int64)
    fixed_y = np.rint(ramp[..., 1, :h_out] + b[..., 1:2]).astype(np.int64)
    fixed_x = (fixed_x + _ROUND_DELTA) >> (AB_BITS - INTER_BITS)
    fixed_y = (fixed_y + _ROUND_DELTA) >> (AB_BITS - INTER_BITS)
    return (fixed_x >> INTER_BITS, fixed_x & (_INTER_TAB - 1),
            fixed_y >> INTER_BITS, fixed_y & (_INTER_TAB - 1))


def remap_maps(windows: np.ndarray, out_size: tuple[int, int] | np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV fixed-point remap maps of the crops: ``(n, m, H, W, 2)`` int16 and ``(n, m, H, W)``
    uint16 (fraction index ``32 fy + fx``), as ``warpAffine`` builds them (sizes as
    :func:`sampling_grids`)."""
    ix, fx, iy, fy = sampling_grids(windows, out_size)
    n, m, w_out = ix.shape
    h_out = iy.shape[2]
    if min(ix.min(initial=0), iy.min(initial=0)) < -32768 or \
            max(ix.max(initial=0), iy.max(initial=0)) > 32767:
        ix, iy = np.clip(ix, -32768, 32767), np.clip(iy, -32768, 32767)  # as warpAffine: short
    xy = np.empty((n, m, h_out, w_out, 2), np.int16)
    xy[..., 0] = ix[:, :, None, :]
    xy[..., 1] = iy[:, :, :, None]
    alpha = np.empty((n, m, h_out, w_out), np.uint16)
    np.add((fy << INTER_BITS)[..., None], fx[:, :, None, :], out=alpha, casting="unsafe")
    return xy, alpha


def sample_windows(grays: Sequence[np.ndarray], image_index: np.ndarray, windows: np.ndarray,
                   out_size: tuple[int, int]) -> np.ndarray:
    """Crops ``(n, m, H, W)`` uint8 of ``m`` windows per face, one ``cv2.remap`` per image.

    Parameters
    ----------
    grays : sequence of uint8 (H, W) arrays
        Grey images.
    image_index : array (n,)
        Image of each face.
    windows : array (n, m, 4)
        Axis-aligned windows (left, top, right, bottom) in their image's pixels.
    out_size : (int, int)
        Crop ``(W, H)``.

    Returns
    -------
    ndarray
        The same bytes as ``crops.cut(gray, geometry.window_to_output(windows[i], out_size),
        out_size)`` for each face ``i`` (border pixels repeated).
    """
    windows = np.asarray(windows, np.float64)
    return sample_groups(grays, image_index, windows, [(tuple(out_size), windows.shape[1])])[0]


def sample_groups(grays: Sequence[np.ndarray], image_index: np.ndarray, windows: np.ndarray,
                  groups: Sequence[tuple[tuple[int, int], int]]) -> list[np.ndarray]:
    """Crops of windows in groups of crop sizes, in as few ``cv2.remap`` calls as possible.

    ``windows (n, m, 4)`` are ordered by group; ``groups`` lists ``((W, H), count)``.
    Returns one ``(n, count, H, W)`` uint8 array per group (see :func:`sample_windows`).
    Groups of the same crop width share one remap call per image (their rows stacked).
    """
    windows = np.asarray(windows, np.float64)
    n = windows.shape[0]
    widths = {size[0] for size, _ in groups}
    if len(widths) > 1:
        out, start = [], 0
        for size, count in groups:
            out.extend(sample_groups(grays, image_index, windows[:, start:start + count],
                                     [(size, count)]))
            start += count
        return out
    w_out = widths.pop()
    sizes = np.array([size for size, count in groups for _ in range(count)], np.float64)
    xy, alpha = remap_maps(windows, sizes if len(groups) > 1 else sizes[0])
    h_max = xy.shape[2]
    if any(size[1] != h_max for size, _ in groups):  # keep each window's own rows
        parts, start = [], 0
        for (_, h), count in groups:
            parts.append((xy[:, start:start + count, :h].reshape(n, -1, w_out, 2),
                          alpha[:, start:start + count, :h].reshape(n, -1, w_out)))
            start += count
        xy = np.concatenate([p[0] for p in parts], axis=1)
        alpha = np.concatenate([p[1] for p in parts], axis=1)
    rows = int(sum(size[1] * count for size, count in groups))
    xy, alpha = xy.reshape(n, rows, w_out, 2), alpha.reshape(n, rows, w_out)
    crops = np.empty((n, rows, w_out), np.uint8)
    image_index = np.asarray(image_index, np.int64)
    if n:
        if len(grays) == 1 or (image_index == image_index[0]).all():
            faces = [np.arange(n)]
        else:
            order = np.argsort(image_index, kind="stable")
            faces = np.split(order, np.flatnonzero(np.diff(image_index[order])) + 1)
        for sel in faces:
            img = grays[int(image_index[sel[0]])]
            if img.ndim != 2 or img.dtype != np.uint8:
                raise ValueError(f"image {int(image_index[sel[0]])}: expected a grey uint8 "
                                 f"(H, W) image, got {img.dtype} {img.shape}")
            if len(faces) == 1:
                cv2.remap(img, xy.reshape(-1, w_out, 2), alpha.reshape(-1, w_out),
                          cv2.INTER_LINEAR, dst=crops.reshape(-1, w_out),
                          borderMode=cv2.BORDER_REPLICATE)
            else:
                crops[sel] = cv2.remap(img, xy[sel].reshape(-1, w_out, 2),
                                       alpha[sel].reshape(-1, w_out), cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE).reshape(len(sel), rows,
                                                                                w_out)
    out, row = [], 0
    for (_, h), count in groups:
        out.append(crops[:, row:row + h * count].reshape(n, count, h, w_out))
        row += h * count
    return out


# ---------------------------------------------------------------------------- compiled path

@numba.njit(cache=True, nogil=True)
def _axis_taps(n_out: int, a1024: float, b1024: float, rint_b_first: bool, size: int,
               i0: np.ndarray, i1: np.ndarray, frac: np.ndarray) -> None:
    """Source pixels (border-clamped) and 1/32 fractions along one axis of a crop,
    with ``warpAffine``'s fixed-point rounding (:func:`sampling_grids`, bit for bit)."""
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


@dataclass(frozen=True)
class CropLayout:
    """Where each window's crop goes: groups of ``((W, H), count)``; per window its crop
    size ``sizes (m, 2)``, its ``group`` and its ``slot`` in the group (:func:`crop_groups`)."""

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


def crop_groups(grays: Sequence[np.ndarray], image_index: np.ndarray, windows: np.ndarray,
                groups: Sequence[tuple[tuple[int, int], int]] | CropLayout, *,
                min_std: float | None = None) -> list[np.ndarray]:
    """:func:`sample_groups` compiled, as float32, standardised when ``min_std`` is given.

    One compiled pass per image cuts every window of its faces with ``warpAffine``'s
    arithmetic (the same bytes as :func:`sample_groups`) and, with ``min_std``,
    standardises each crop as :func:`facecascade.crops.standardise` (minus its mean,
    over its std floored at ``min_std``; computed in float64). It runs without the GIL.

    Returns one ``(n, count, H, W)`` float32 array per group.

    Examples
    --------
    >>> img = (np.arange(16, dtype=np.uint8) * 10).reshape(4, 4)
    >>> crop_groups([img], np.array([0]), np.array([[[0.0, 0.0, 4.0, 4.0]]]),
    ...             [((2, 2), 1)])[0][0, 0].tolist()
    [[50.0, 70.0], [130.0, 150.0]]
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
