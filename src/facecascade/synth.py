"""Seeded procedural faces with exact 5 points: the embedded demo data set and test fixture.

Every face is composed in a *canonical face space* (head half-width about 1,
x to the image's right, y down, the eyes near ``y = -0.25``), bent by a small
depth model that imitates yaw and pitch (the inner features shift sideways and
the far side is compressed, the head outline stays put), then moved into the
image by one similarity matrix (:func:`facecascade.geometry.similarity`).
Every drawn vertex and the five points go through the same two maps, so the
points are exact: the eye points are the iris/pupil centres, the nose point is
the centre of the nose tip, the mouth points are the vertices where the lips
end.

Drawing is done at ``SUPERSAMPLE`` times the output size without
anti-aliasing and reduced with ``cv2.INTER_AREA`` (an exact block mean), so
edges are anti-aliased by coverage. Pixel-index ``x`` of the output is
pixel-index ``k * x + (k - 1) / 2`` of the ``k``-times larger canvas. What is
left is rasterisation noise: a drawn disc's centroid lies within a few
hundredths of a pixel of its exact point, without bias.

The box imitates a face detector's box: usually tall and loose like MTFL's
(height about 1.33 x width, width about the cheek-to-cheek width, so the
inter-ocular distance is about 0.45 of it), sometimes square like the CUHK
and OpenCV boxes; it always contains the five points and may run slightly
past the image edge.

>>> face = render_face(np.random.default_rng(0), size=64)
>>> face.image.shape, face.image.dtype.name, face.points.shape, face.box.shape
((64, 64, 3), 'uint8', (5, 2), (4,))
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .geometry import apply_affine, compose, invert, similarity
from .io import atomic_path

logger = logging.getLogger(__name__)

#: drawing resolution relative to the output image
SUPERSAMPLE = 4
#: fractional bits of the OpenCV drawing coordinates (1/16 of a canvas pixel)
_SHIFT = 4
#: step of the finite differences that give a disc its local linear map
_EPS = 1e-4
#: canonical MTFL-like detector box (left, top, right, bottom) of a head of half-width 1;
#: its geometric-mean side is what ``face_scale`` refers to
_TALL_BOX = (-1.0, -1.29, 1.0, 1.38)
_TALL_SIDE = math.sqrt((_TALL_BOX[2] - _TALL_BOX[0]) * (_TALL_BOX[3] - _TALL_BOX[1]))
_LUMA = np.array([0.114, 0.587, 0.299])  # BGR weights of the grey level
#: canonical y of the head ellipse's centre (the eyes are near y = -0.25)
_HEAD_CY = -0.2


@dataclass(frozen=True, eq=False)
class SynthFace:
    """One synthetic face.

    Attributes
    ----------
    image : numpy.ndarray
        ``(size, size, 3)`` uint8 BGR image.
    points : numpy.ndarray
        ``(5, 2)`` float64, LE, RE, N, LM, RM in pixel-index coordinates.
    box : numpy.ndarray
        ``(4,)`` float64 detector-like box as left, top, right, bottom.
    params : dict
        The drawn factors (angles in degrees, lengths in canonical units where
        the head half-width is about 1); plain Python values.
    """

    image: np.ndarray
    points: np.ndarray
    box: np.ndarray
    params: dict[str, Any]


# ----------------------------------------------------------------------------- canonical shapes

def _lin(a: float, b: float, n: int) -> np.ndarray:
    """``np.linspace(a, b, n)`` without its per-call overhead (hot in the drawing code)."""
    out = a + (b - a) / (n - 1) * np.arange(n)
    out[-1] = b  # exact end point, as linspace
    return out


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0,
             n: int = 28) -> np.ndarray:
    """``(n, 2)`` vertices of an ellipse rotated by ``angle`` radians."""
    t = (2 * np.pi / n) * np.arange(n)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    out = np.empty((n, 2))
    out[:, 0] = cx + c * x - s * y
    out[:, 1] = cy + s * x + c * y
    return out


@dataclass(frozen=True)
class _Warp:
    """Yaw/pitch imitation on a dome-shaped head: canonical -> bent canonical.

    ``zn`` is 1 at the head's centre and 0 on its outline; a point at depth
    ``zs * zn + extra`` shifts by ``sin(yaw) * depth`` sideways and is
    foreshortened by ``1 - (1 - cos(yaw)) * zn``, so the outline stays put,
    the inner features move and the far side is compressed.
    """

    ax: float
    cy: float
    ay_top: float
    ay_bot: float
    zs: float
    yaw: float
    pitch: float

    def __post_init__(self) -> None:
        # (1 - cos, sin) of yaw and pitch, computed once
        object.__setattr__(self, "_k", (1.0 - np.cos(self.yaw), np.sin(self.yaw),
                                        1.0 - np.cos(self.pitch), np.sin(self.pitch)))

    def __call__(self, pts: np.ndarray, extra: np.ndarray | float = 0.0) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        kx, sx, ky, sy = self._k
        x, dy = pts[:, 0], pts[:, 1] - self.cy
        inv_ay = np.where(dy < 0, 1.0 / self.ay_top, 1.0 / self.ay_bot)
        zn = 1.0 - (x * (1.0 / self.ax)) ** 2 - (dy * inv_ay) ** 2
        np.clip(zn, 0.0, 1.0, out=zn)
        depth = self.zs * zn + extra
        out = np.empty_like(pts)
        out[:, 0] = x * (1.0 - kx * zn) + sx * depth
        out[:, 1] = self.cy + dy * (1.0 - ky * zn) + sy * depth
        return out


class _Canvas:
    """A display list of canonical shapes, rasterised on a supersampled canvas in one pass.

    Shapes are recorded in drawing order; :meth:`render` sends all their
    vertices through the warp and the similarity in one batch, draws them at
    ``SUPERSAMPLE`` x the output size and reduces the canvas by block means.
    """

    def __init__(self, size: int, matrix: np.ndarray, warp: _Warp):
        k = SUPERSAMPLE
        self.size = size
        self.matrix = matrix
        up = np.array([[[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2]]])
        self.matrix_hi = compose(up, matrix[None])[0]
        self.unit_hi = float(np.sqrt(abs(np.linalg.det(self.matrix_hi[:, :2]))))
        self.warp = warp
        self._verts: list[np.ndarray] = []
        self._extra: list[np.ndarray] = []
        self._count = 0
        # (kind, first vertex, end vertex, colour, thickness or ellipse axes, closed)
        self._ops: list[tuple[Any, ...]] = []

    def project(self, pts: np.ndarray, extra: np.ndarray | float = 0.0) -> np.ndarray:
        """Canonical points ``(n, 2)`` to output pixel-index coordinates."""
        m = self.matrix
        return self.warp(pts, extra) @ m[:, :2].T + m[:, 2]

    def _add(self, pts: np.ndarray, extra: np.ndarray | float) -> tuple[int, int]:
        pts = np.asarray(pts, dtype=np.float64)
        n = len(pts)
        self._verts.append(pts)
        if isinstance(extra, (int, float)):
            self._extra.append(np.full(n, float(extra)))
        else:
            self._extra.append(np.asarray(extra, dtype=np.float64))
        self._count += n
        return self._count - n, self._count

    def fill(self, pts: np.ndarray, colour: np.ndarray, extra: np.ndarray | float = 0.0) -> None:
        """Fill a canonical polygon."""
        self._ops.append(("fill", *self._add(pts, extra), _bgr(colour), 0, False))

    def disc(self, centre: np.ndarray, rx: float, ry: float, colour: np.ndarray,
             extra: float = 0.0) -> None:
        """Fill an ellipse around ``centre`` mapped by the *local* linearisation of the maps.

        The drawn shape is point-symmetric about the exact image of ``centre``.
        """
        c = np.asarray(centre, dtype=np.float64)
        probe = np.stack([c, c + (_EPS, 0.0), c + (0.0, _EPS)])
        self._ops.append(("disc", *self._add(probe, extra), _bgr(colour), (rx, ry), False))

    def stroke(self, pts: np.ndarray, colour: np.ndarray, width: float,
               extra: np.ndarray | float = 0.0, closed: bool = False) -> None:
        """Draw a canonical polyline ``width`` canonical units wide (at least one canvas pixel)."""
        thickness = max(1, int(round(width * self.unit_hi)))
        self._ops.append(("stroke", *self._add(pts, extra), _bgr(colour), thickness, closed))

    def fill_image_space(self, pts: np.ndarray, colour: np.ndarray) -> None:
        """Fill a polygon given in output pixel-index coordinates (background clutter)."""
        k = SUPERSAMPLE
        fixed = _fixed(k * np.asarray(pts, dtype=np.float64) + (k - 1) / 2)
        self._ops.append(("image", fixed, 0, _bgr(colour), 0, False))

    def render(self, background: np.ndarray) -> np.ndarray:
        """Rasterise the display list over a flat ``background``; float32 ``(size, size, 3)``."""
        k, size = SUPERSAMPLE, self.size
        side = size * k
        canvas = np.empty((side, side, 3), np.uint8)
        row = np.tile(np.clip(np.rint(background), 0, 255).astype(np.uint8), side)
        canvas.reshape(side, -1)[:] = row  # row-wise fill: much faster than broadcasting
        m = self.matrix_hi
        hi = self.warp(np.concatenate(self._verts), np.concatenate(self._extra)) @ m[:, :2].T
        hi += m[:, 2]
        fixed = _fixed(hi)
        t = np.linspace(0.0, 2 * np.pi, 32, endpoint=False)
        circle = np.stack([np.cos(t), np.sin(t)], axis=1)
        for kind, i, j, colour, arg, closed in self._ops:
            if kind == "fill":
                cv2.fillPoly(canvas, [fixed[i:j]], colour, cv2.LINE_8, _SHIFT)
            elif kind == "stroke":
                cv2.polylines(canvas, [fixed[i:j]], closed, colour, arg, cv2.LINE_8, _SHIFT)
            elif kind == "image":
                cv2.fillPoly(canvas, [i], colour, cv2.LINE_8, _SHIFT)
            else:  # disc: centre and Jacobian from the three probe points
                c, ex, ey = hi[i], hi[i + 1], hi[i + 2]
                jac = np.stack([ex - c, ey - c], axis=1) / _EPS
                poly = c + (circle * arg) @ jac.T
                cv2.fillConvexPoly(canvas, _fixed(poly), colour, cv2.LINE_8, _SHIFT)
        small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
        return small.astype(np.float32)


def _fixed(pts: np.ndarray) -> np.ndarray:
    """Float coordinates to OpenCV fixed point with ``_SHIFT`` fractional bits."""
    return np.rint(pts * (1 << _SHIFT)).astype(np.int32)


def _bgr(colour: np.ndarray) -> tuple[float, float, float]:
    b, g, r = (float(v) for v in colour)
    return (min(max(b, 0.0), 255.0), min(max(g, 0.0), 255.0), min(max(r, 0.0), 255.0))


def _luma(colour: np.ndarray) -> float:
    return float(np.dot(_LUMA, colour))


# ----------------------------------------------------------------------------- parameters

_HAIR = np.array([[22, 24, 30], [30, 42, 66], [45, 70, 105], [95, 150, 190], [150, 150, 155],
                  [40, 50, 110]], dtype=np.float64)
_IRIS = np.array([[30, 50, 85], [22, 28, 38], [115, 100, 80], [60, 90, 85]], dtype=np.float64)
_SKIN_LIGHT = np.array([170.0, 192.0, 235.0])
_SKIN_DARK = np.array([45.0, 62.0, 95.0])


def _sample_params(rng: np.random.Generator, size: int, square_fraction: float,
                   occlusion_fraction: float) -> dict[str, Any]:
    """Draw every factor of one face (fixed order: the rng stream defines the face)."""
    u = rng.uniform
    p: dict[str, Any] = {}
    # pose, scale, position
    p["rotation_deg"] = u(-30.0, 30.0)
    p["yaw_deg"] = u(-30.0, 30.0)
    p["pitch_deg"] = u(-12.0, 12.0)
    p["face_scale"] = u(0.35, 0.70)
    p["position"] = [u(0.0, 1.0), u(0.0, 1.0)]
    # head
    p["head_width"] = u(0.94, 1.05)
    p["head_top"] = u(1.35, 1.55)
    p["chin"] = u(1.22, 1.40)
    p["jaw_taper"] = u(0.04, 0.20)
    p["depth"] = u(0.70, 0.85)
    # eyes
    p["eye_y"] = -0.25 + u(-0.04, 0.04)
    p["eye_half_sep"] = u(0.43, 0.52)
    p["eye_dy"] = rng.normal(0.0, 0.012)
    p["eye_half_width"] = u(0.16, 0.21)
    p["eye_open"] = u(0.30, 0.55)
    p["eye_tilt"] = u(-0.02, 0.05)
    p["iris_radius"] = u(0.075, 0.095)
    p["pupil_ratio"] = u(0.35, 0.50)
    p["gaze"] = [u(-0.025, 0.025), u(-0.01, 0.01)]
    p["brow_height"] = u(0.16, 0.25)
    p["brow_thickness"] = u(0.035, 0.07)
    p["brow_arch"] = u(0.0, 0.06)
    # nose
    p["nose_y"] = u(0.22, 0.36)
    p["nose_x"] = rng.normal(0.0, 0.01)
    p["nose_length"] = u(0.22, 0.38)
    p["nose_width"] = u(0.09, 0.14)
    # mouth
    p["mouth_y"] = p["nose_y"] + u(0.38, 0.50)
    p["mouth_x"] = rng.normal(0.0, 0.01)
    p["mouth_half_width"] = u(0.30, 0.46)
    p["smile"] = u(-0.03, 0.05)
    p["mouth_tilt"] = rng.normal(0.0, 0.012)
    p["upper_lip"] = u(0.045, 0.08)
    p["lower_lip"] = u(0.055, 0.10)
    p["mouth_open"] = 0.0 if rng.random() < 0.55 else u(0.015, 0.14)
    # extras
    p["hair_style"] = str(rng.choice(["none", "short", "long"], p=[0.08, 0.52, 0.40]))
    p["hairline"] = u(-1.15, -0.85)
    p["hair_temple"] = u(-0.55, -0.30)
    p["hair_length"] = u(0.3, 1.2)
    p["hair_width"] = u(1.12, 1.35)
    p["ears"] = bool(rng.random() < 0.7)
    p["glasses"] = bool(rng.random() < 0.1)
    # colours
    tone = u(0.0, 1.0)
    skin = _SKIN_LIGHT + tone * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0.0, 7.0, 3)
    p["skin_bgr"] = skin.tolist()
    p["hair_bgr"] = (_HAIR[rng.integers(len(_HAIR))] * u(0.8, 1.2)).tolist()
    p["iris_bgr"] = (_IRIS[rng.integers(len(_IRIS))] * u(0.8, 1.15)).tolist()
    p["lip_tint"] = [u(0.62, 0.78), u(0.52, 0.66), u(0.82, 0.98)]
    p["sclera"] = u(195.0, 240.0)
    p["background_bgr"] = (u(15.0, 240.0) + rng.normal(0.0, 18.0, 3)).tolist()
    p["clothes_bgr"] = rng.uniform(10.0, 230.0, 3).tolist()
    p["glasses_bgr"] = [u(15.0, 60.0)] * 3 if rng.random() < 0.7 else [u(140.0, 200.0)] * 3
    # lighting and camera
    p["light_side"] = u(-1.0, 1.0)
    p["edge_shading"] = u(0.10, 0.35)
    p["gradient"] = u(0.0, 0.45)
    p["gradient_angle_deg"] = u(0.0, 360.0)
    p["exposure"] = u(0.85, 1.15)
    p["gamma"] = u(0.8, 1.25)
    p["saturation"] = 0.0 if rng.random() < 0.15 else u(0.35, 1.0)
    p["blur_sigma"] = 0.0 if rng.random() < 0.4 else u(0.3, 1.1) * size / 128
    p["noise_sigma"] = u(1.0, 7.0)
    p["clutter"] = int(rng.integers(2, 13))
    p["clutter_seed"] = int(rng.integers(2**62))
    # occluder
    kind = str(rng.choice(["bar", "blob"]))  # drawn always: the fraction changes nothing else
    p["occluder"] = kind if rng.random() < occlusion_fraction else "none"
    p["occluder_centre"] = [u(-0.75, 0.75), u(-0.6, 1.0)]
    p["occluder_angle_deg"] = u(0.0, 180.0)
    p["occluder_size"] = u(0.15, 0.45)
    p["occluder_bgr"] = rng.uniform(10.0, 240.0, 3).tolist()
    # detector box
    p["box_style"] = "square" if rng.random() < square_fraction else "tall"
    p["box_scale"] = float(np.exp(rng.normal(0.0, 0.05)))
    p["box_aspect"] = float(np.exp(rng.normal(0.0, 0.04)))
    p["box_shift"] = rng.normal(0.0, 0.03, 2).tolist()
    p["square_side"] = u(1.75, 2.4)
    p["square_centre_y"] = u(0.08, 0.24)
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in p.items()}


# ----------------------------------------------------------------------------- rendering

def _colours(p: dict[str, Any]) -> dict[str, np.ndarray]:
    """Derived colours with guaranteed contrasts (iris darker than skin, lips visible)."""
    skin = np.clip(np.array(p["skin_bgr"]), 30, 245)
    skin_l = _luma(skin)
    iris = np.array(p["iris_bgr"])
    iris_max = min(110.0, 0.6 * skin_l)
    if _luma(iris) > iris_max:
        iris = iris * iris_max / _luma(iris)
    lip = skin * np.array(p["lip_tint"])
    lip_max = skin_l - max(22.0, 0.25 * skin_l)
    if _luma(lip) > lip_max:
        lip = lip * lip_max / _luma(lip)
    hair = np.array(p["hair_bgr"])
    return {
        "skin": skin, "iris": iris, "lip": lip, "hair": hair,
        "brow": 0.7 * (0.75 * hair) + 0.3 * skin,
        "sclera": 0.85 * p["sclera"] + 0.15 * skin,
        "pupil": np.full(3, 14.0),
        "lash": np.minimum(hair, 45.0) * 0.6,
    }


def _feature_points(p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical 5 points and their extra depths (before warp)."""
    ey, dy, sep = p["eye_y"], p["eye_dy"], p["eye_half_sep"]
    mx, my, mw = p["mouth_x"], p["mouth_y"], p["mouth_half_width"]
    corner_y = my - p["smile"]
    pts = np.array([
        [-sep, ey - dy / 2],
        [sep, ey + dy / 2],
        [p["nose_x"], p["nose_y"]],
        [mx - mw, corner_y - p["mouth_tilt"]],
        [mx + mw, corner_y + p["mouth_tilt"]],
    ])
    extra = np.array([-0.03, -0.03, p["nose_length"], 0.0, 0.0])
    return pts, extra


def _head_outline(p: dict[str, Any], n: int = 72) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    ux, uy = np.cos(t), np.sin(t)
    cy = _HEAD_CY
    # the lower half is fuller than an ellipse (cheeks), then tapers to the chin
    lower = uy > 0
    ux = np.where(lower, np.sign(ux) * np.abs(ux) ** 0.7, ux)
    x = p["head_width"] * ux * (1.0 - p["jaw_taper"] * np.maximum(uy, 0.0) ** 2)
    y = cy + np.where(uy > 0, p["chin"] - cy, p["head_top"]) * uy
    return np.stack([x, y], axis=1)


def _draw_body(cv: _Canvas, p: dict[str, Any], col: dict[str, np.ndarray]) -> None:
    """Clothes, back hair, neck and ears: everything behind the head."""
    ax, chin, skin = p["head_width"], p["chin"], col["skin"]
    cv.fill(_ellipse(0.0, chin + 1.35, 2.2, 1.05, n=40), np.array(p["clothes_bgr"]))
    if p["hair_style"] == "long":
        rx, ry = ax * p["hair_width"], p["head_top"] * 1.08
        t = _lin(np.pi, 2 * np.pi, 24)
        arc = np.stack([rx * np.cos(t), _HEAD_CY + ry * np.sin(t)], axis=1)
        bottom = chin + p["hair_length"]
        back = np.concatenate([[[-rx * 1.02, bottom]], arc, [[rx * 1.02, bottom]]])
        cv.fill(back, 0.8 * col["hair"])
    neck = np.array([[-0.45 * ax, 0.6], [0.45 * ax, 0.6], [0.5 * ax, chin + 0.35],
                     [0.0, chin + 0.8], [-0.5 * ax, chin + 0.35]])
    cv.fill(neck, 0.78 * skin)
    if p["ears"]:
        for s in (-1.0, 1.0):
            cv.fill(_ellipse(s * ax * 0.97, -0.1, 0.13, 0.26, n=20), 0.9 * skin)
            cv.fill(_ellipse(s * ax * 1.0, -0.08, 0.06, 0.15, n=16), 0.72 * skin)


def _draw_eye(cv: _Canvas, p: dict[str, Any], col: dict[str, np.ndarray], centre: np.ndarray,
              outer: float) -> None:
    """One eye whose iris/pupil is centred exactly on ``centre``; ``outer`` is -1 or +1."""
    gx, gy = p["gaze"]
    cx, cy = centre[0] - gx, centre[1] - gy
    ew = p["eye_half_width"]
    eh = ew * p["eye_open"]
    ri = p["iris_radius"]
    t = _lin(-1.0, 1.0, 17)
    x = cx + t * ew
    base = cy - p["eye_tilt"] * 0.5 * (outer * t)
    w = np.maximum(1 - t**2, 0.0)
    upper = np.stack([x, base - eh * w**0.65], axis=1)
    lower = np.stack([x, base + eh * 0.75 * w**0.8], axis=1)
    d = -0.03
    cv.fill(np.concatenate([upper, lower[::-1][1:-1]]), col["sclera"], d)
    cv.disc(centre, ri, ri, col["iris"], d)
    cv.disc(centre, ri * p["pupil_ratio"], ri * p["pupil_ratio"], col["pupil"], d)
    if ri * cv.unit_hi / SUPERSAMPLE >= 2.5:
        cv.disc(centre + np.array([-0.45, -0.45]) * ri, 0.18 * ri, 0.18 * ri,
                np.full(3, 235.0), d)
    # eyelids: skin patches that clip the iris, then lash line and crease
    pad = ri + 0.03
    top = np.array([[cx + 1.05 * ew, cy - eh - pad], [cx - 1.05 * ew, cy - eh - pad]])
    bottom = np.array([[cx + 1.05 * ew, cy + eh + pad], [cx - 1.05 * ew, cy + eh + pad]])
    cv.fill(np.concatenate([upper, top]), col["skin"], d)
    cv.fill(np.concatenate([lower, bottom]), col["skin"], d)
    cv.stroke(lower, 0.8 * col["skin"], 0.012, d)
    cv.stroke(upper, col["lash"], 0.024, d)
    crease = upper[2:-2] + np.array([0.0, -0.045])
    cv.stroke(crease, 0.82 * col["skin"], 0.012, d)
    # eyebrow, from the inner end (towards the nose) to the outer end
    s = _lin(0.0, 1.0, 12)
    bx = cx - outer * ew * 0.95 + outer * s * ew * 2.3
    by = cy - eh * 0.5 - p["brow_height"] - p["brow_arch"] * np.sin(np.pi * s**0.8) + 0.03 * s
    th = p["brow_thickness"] * (1.0 - 0.55 * s)
    brow = np.concatenate([np.stack([bx, by - th / 2], 1), np.stack([bx, by + th / 2], 1)[::-1]])
    cv.fill(brow, col["brow"], 0.0)


def _draw_nose(cv: _Canvas, p: dict[str, Any], col: dict[str, np.ndarray],
               tip: np.ndarray) -> None:
    """Side shadow, alae, nostrils and the nose tip, centred exactly on ``tip``."""
    nx, ny = tip
    nw, nl, skin = p["nose_width"], p["nose_length"], col["skin"]
    sd = -1.0 if p["light_side"] > 0 else 1.0  # shadow on the side away from the light
    ey = p["eye_y"]
    shadow = np.array([[nx + sd * 0.05, ey + 0.04], [nx + sd * 0.11, ey + 0.04],
                       [nx + sd * (nw + 0.02), ny - 0.02], [nx + sd * nw * 0.5, ny + 0.02],
                       [nx + sd * 0.03, ny - 0.08]])
    shade = 1.0 - 0.12 * (0.5 + abs(p["light_side"]))
    cv.fill(shadow, shade * skin, np.array([0.05, 0.05, 0.3, 0.5, 0.8]) * nl)
    for s in (-1.0, 1.0):
        cx = nx + s * nw * 0.8
        cv.fill(_ellipse(cx, ny + 0.01, nw * 0.45, nw * 0.42, n=18), 0.9 * skin, 0.35 * nl)
        a = _lin(-1.2, 1.4, 9) if s > 0 else np.pi - _lin(-1.2, 1.4, 9)
        crease = np.stack([cx + nw * 0.45 * np.cos(a), ny + 0.01 + nw * 0.42 * np.sin(a)], 1)
        cv.stroke(crease, 0.72 * skin, 0.012, 0.35 * nl)
    cv.disc(np.array([nx, ny]), nw * 0.55, nw * 0.45, 1.07 * skin, nl)
    for s in (-1.0, 1.0):
        cv.fill(_ellipse(nx + s * nw * 0.45, ny + nw * 0.5, nw * 0.28, nw * 0.14,
                         angle=-s * 0.35, n=14), 0.35 * skin, 0.45 * nl)


def _draw_mouth(cv: _Canvas, p: dict[str, Any], col: dict[str, np.ndarray], left: np.ndarray,
                right: np.ndarray) -> None:
    """Lips whose outer polygon has its two horizontal extremes exactly at ``left``/``right``."""
    t = _lin(-1.0, 1.0, 25)
    x = left[0] + (t + 1) / 2 * (right[0] - left[0])
    base = left[1] + (t + 1) / 2 * (right[1] - left[1]) + p["smile"] * (1 - t**2)
    w = np.maximum(1 - t**2, 0.0)
    op = p["mouth_open"]
    upper = base - p["upper_lip"] * w**0.45 * (1 - 0.3 * np.exp(-((t / 0.12) ** 2)))
    inner = base + op * w**0.7
    lower = inner + p["lower_lip"] * w**0.45
    extra = 0.06 * w

    def strip(a: np.ndarray, b: np.ndarray, sl: slice = slice(None)) -> tuple[np.ndarray,
                                                                               np.ndarray]:
        poly = np.concatenate([np.stack([x[sl], a[sl]], 1), np.stack([x[sl], b[sl]], 1)[::-1]])
        return poly, np.concatenate([extra[sl], extra[sl][::-1]])

    poly, e = strip(upper, lower)
    cv.fill(poly, col["lip"], e)
    poly, e = strip(upper, base)
    cv.fill(poly, 0.88 * col["lip"], e)
    if op > 0:
        poly, e = strip(base, inner)
        cv.fill(poly, np.array([38.0, 30.0, 48.0]), e)
        if op > 0.035:
            inner_teeth = base + 0.45 * op * w**0.7
            poly, e = strip(base, inner_teeth, slice(5, 20))
            cv.fill(poly, np.array([200.0, 212.0, 220.0]) * (0.6 + 0.4 * p["sclera"] / 240), e)
    cv.stroke(np.stack([x, base], 1), 0.55 * col["lip"], 0.02, extra)


def _draw_hair(cv: _Canvas, p: dict[str, Any], col: dict[str, np.ndarray]) -> None:
    """Hair on top of the head (and side strands for long hair)."""
    if p["hair_style"] == "none":
        return
    ax, cy, top = p["head_width"], _HEAD_CY, p["head_top"]
    yt, hl = p["hair_temple"], p["hairline"]
    # outline from the right temple over the top to the left temple, slightly outside the head
    a0 = np.arcsin(np.clip((yt - cy) / (top * 1.05), -1, 1))  # angle of the temple (negative)
    t = _lin(a0, -np.pi - a0, 30)
    outline = np.stack([1.05 * ax * np.cos(t), cy + 1.05 * top * np.sin(t)], axis=1)
    u = _lin(-1.0, 1.0, 21)
    xe = outline[-1, 0]
    hairline = np.stack([-xe * u * 0.98, hl + (yt - hl) * np.abs(u) ** 1.6], axis=1)
    cv.fill(np.concatenate([outline, hairline]), col["hair"])
    if p["hair_style"] == "long":
        v = _lin(0.0, 1.0, 12)
        for s in (-1.0, 1.0):
            y = yt + v * (0.55 - yt)
            outer = 1.04 * ax * np.sqrt(np.clip(1 - ((y - cy) / (top * 1.04)) ** 2, 0.05, 1))
            inner = outer - 0.12 - 0.05 * np.sin(np.pi * v)
            strand = np.concatenate([np.stack([s * outer, y], 1),
                                     np.stack([s * inner, y], 1)[::-1]])
            cv.fill(strand, 0.9 * col["hair"])


def _draw_glasses(cv: _Canvas, p: dict[str, Any], eyes: np.ndarray) -> None:
    colour = np.array(p["glasses_bgr"])
    t = np.linspace(0.0, 2 * np.pi, 32, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    sx, sy = np.sign(c) * np.abs(c) ** 0.5, np.sign(s) * np.abs(s) ** 0.5
    ey = p["eye_y"]
    for e, side in zip(eyes, (-1.0, 1.0), strict=True):
        frame = np.stack([e[0] + 0.25 * sx, e[1] + 0.02 + 0.17 * sy], axis=1)
        cv.stroke(frame, colour, 0.025, 0.1, closed=True)
        cv.stroke(np.array([[e[0] + side * 0.25, ey - 0.03],
                            [side * p["head_width"] * 0.98, ey - 0.06]]), colour, 0.025, 0.05)
    cv.stroke(np.array([[eyes[0, 0] + 0.25, ey - 0.03], [0.0, ey - 0.06],
                        [eyes[1, 0] - 0.25, ey - 0.03]]), colour, 0.025, 0.15)


def _draw_clutter(cv: _Canvas, p: dict[str, Any], size: int) -> None:
    """Random background shapes in output pixel coordinates (their own child generator)."""
    rng = np.random.default_rng(p["clutter_seed"])
    bg = np.array(p["background_bgr"])
    for _ in range(p["clutter"]):
        kind = rng.integers(4)
        centre = rng.uniform(-0.1, 1.1, 2) * size
        r = rng.uniform(0.04, 0.3) * size
        colour = bg + rng.normal(0.0, 45.0, 3)
        angle = rng.uniform(0.0, np.pi)
        if kind == 0:  # rotated rectangle
            half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [r, r * rng.uniform(0.2, 1.0)]
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            pts = half @ rot.T
        elif kind == 1:  # ellipse
            pts = _ellipse(0.0, 0.0, r, r * rng.uniform(0.4, 1.0), angle, n=24)
        elif kind == 2:  # thick line
            d = np.array([np.cos(angle), np.sin(angle)]) * r * 1.5
            n = np.array([-d[1], d[0]]) / np.linalg.norm(d) * rng.uniform(0.5, 0.03 * size + 1)
            pts = np.array([-d - n, d - n, d + n, -d + n])
        else:  # triangle
            pts = rng.uniform(-r, r, (3, 2))
        cv.fill_image_space(centre + pts, colour)


def _shading(image: np.ndarray, p: dict[str, Any], matrix: np.ndarray,
             outline_img: np.ndarray) -> None:
    """Darken the head towards its outline and light it from one side (in place, float32)."""
    size = image.shape[0]
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.rint(outline_img * 16).astype(np.int32)], 255,
                 lineType=cv2.LINE_AA, shift=4)
    inv = invert(matrix[None])[0]
    xs = np.arange(size, dtype=np.float32)
    u = inv[0, 0] * xs[None, :] + inv[0, 1] * xs[:, None] + inv[0, 2]
    v = inv[1, 0] * xs[None, :] + inv[1, 1] * xs[:, None] + inv[1, 2]
    ax, cy = p["head_width"], _HEAD_CY
    dv = v - cy
    ay = np.where(dv < 0, p["head_top"], p["chin"] - cy)
    r2 = np.clip((u / ax) ** 2 + (dv / ay) ** 2, 0.0, 1.0)
    shade = 1.0 - p["edge_shading"] * r2**2 + 0.18 * p["light_side"] * np.clip(u / ax, -1, 1)
    factor = 1.0 + (mask.astype(np.float32) / 255.0) * (shade - 1.0)
    image *= factor[:, :, None].astype(np.float32)


def _occlude(image: np.ndarray, p: dict[str, Any], canvas: _Canvas,
             points: np.ndarray) -> list[bool]:
    """Draw the occluder (if any) in output pixels; which of the 5 points it covers."""
    if p["occluder"] == "none":
        return [False] * 5
    c = np.array(p["occluder_centre"])
    a = np.deg2rad(p["occluder_angle_deg"])
    r = p["occluder_size"]
    if p["occluder"] == "bar":
        d = np.array([np.cos(a), np.sin(a)]) * 3.0
        n = np.array([-np.sin(a), np.cos(a)]) * r * 0.6
        shape = np.array([c - d - n, c + d - n, c + d + n, c - d + n])
    else:
        shape = _ellipse(c[0], c[1], r * 1.3, r, a, n=32)
    poly = apply_affine(canvas.matrix[None], shape[None])[0]
    cv2.fillPoly(image, [np.rint(poly * 16).astype(np.int32)], _bgr(np.array(p["occluder_bgr"])),
                 lineType=cv2.LINE_AA, shift=4)
    contour = poly.astype(np.float32).reshape(-1, 1, 2)
    return [bool(cv2.pointPolygonTest(contour, (float(x), float(y)), True) > -1.5)
            for x, y in points]


def _finish(image: np.ndarray, p: dict[str, Any], rng: np.random.Generator,
            degrade: bool) -> np.ndarray:
    """Global lighting gradient, exposure/gamma, saturation, then blur and noise -> uint8."""
    size = image.shape[0]
    a = np.deg2rad(p["gradient_angle_deg"])
    xs = (np.arange(size, dtype=np.float32) - (size - 1) / 2) / size
    ramp = 1.0 + 2 * p["gradient"] * (np.cos(a) * xs[None, :] + np.sin(a) * xs[:, None])
    image *= (ramp * p["exposure"]).astype(np.float32)[:, :, None]
    np.clip(image, 0.0, 255.0, out=image)
    lut = (255.0 * (np.arange(256) / 255.0) ** p["gamma"]).astype(np.float32)
    image = lut[(image + 0.5).astype(np.uint8)]  # gamma through a table: fast
    grey = image @ _LUMA.astype(np.float32)
    image = grey[:, :, None] + np.float32(p["saturation"]) * (image - grey[:, :, None])
    if degrade:
        if p["blur_sigma"] > 0:
            image = cv2.GaussianBlur(image, (0, 0), p["blur_sigma"])
        # luminance noise, one draw per pixel (as in compressed photos; 3x cheaper than RGB)
        noise = rng.standard_normal((size, size), dtype=np.float32)
        image += (noise * np.float32(p["noise_sigma"]))[:, :, None]
    return np.clip(image + 0.5, 0.0, 255.0).astype(np.uint8)


def _place(p: dict[str, Any], size: int, warp: _Warp, pts: np.ndarray,
           extra: np.ndarray) -> np.ndarray:
    """The canonical -> image similarity, placing the face at ``position`` in its allowed range."""
    scale = p["face_scale"] * size / _TALL_SIDE
    m0 = similarity(np.zeros(2), p["rotation_deg"], scale)
    x0, y0, x1, y1 = _TALL_BOX
    box_corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]])
    corners = apply_affine(m0, box_corners[None])[0]
    img_pts = apply_affine(m0, warp(pts, extra)[None])[0]
    slack, margin = 0.03 * size, 3.0
    shift = np.empty(2)
    for k in range(2):
        lo = max(-corners[:, k].min() - slack, margin - img_pts[:, k].min())
        hi = min(size - 1 - corners[:, k].max() + slack, size - 1 - margin - img_pts[:, k].max())
        shift[k] = lo + p["position"][k] * (hi - lo) if hi >= lo else (lo + hi) / 2
    return similarity(np.zeros(2), p["rotation_deg"], scale, shift)[0]


def _detector_box(p: dict[str, Any], matrix: np.ndarray, canon_pts: np.ndarray,
                  warped_pts: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A detector-like box: MTFL-style tall and loose, or square; contains the 5 points."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    yaw_shift = 0.5 * float(np.mean(warped_pts[:, 0] - canon_pts[:, 0]))
    if p["box_style"] == "square":
        w = h = p["square_side"] * p["head_width"] * p["box_scale"]
        centre = np.array([yaw_shift, p["square_centre_y"]])
    else:
        x0, y0, x1, y1 = _TALL_BOX
        w = (x1 - x0) * p["head_width"] * p["box_scale"]
        h = (y1 - y0) * p["head_width"] * p["box_scale"] * p["box_aspect"]
        centre = np.array([yaw_shift, (y0 + y1) / 2])
    grow = 1.0 + 0.15 * abs(np.sin(np.deg2rad(p["rotation_deg"])))
    wh = np.array([w, h]) * scale * grow
    c = matrix[:, :2] @ centre + matrix[:, 2] + np.array(p["box_shift"]) * np.sqrt(wh[0] * wh[1])
    box = np.concatenate([c - wh / 2, c + wh / 2])
    m = 0.04 * wh
    box[:2] = np.minimum(box[:2], points.min(axis=0) - m)
    box[2:] = np.maximum(box[2:], points.max(axis=0) + m)
    return box


def render_face(rng: np.random.Generator, *, size: int = 128, square_fraction: float = 0.3,
                occlusion_fraction: float = 0.15, degrade: bool = True) -> SynthFace:
    """Render one random face with its exact 5 points and a detector-like box.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same bytes.
    size : int
        Side of the square output image in pixels (>= 32).
    square_fraction : float
        Probability of a square (CUHK/OpenCV-like) box instead of a tall MTFL-like one.
    occlusion_fraction : float
        Probability of an occluding bar or blob over part of the face.
    degrade : bool
        Apply the camera blur and noise. ``False`` draws the same face (same
        random stream, same geometry and colours) without them, for tests.

    Returns
    -------
    SynthFace
        Image, points, box and the drawn parameters; ``params["occluded_points"]``
        says which points lie under (or within 1.5 px of) the occluder.

    Examples
    --------
    >>> a = render_face(np.random.default_rng(3), size=64)
    >>> b = render_face(np.random.default_rng(3), size=64)
    >>> bool((a.image == b.image).all() and (a.points == b.points).all())
    True
    """
    if size < 32:
        raise ValueError(f"size == {size!r}, must be >= 32")
    for name, v in (("square_fraction", square_fraction),
                    ("occlusion_fraction", occlusion_fraction)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} == {v!r}, must be in [0, 1]")
    p = _sample_params(rng, size, square_fraction, occlusion_fraction)
    warp = _Warp(ax=p["head_width"], cy=_HEAD_CY, ay_top=p["head_top"],
                 ay_bot=p["chin"] - _HEAD_CY,
                 zs=p["depth"], yaw=np.deg2rad(p["yaw_deg"]), pitch=np.deg2rad(p["pitch_deg"]))
    canon, extra = _feature_points(p)
    matrix = _place(p, size, warp, canon, extra)
    col = _colours(p)

    cv = _Canvas(size, matrix, warp)
    _draw_clutter(cv, p, size)
    _draw_body(cv, p, col)
    outline = _head_outline(p)
    cv.fill(outline, col["skin"])
    _draw_eye(cv, p, col, canon[0], -1.0)
    _draw_eye(cv, p, col, canon[1], 1.0)
    _draw_nose(cv, p, col, canon[2])
    _draw_mouth(cv, p, col, canon[3], canon[4])
    _draw_hair(cv, p, col)
    if p["glasses"]:
        _draw_glasses(cv, p, canon[:2])

    points = cv.project(canon, extra)
    image = cv.render(np.array(p["background_bgr"]))
    _shading(image, p, matrix, cv.project(outline))
    occluded = _occlude(image, p, cv, points)
    image = _finish(image, p, rng, degrade)
    box = _detector_box(p, matrix, canon, warp(canon, extra), points)
    p["occluded_points"] = occluded
    p["size"] = size
    return SynthFace(image=image, points=points, box=box, params=p)


# ----------------------------------------------------------------------------- data sets

def face_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of face ``index`` of the data set ``seed``.

    Equal to child ``index`` of ``np.random.SeedSequence(seed).spawn(n)`` for any
    ``n > index``, so a face does not depend on how many faces are generated.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def generate(n: int, *, seed: int, size: int = 128, **kwargs: Any) -> list[SynthFace]:
    """``n`` faces of the data set ``seed``; face ``i`` is the same for every ``n``.

    Extra keyword arguments go to :func:`render_face`.

    >>> [f.image.shape for f in generate(2, seed=1, size=48)]
    [(48, 48, 3), (48, 48, 3)]
    """
    return [render_face(face_rng(seed, i), size=size, **kwargs) for i in range(n)]


_README = """\
# Synthetic 5-point faces

Procedural faces drawn by `facecascade.synth` (render_face, face i from
`np.random.SeedSequence({seed}, spawn_key=(i,))`): a seeded, download-free
stand-in for CUHK/MTFL. Regenerate with
`facecascade.synth.write_synthetic_dataset(out_dir, n={n}, size={size}, seed={seed})`.

- faces: {n}; images: {size}x{size} BGR PNG in `images/`
- square_fraction: {square_fraction}; occlusion_fraction: {occlusion_fraction}
- `faces.txt`: CUHK list format, one face per line, paths relative to this directory:
  `images/00000.png left right top bottom x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`
  (box as left right top bottom; points LE RE N LM RM, "left" = image left).
- Coordinates are pixel-index (pixel i has its centre at x = i) and exact.
- Boxes imitate a face detector: tall (h/w about 1.33) and loose like MTFL's, or
  square like CUHK/OpenCV boxes; they contain all five points and may run past
  the image edge.
"""


def write_synthetic_dataset(out_dir: str | Path, *, n: int, size: int = 128, seed: int = 0,
                            square_fraction: float = 0.3,
                            occlusion_fraction: float = 0.15) -> Path:
    """Write ``n`` synthetic faces as a CUHK-format data set, atomically.

    Produces ``out_dir/images/00000.png ...``, ``out_dir/faces.txt`` (CUHK list:
    ``path left right top bottom x1 y1 ... x5 y5``, 6 decimals) and
    ``out_dir/README.md``. The directory is built beside ``out_dir`` and
    renamed into place; the same arguments give the same bytes.

    Returns
    -------
    pathlib.Path
        The path of ``faces.txt``.
    """
    if n < 1:
        raise ValueError(f"n == {n!r}, must be >= 1")
    out_dir = Path(out_dir)
    lines = []
    with atomic_path(out_dir, directory=True) as tmp:
        (tmp / "images").mkdir()
        for i in range(n):
            face = render_face(face_rng(seed, i), size=size, square_fraction=square_fraction,
                               occlusion_fraction=occlusion_fraction)
            rel = f"images/{i:05d}.png"
            if not cv2.imwrite(str(tmp / rel), face.image):
                raise OSError(f"{tmp / rel}: cv2.imwrite failed")
            left, top, right, bottom = face.box
            values = [left, right, top, bottom, *face.points.ravel()]
            lines.append(rel + " " + " ".join(f"{v:.6f}" for v in values) + "\n")
            if (i + 1) % 200 == 0 or i + 1 == n:
                logger.info("synth: %d/%d faces written", i + 1, n)
        with open(tmp / "faces.txt", "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(lines)
        (tmp / "README.md").write_text(
            _README.format(n=n, size=size, seed=seed, square_fraction=square_fraction,
                           occlusion_fraction=occlusion_fraction),
            encoding="utf-8", newline="\n")
    return out_dir / "faces.txt"


__all__ = ["SUPERSAMPLE", "SynthFace", "face_rng", "generate", "render_face",
           "write_synthetic_dataset"]
