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

from dataclasses import dataclass

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


def landmark_size(points: np.ndarray) -> np.ndarray:
    """Size ``(n,)`` of 5-point faces ``(n, 5, 2)``: ``sqrt(IOD * eye-to-mouth distance)``.

    The geometric mean of the face's width (inter-ocular distance) and height (eye
    centre to mouth centre) varies less with head pose than either alone.

    >>> pts = np.array([[[10., 20.], [30., 20.], [20., 30.], [12., 40.], [28., 40.]]])
    >>> landmark_size(pts).round(3).tolist()
    [20.0]
    """
    points = np.asarray(points, dtype=np.float64)
    iod = np.linalg.norm(points[:, 1] - points[:, 0], axis=1)
    eyes, mouth = points[:, :2].mean(axis=1), points[:, 3:].mean(axis=1)
    return np.sqrt(iod * np.linalg.norm(mouth - eyes, axis=1))


def points_frame(points: np.ndarray, scale: float, frames: np.ndarray) -> np.ndarray:
    """Square frames ``(n, 4)`` sized from 5-point faces instead of their detector boxes.

    The side is ``scale * landmark_size(points)``, kept within half and twice the side
    of the faces' box frames ``frames`` (so a degenerate estimate cannot give an
    empty or huge window); the frames stay centred where ``frames`` are.

    >>> pts = np.array([[[10., 20.], [30., 20.], [20., 30.], [12., 40.], [28., 40.]]])
    >>> points_frame(pts, 2.5, np.array([[0., 0., 40., 40.]])).tolist()
    [[-5.0, -5.0, 45.0, 45.0]]
    """
    frames = np.asarray(frames, dtype=np.float64)
    side = np.sqrt(np.prod(box_size(frames), axis=1))
    size = np.clip(scale * landmark_size(points), 0.5 * side, 2.0 * side)
    return boxes_from_center(box_center(frames), size)


@dataclass(frozen=True)
class BoxStyle:
    """Where a box convention puts a face: medians over faces of a set or a detector.

    ``aspect`` is height / width, ``eye_y`` the eye line's depth below the top as a
    fraction of the height, ``iod`` the inter-ocular distance as a fraction of the
    width. MTFL's list boxes are about ``(1.33, 0.40, 0.45)``; square detector boxes
    such as CUHK's are about ``(1.0, 0.25, 0.47)``.
    """

    aspect: float
    eye_y: float
    iod: float


def measure_style(points: np.ndarray, boxes: np.ndarray) -> BoxStyle:
    """The :class:`BoxStyle` of boxes ``(n, 4)`` around faces ``(n, 5, 2)`` (medians).

    >>> pts = np.array([[[10., 20.], [20., 20.], [15., 25.], [11., 30.], [19., 30.]]])
    >>> s = measure_style(pts, np.array([[5., 10., 25., 36.]]))
    >>> round(s.aspect, 3), round(s.eye_y, 3), round(s.iod, 3)
    (1.3, 0.385, 0.5)
    """
    points = np.asarray(points, dtype=np.float64)
    wh = box_size(boxes)
    eye_y = points[:, :2, 1].mean(axis=1)
    iod = np.linalg.norm(points[:, 0] - points[:, 1], axis=1)
    return BoxStyle(aspect=float(np.median(wh[:, 1] / wh[:, 0])),
                    eye_y=float(np.median((eye_y - np.asarray(boxes)[:, 1]) / wh[:, 1])),
                    iod=float(np.median(iod / wh[:, 0])))


def convert_style(boxes: np.ndarray, src: BoxStyle, dst: BoxStyle) -> np.ndarray:
    """Boxes ``(n, 4)`` of style ``src`` redrawn in style ``dst``, from the boxes alone.

    The face's inter-ocular distance (``src.iod`` times the width) and eye line
    (``src.eye_y`` down the box) are kept; the new box is ``dst``-shaped around
    them, on the same horizontal centre.

    >>> mtfl, square = BoxStyle(1.33, 0.40, 0.45), BoxStyle(1.0, 0.25, 0.47)
    >>> convert_style(np.array([[0., 0., 100., 133.]]), mtfl, square).round(2).tolist()
    [[2.13, 29.26, 97.87, 125.01]]
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    wh = box_size(boxes)
    eye_line = boxes[:, 1] + src.eye_y * wh[:, 1]
    width = wh[:, 0] * src.iod / dst.iod
    height = width * dst.aspect
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    top = eye_line - dst.eye_y * height
    return np.stack([cx - width / 2, top, cx + width / 2, top + height], axis=1)
