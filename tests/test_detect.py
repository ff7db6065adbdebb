"""Haar face detector: the cascade, grouping, and real faces from the MTFL set."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facecascade.detect import detect_faces, haar_classifier


def test_bundled_cascade_loads_once():
    cascade = haar_classifier()
    assert not cascade.empty()
    assert haar_classifier() is cascade  # created once per process
    with pytest.raises(FileNotFoundError):
        haar_classifier("/nonexistent/cascade.xml")


def test_no_face_in_flat_or_noise_images():
    assert detect_faces(np.zeros((60, 80), np.uint8)).shape == (0, 4)
    noise = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    out = detect_faces(noise)
    assert out.dtype == np.float64 and out.shape[1] == 4


def test_arguments_are_checked():
    img = np.zeros((50, 50), np.uint8)
    with pytest.raises(ValueError, match="min_size_frac"):
        detect_faces(img, min_size_frac=0)
    with pytest.raises(ValueError, match="scale_factor"):
        detect_faces(img, scale_factor=1.0)
    with pytest.raises(TypeError, match="uint8"):
        detect_faces(img.astype(np.float32))


def _net_faces(data: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n`` 400x400 web images of the MTFL set with upright faces, and their 5 points.

    A frontal Haar cascade misses strongly rolled faces, so faces whose eye line
    is tilted by more than 10 degrees are skipped.
    """
    out = []
    with (data / "trainImageList.txt").open() as f:
        for line in f:
            tokens = line.split()
            if not tokens[0].startswith("net_7876/"):
                continue
            img = cv2.imread(str(data / "images" / tokens[0]))
            if img is None or img.shape[:2] != (400, 400):
                continue
            points = np.array(tokens[5:], float).reshape(5, 2)
            dx, dy = points[1] - points[0]
            if abs(np.degrees(np.arctan2(dy, dx))) > 10:
                continue
            out.append((img, points))
            if len(out) == n:
                break
    return out


@pytest.mark.realdata
def test_detects_real_faces_placed_on_a_canvas(mtfl):
    rng = np.random.default_rng(0)
    for img, points in _net_faces(mtfl, 3):
        canvas = rng.integers(90, 150, (520, 640, 3), dtype=np.uint8)
        dx, dy = 170, 60
        canvas[dy:dy + 400, dx:dx + 400] = img
        eyes = points[:2] + [dx, dy]
        boxes = detect_faces(canvas)
        assert len(boxes) >= 1
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert (np.diff(areas) <= 0).all()  # largest first
        np.testing.assert_array_equal((boxes + 0.5) % 1, 0)  # pixel edges of integer rects
        hit = [((eyes >= b[:2]) & (eyes <= b[2:])).all() for b in boxes]
        assert any(hit), f"no box {boxes.tolist()} contains the eyes {eyes.tolist()}"
        # the detector's box is square
        b = boxes[int(np.argmax(hit))]
        assert b[2] - b[0] == b[3] - b[1]


def test_calibration_measured_from_calibrated_boxes_is_recovered():
    from facecascade.config import DetectConfig
    from facecascade.detect import calibrate_boxes, measure_calibration
    from facecascade.frame import face_frame

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 300, (50, 2))
    det = np.concatenate([xy, xy + rng.uniform(30, 200, (50, 1))], axis=1)  # square, like Haar
    want = DetectConfig(scale=0.93, shift_x=-0.013, shift_y=0.02)
    got = measure_calibration(face_frame(calibrate_boxes(det, want)), face_frame(det))
    assert got == pytest.approx({"scale": 0.93, "shift_x": -0.013, "shift_y": 0.02}, abs=1e-4)
    # the identity calibration leaves boxes alone
    identity = DetectConfig(scale=1.0, shift_x=0.0, shift_y=0.0)
    np.testing.assert_allclose(calibrate_boxes(det, identity), det)
    with pytest.raises(ValueError, match="same faces"):
        measure_calibration(det[:3], det[:4])


def test_detect_params_are_validated():
    from facecascade.config import ConfigError, config_from_dict

    assert config_from_dict({"detect": {"scale": 0.9}}).detect.scale == 0.9
    for bad in ({"scale": 0}, {"shift_x": 2}, {"min_size_frac": 0}):
        with pytest.raises(ConfigError, match="detect"):
            config_from_dict({"detect": bad})
