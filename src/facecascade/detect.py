"""Face detection with the frontal-face Haar cascade that ships inside opencv-python.

``cv2.data.haarcascades + "haarcascade_frontalface_default.xml"`` run by
``cv2.CascadeClassifier.detectMultiScale`` on the histogram-equalised grey
image. The classifier is created once per process, on first use
(``functools.lru_cache``); importing this module does no work.

Boxes are returned as float64 ``(k, 4)`` (left, top, right, bottom) in the
library's pixel-index convention: a detection covering pixels ``x .. x+w-1``
has ``left = x - 0.5`` and ``right = x + w - 0.5``. They are square and
looser than MTFL's boxes (which are about 1.3x taller than wide): networks use
:func:`facecascade.frame.face_frame`, never the raw box.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np

from .checks import check_image

logger = logging.getLogger(__name__)

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@functools.lru_cache(maxsize=4)
def load_cascade(path: str | None = None) -> cv2.CascadeClassifier:
    """The Haar cascade at ``path`` (default: opencv-python's bundled frontal-face cascade)."""
    path = path or str(Path(cv2.data.haarcascades) / CASCADE_FILE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"{path}: no Haar cascade could be loaded")
    return cascade


def detect_faces(image: np.ndarray, *, min_size_frac: float = 0.1, scale_factor: float = 1.1,
                 min_neighbors: int = 5, cascade_path: str | Path | None = None) -> np.ndarray:
    """Frontal faces in an image, largest first.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 grey ``(H, W)`` or BGR ``(H, W, 3)``.
    min_size_frac : float
        Smallest face side as a fraction of ``min(H, W)`` (never below the 24 px window).
    scale_factor : float
        Pyramid step (> 1).
    min_neighbors : int
        A detection needs at least this many raw windows in its cluster.
    cascade_path : str or Path, optional
        Another cascade XML in OpenCV's format.

    Returns
    -------
    numpy.ndarray
        float64 ``(k, 4)`` boxes (left, top, right, bottom), sorted by area, largest
        first; ``(0, 4)`` when there is no face.

    Examples
    --------
    >>> detect_faces(np.zeros((60, 80), np.uint8)).shape
    (0, 4)
    """
    if not 0 < min_size_frac <= 1:
        raise ValueError(f"min_size_frac == {min_size_frac!r}, must be in (0, 1]")
    if scale_factor <= 1:
        raise ValueError(f"scale_factor == {scale_factor!r}, must be > 1")
    image = check_image(image)
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray = cv2.equalizeHist(gray)
    cascade = load_cascade(None if cascade_path is None else str(cascade_path))
    min_size = max(24, round(min_size_frac * min(gray.shape)))
    rects = cascade.detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                     minSize=(min_size, min_size))
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    logger.debug("detect_faces: %d faces", len(rects))
    boxes = np.column_stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                             rects[:, 1] + rects[:, 3]]) - 0.5
    order = np.lexsort((boxes[:, 0], boxes[:, 1], -(rects[:, 2] * rects[:, 3])))
    return boxes[order].reshape(-1, 4)
