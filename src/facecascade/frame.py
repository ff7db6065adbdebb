"""The canonical face frame: one square reference box derived from any detector's box.

Detectors disagree on box shape: MTFL's boxes are tall (height about 1.33 x
width), CUHK's are square, OpenCV's Haar boxes are square and looser. Every
network works in the *face frame*, never in the raw box:

    centre = centre of the box
    side   = frame.scale * sqrt(box_w * box_h)

so a tall and a square box of the same area give the same frame, and the
level-1 regions (F1 whole frame, EN1 top, NM1 bottom) and the level-2/3
window sizes are fractions of ``side``. To make a model trained on one box
style work on another, level-1 training jitters the *raw* box in scale, aspect
and position (:func:`jitter_boxes`) before the frame is derived.
"""

from __future__ import annotations

import numpy as np

from .geometry import box_center, box_size, boxes_from_center


def face_frame(boxes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Square face frames ``(n, 4)`` of detector boxes ``(n, 4)``.

    >>> face_frame(np.array([[0., 0., 30., 40.]])).round(3).tolist()
    [[-2.321, 2.679, 32.321, 37.321]]
    """
    wh = box_size(boxes)
    side = scale * np.sqrt(wh[:, 0] * wh[:, 1])
    return boxes_from_center(box_center(boxes), side)


def jitter_boxes(boxes: np.ndarray, rng: np.random.Generator, *, scale_sigma: float,
                 aspect_sigma: float, shift_sigma: float) -> np.ndarray:
    """Randomly perturbed copies of boxes ``(n, 4)``, as if from another detector.

    The size is multiplied by ``exp(N(0, scale_sigma^2))``, the height alone by
    ``exp(N(0, aspect_sigma^2))`` (a taller or squatter box), and the centre
    moves by ``N(0, shift_sigma^2)`` times the box's geometric mean side.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    n = len(boxes)
    wh = box_size(boxes)
    side = np.sqrt(wh[:, 0] * wh[:, 1])
    s = np.exp(rng.normal(0.0, scale_sigma, n))
    a = np.exp(rng.normal(0.0, aspect_sigma, n))
    new_wh = np.stack([wh[:, 0] * s, wh[:, 1] * s * a], axis=1)
    center = box_center(boxes) + rng.normal(0.0, shift_sigma, (n, 2)) * side[:, None]
    return boxes_from_center(center, new_wh)
