"""Figures: valid, non-blank PNGs written atomically; markers where the points are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecascade.metrics import level_report, nme
from facecascade.report import (
    GT_BGR,
    PRED_BGR,
    best_and_worst,
    draw_points,
    plot_ced,
    plot_face_grid,
    plot_point_errors,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path, *, min_side: int = 150) -> np.ndarray:
    """Decode a PNG and check it is a plausible, non-blank figure."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None
    h, w = img.shape[:2]
    assert min_side <= h <= 4000 and min_side <= w <= 4000
    assert img.std() > 0
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write
    return img


def synthetic_faces(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Grey ovals with dark eyes; returns images, gt points (n, 5, 2), boxes (n, 4)."""
    rng = np.random.default_rng(seed)
    rel = np.array([[-0.35, -0.2], [0.35, -0.2], [0.0, 0.1], [-0.28, 0.45], [0.28, 0.45]])
    images, pts, boxes = [], [], []
    for i in range(n):
        img = np.full((120, 160), 70, np.uint8)
        cx, cy, s = rng.uniform(60, 100), rng.uniform(50, 70), rng.uniform(25, 40)
        cv2.ellipse(img, (round(cx), round(cy)), (round(0.8 * s), round(s)), 0, 0, 360, 190, -1)
        p = np.array([cx, cy]) + rel * s
        for x, y in p[:2]:
            cv2.circle(img, (round(x), round(y)), 3, 30, -1)
        images.append(img if i % 2 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        pts.append(p)
        boxes.append([cx - 0.8 * s, cy - s, cx + 0.8 * s, cy + s])
    return images, np.array(pts), np.array(boxes)


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, facecascade.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_ced_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    errors = {1: rng.gamma(4, 0.012, 200), "level2": rng.gamma(4, 0.007, 200),
              "baseline": rng.gamma(4, 0.03, 200)}
    out = plot_ced(errors, tmp_path / "plots" / "ced.png", max_error=0.1)
    assert out == tmp_path / "plots" / "ced.png"
    img = read_png(out, min_side=300)
    assert img.shape[2] == 3


def test_plot_ced_rejects_empty_and_bad_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="errors_by_level is empty"):
        plot_ced({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"errors_by_level\['a'\] has shape \(2, 2\)"):
        plot_ced({"a": np.zeros((2, 2))}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_plot_point_errors_writes_a_png(tmp_path: Path) -> None:
    _, gt, boxes = synthetic_faces(6)
    rng = np.random.default_rng(2)
    preds = {k: gt + rng.normal(0, 3.0 / k, gt.shape) for k in (1, 2, 3)}
    rep = level_report({"baseline": gt + 2.0, **preds}, gt, boxes)
    read_png(plot_point_errors(rep, tmp_path / "points.png"), min_side=300)


def test_draw_points_marks_gt_and_prediction() -> None:
    image = np.full((100, 120), 50, np.uint8)
    gt = np.array([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]])
    pred = gt + np.array([0.0, 10.0])
    out = draw_points(image, pred, gt=gt)
    assert out.shape == (100, 120, 3) and out.dtype == np.uint8
    assert (image == 50).all()  # input untouched
    assert tuple(out[50, 30]) == PRED_BGR  # centre of a predicted dot
    b, g, r = (int(v) for v in out[40, 30])  # centre of a ground-truth cross (anti-aliased)
    assert abs(g - GT_BGR[1]) <= 20 and b <= 20 and r <= 20
    assert tuple(out[5, 5]) == (50, 50, 50)


def test_draw_points_several_levels_get_different_colours() -> None:
    image = np.zeros((80, 80, 3), np.uint8)
    a = np.array([[10.0, 10.0], [30.0, 10.0], [20.0, 20.0], [12.0, 30.0], [28.0, 30.0]])
    out = draw_points(image, {"level1": a, "level2": a + 40.0}, radius=3)
    c1, c2 = tuple(out[10, 10]), tuple(out[50, 50])
    assert c1 != c2 and c1 != (0, 0, 0) and c2 != (0, 0, 0)
    one = draw_points(image, {"level3": a}, radius=3)
    assert tuple(one[10, 10]) == PRED_BGR


def test_draw_points_validates_shapes() -> None:
    with pytest.raises(ValueError, match=r"points has shape \(4, 2\), expected \(5, 2\)"):
        draw_points(np.zeros((10, 10), np.uint8), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"image has shape \(10, 10, 4\)"):
        draw_points(np.zeros((10, 10, 4), np.uint8), np.zeros((5, 2)))


def test_plot_face_grid_writes_a_png(tmp_path: Path) -> None:
    images, gt, boxes = synthetic_faces(5)
    pred = gt + np.random.default_rng(4).normal(0, 1.5, gt.shape)
    errors = nme(pred, gt)
    path = plot_face_grid(images, gt, pred, errors, tmp_path / "worst.png", boxes=boxes,
                          title="level1: worst faces", labels=[f"face {i}" for i in range(5)])
    read_png(path, min_side=200)
    # without boxes, one column
    read_png(plot_face_grid(images[:2], gt[:2], pred[:2], errors[:2], tmp_path / "b.png",
                            cols=1), min_side=150)


def test_plot_face_grid_checks_lengths(tmp_path: Path) -> None:
    images, gt, boxes = synthetic_faces(3)
    with pytest.raises(ValueError, match=r"pred has shape \(2, 5, 2\), expected \(3, 5, 2\)"):
        plot_face_grid(images, gt, gt[:2], np.zeros(3), tmp_path / "g.png")
    with pytest.raises(ValueError, match=r"boxes has shape \(3, 2\)"):
        plot_face_grid(images, gt, gt, np.zeros(3), tmp_path / "g.png", boxes=boxes[:, :2])
    with pytest.raises(ValueError, match="images is empty"):
        plot_face_grid([], gt[:0], gt[:0], np.zeros(0), tmp_path / "g.png")


def test_best_and_worst() -> None:
    e = np.array([0.05, 0.01, 0.30, 0.01, 0.12])
    best, worst = best_and_worst(e, 2)
    assert best.tolist() == [1, 3]      # ties keep the original order
    assert worst.tolist() == [2, 4]
    best, worst = best_and_worst(e, 10)  # capped at n
    assert len(best) == len(worst) == 5
    assert best_and_worst(e, 0)[0].size == 0
    with pytest.raises(ValueError, match="k == -1, must be >= 0"):
        best_and_worst(e, -1)
