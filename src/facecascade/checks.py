"""Boundary validators: convert once, name the culprit, trust the result afterwards.

Each ``check_*`` function takes what a caller passed in (a list, an array of
another dtype or layout), converts it to the one form the library works with,
and raises with a message that names the argument, its shape or the first bad
index, and where useful the fix (in the manner of scikit-learn's
``check_array``). Call them at the boundary (readers, public entry points, the
CLI), never inside inner loops.

=============  ==========================  =====================================
function       accepts                     returns
=============  ==========================  =====================================
check_points   (n, 5, 2), (5, 2), (n, 10)  float64 (n, 5, 2), finite
check_boxes    (n, 4), (4,)                float64 (n, 4) left, top, right, bottom
check_image    (H, W), (H, W, 1|3)         uint8 (H, W) grey or (H, W, 3) BGR
=============  ==========================  =====================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_POINTS = 5


def _as_float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 array, or a TypeError naming ``name`` and the dtype found."""
    if x is None:
        raise TypeError(f"{name} is None; expected an array of numbers")
    arr = np.asarray(x)
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must contain numbers only; got dtype object") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _first_bad_row(bad: np.ndarray) -> int:
    """Index of the first row of ``bad`` (rows x anything) holding a True."""
    rows = bad.reshape(len(bad), -1).any(axis=1)
    return int(np.flatnonzero(rows)[0])


def _check_finite(arr: np.ndarray, name: str, what: str) -> None:
    if np.isfinite(arr).all():
        return
    i = _first_bad_row(~np.isfinite(arr))
    kind = "NaN" if np.isnan(arr[i]).any() else "an infinite value"
    n_bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(axis=1).sum())
    raise ValueError(f"{name} contains {kind} at {what} {i} ({n_bad} {what}(s) not finite in all)")


def check_points(points: Any, *, name: str = "points") -> np.ndarray:
    """Validate 5-point faces and return them as float64 ``(n, 5, 2)``.

    Parameters
    ----------
    points : array-like
        ``(n, 5, 2)`` points (LE, RE, N, LM, RM; x then y), a single face
        ``(5, 2)``, or flat rows ``(n, 10)`` as ``x1 y1 x2 y2 ... x5 y5``.
    name : str
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(n, 5, 2)``; ``n`` may be 0.

    Raises
    ------
    TypeError
        Not numeric.
    ValueError
        Wrong shape, or a NaN or infinite coordinate (the first bad face is named).

    Examples
    --------
    >>> check_points([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]).shape
    (1, 5, 2)
    >>> check_points(np.zeros((3, 10))).shape
    (3, 5, 2)
    """
    arr = _as_float_array(points, name)
    if arr.ndim == 2 and arr.shape == (N_POINTS, 2):
        arr = arr[None]
    elif arr.ndim == 2 and arr.shape[1] == 2 * N_POINTS:
        arr = arr.reshape(len(arr), N_POINTS, 2)
    elif arr.ndim == 1:
        hint = f" Use {name}.reshape(1, 10) for a single face." if arr.size == 10 else ""
        raise ValueError(
            f"Expected {name} of shape (n, 5, 2), (5, 2) or (n, 10); got a 1-D array of "
            f"shape {arr.shape}.{hint}")
    elif arr.ndim != 3 or arr.shape[1:] != (N_POINTS, 2):
        raise ValueError(
            f"Expected {name} of shape (n, 5, 2), (5, 2) or (n, 10); got shape {arr.shape}")
    _check_finite(arr, name, "face")
    return np.ascontiguousarray(arr)


def check_boxes(boxes: Any, *, name: str = "boxes", min_size: float = 0.0) -> np.ndarray:
    """Validate boxes and return them as float64 ``(n, 4)`` (left, top, right, bottom).

    Parameters
    ----------
    boxes : array-like
        ``(n, 4)`` boxes, or one box ``(4,)``, as left, top, right, bottom in pixels.
    name : str
        Name used in error messages.
    min_size : float
        Width and height must both be greater than this (default 0: not empty).

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(n, 4)``.

    Raises
    ------
    TypeError
        Not numeric.
    ValueError
        Wrong shape, NaN/inf, an inverted box (right < left or bottom < top) or a
        degenerate one (width or height <= ``min_size``); the first culprit's
        index and values are in the message.

    Examples
    --------
    >>> check_boxes([10, 20, 50, 60]).tolist()
    [[10.0, 20.0, 50.0, 60.0]]
    >>> check_boxes([[50, 20, 10, 60]])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: boxes[0] is inverted: right (10.0) < left (50.0); ...
    """
    arr = _as_float_array(boxes, name)
    if arr.ndim == 1 and arr.shape == (4,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(
            f"Expected {name} of shape (n, 4) as (left, top, right, bottom); got shape {arr.shape}")
    if np.isfinite(arr).all() and (arr[:, 2:] - arr[:, :2] > min_size).all():
        return np.ascontiguousarray(arr)  # the common case, in few operations
    _check_finite(arr, name, "box")
    w = arr[:, 2] - arr[:, 0]
    h = arr[:, 3] - arr[:, 1]
    inverted = (w < 0) | (h < 0)
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        left, top, right, bottom = arr[i].tolist()
        detail = (f"right ({right}) < left ({left})" if w[i] < 0
                  else f"bottom ({bottom}) < top ({top})")
        raise ValueError(f"{name}[{i}] is inverted: {detail}; boxes are (left, top, right, bottom)")
    small = (w <= min_size) | (h <= min_size)
    if small.any():
        i = int(np.flatnonzero(small)[0])
        raise ValueError(
            f"{name}[{i}] is degenerate: width {w[i]:g} x height {h[i]:g}, "
            f"both must be > {min_size:g} ({int(small.sum())} such box(es))")
    return np.ascontiguousarray(arr)


def check_image(img: Any, *, name: str = "image") -> np.ndarray:
    """Validate one decoded image: uint8, 2-D grey or 3-channel BGR.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` grey, ``(H, W, 1)`` (squeezed to grey) or ``(H, W, 3)`` BGR, dtype uint8.
    name : str
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
        C-contiguous uint8 ``(H, W)`` or ``(H, W, 3)``.

    Raises
    ------
    TypeError
        ``None`` (what ``cv2.imread`` returns for an unreadable file) or a dtype other than uint8.
    ValueError
        Wrong number of dimensions or channels, or an empty image.

    Examples
    --------
    >>> check_image(np.zeros((4, 6), np.uint8)).shape
    (4, 6)
    """
    if img is None:
        raise TypeError(f"{name} is None (cv2.imread returns None for a file it cannot read); "
                        "use facecascade.images.load_image for a reason")
    if not isinstance(img, np.ndarray):
        img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(
            f"{name} must have dtype uint8, got {img.dtype}; load images with "
            "facecascade.images.load_image, or scale to 0..255 and use .astype(np.uint8)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        raise ValueError(f"{name} has 4 channels (BGRA); convert it with "
                         "cv2.cvtColor(img, cv2.COLOR_BGRA2BGR) or load it with load_image")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"Expected {name} of shape (H, W) grey or (H, W, 3) BGR; "
                         f"got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {img.shape}")
    return np.ascontiguousarray(img)
