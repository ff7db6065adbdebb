"""Face detection with the frontal-face Haar cascade that ships inside opencv-python.

``cv2.data.haarcascades + "haarcascade_frontalface_default.xml"`` run by
``cv2.CascadeClassifier.detectMultiScale`` on the histogram-equalised grey
image. The classifier is created once per process, on first use
(``functools.lru_cache``); importing this module does no work.

Boxes are returned as float64 ``(k, 4)`` (left, top, right, bottom) in the
library's pixel-index convention: a detection covering pixels ``x .. x+w-1``
has ``left = x - 0.5`` and ``right = x + w - 0.5``. They are square and
looser than MTFL's boxes (which are about 1.3x taller than wide): networks use
:func:`facecascade.frame.face_frame`, never the raw box. :func:`find_faces`
detects and then maps the boxes by the ``detect`` section of the params
(:func:`calibrate_boxes`), whose numbers :func:`measure_calibration` derives from
a set's own boxes (``bench/detector_boxes.py``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np

from .checks import check_image
from .config import DetectConfig
from .frame import face_frame
from .geometry import box_center

logger = logging.getLogger(__name__)

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@functools.lru_cache(maxsize=4)
def haar_classifier(path: str | None = None) -> cv2.CascadeClassifier:
    """The Haar cascade at ``path`` (default: opencv-python's bundled frontal-face cascade)."""
    path = path or str(Path(cv2.data.haarcascades) / CASCADE_FILE)
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise FileNotFoundError(f"{path}: no Haar cascade could be loaded")
    return classifier


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
    classifier = haar_classifier(None if cascade_path is None else str(cascade_path))
    min_size = max(24, round(min_size_frac * min(gray.shape)))
    rects = classifier.detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                     minSize=(min_size, min_size))
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    logger.debug("detect_faces: %d faces", len(rects))
    boxes = np.column_stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                             rects[:, 1] + rects[:, 3]]) - 0.5
    order = np.lexsort((boxes[:, 0], boxes[:, 1], -(rects[:, 2] * rects[:, 3])))
    return boxes[order].reshape(-1, 4)


def calibrate_boxes(boxes: np.ndarray, dcfg: DetectConfig) -> np.ndarray:
    """The face frames of ``boxes`` at ``scale`` (:func:`facecascade.frame.face_frame`),
    moved by ``shift_*`` times each box's side ``sqrt(w * h)``.

    >>> calibrate_boxes(np.array([[0., 0., 100., 100.]]),
    ...                 DetectConfig(scale=0.9, shift_x=0.1, shift_y=0.0)).tolist()
    [[15.0, 5.0, 105.0, 95.0]]
    """
    frames = face_frame(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), dcfg.scale)
    side = (frames[:, 2] - frames[:, 0]) / dcfg.scale  # sqrt(w * h) of each box
    shift = np.stack([dcfg.shift_x * side, dcfg.shift_y * side], axis=1)
    return frames + np.concatenate([shift, shift], axis=1)


def find_faces(image: np.ndarray, dcfg: DetectConfig) -> np.ndarray:
    """:func:`detect_faces` (largest first) mapped to the training boxes by ``dcfg``."""
    return calibrate_boxes(detect_faces(image, min_size_frac=dcfg.min_size_frac), dcfg)


def measure_calibration(set_frames: np.ndarray, detector_frames: np.ndarray
                        ) -> dict[str, float]:
    """``scale``, ``shift_x``, ``shift_y`` mapping detector frames to a set's frames.

    Both are square face frames ``(n, 4)`` of the same faces
    (:func:`facecascade.frame.face_frame` of the list's boxes and of the matched
    detections). Medians, so a few bad matches do not move them.

    >>> measure_calibration(np.array([[5., 0., 95., 90.]]), np.array([[0., 0., 100., 100.]]))
    {'scale': 0.9, 'shift_x': 0.0, 'shift_y': -0.05}
    """
    a = np.asarray(set_frames, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(detector_frames, dtype=np.float64).reshape(-1, 4)
    if len(a) != len(b) or not len(a):
        raise ValueError(f"need the same faces in both: {len(a)} set frames, "
                         f"{len(b)} detector frames")
    side_a, side_b = a[:, 2] - a[:, 0], b[:, 2] - b[:, 0]
    shift = (box_center(a) - box_center(b)) / side_b[:, None]
    return {"scale": round(float(np.median(side_a / side_b)), 4),
            "shift_x": round(float(np.median(shift[:, 0])), 4),
            "shift_y": round(float(np.median(shift[:, 1])), 4)}
