"""Boundary validators: accepted layouts, conversions, and the culprit named in errors."""

from __future__ import annotations

import numpy as np
import pytest

from facecascade.checks import check_boxes, check_image, check_points


def test_check_points_accepts_three_layouts():
    one = np.arange(10, dtype=np.int64).reshape(5, 2)
    out = check_points(one)
    assert out.shape == (1, 5, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out[0], one)
    flat = np.arange(20).reshape(2, 10)  # x1 y1 x2 y2 ...
    out = check_points(flat)
    assert out.shape == (2, 5, 2)
    assert out[1, 0].tolist() == [10.0, 11.0] and out[1, 4].tolist() == [18.0, 19.0]
    assert check_points(np.zeros((3, 5, 2), np.float32)).dtype == np.float64
    assert check_points(np.zeros((0, 5, 2))).shape == (0, 5, 2)
    assert check_points([[[0, 0]] * 5]).shape == (1, 5, 2)


@pytest.mark.parametrize("shape", [(5, 3), (4, 4, 2), (2, 5, 3), (2, 2, 5, 2), (3, 9)])
def test_check_points_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"shape \(n, 5, 2\).*got shape"):
        check_points(np.zeros(shape))


def test_check_points_1d_gives_a_hint():
    with pytest.raises(ValueError, match=r"reshape\(1, 10\)"):
        check_points(np.zeros(10))


def test_check_points_names_the_first_nan_face():
    pts = np.zeros((4, 5, 2))
    pts[2, 3, 1] = np.nan
    pts[3, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"landmarks contains NaN at face 2 \(2 face"):
        check_points(pts, name="landmarks")
    pts[2, 3, 1] = 0
    with pytest.raises(ValueError, match="infinite value at face 3"):
        check_points(pts)


def test_check_points_rejects_non_numeric():
    with pytest.raises(TypeError, match="dtype"):
        check_points(np.array([["a"] * 2] * 5))
    with pytest.raises(TypeError, match="None"):
        check_points(None)
    with pytest.raises(TypeError, match="numeric"):
        check_points(np.zeros((1, 5, 2), complex))


def test_check_boxes_converts_and_accepts_one_box():
    assert check_boxes([1, 2, 3, 4]).tolist() == [[1.0, 2.0, 3.0, 4.0]]
    out = check_boxes(np.array([[0, 0, 10, 10], [5, 5, 6, 9]], np.int32))
    assert out.dtype == np.float64 and out.shape == (2, 4)
    assert check_boxes(np.zeros((0, 4))).shape == (0, 4)


def test_check_boxes_names_the_culprit():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 30, 20, 10.0]])
    with pytest.raises(ValueError, match=r"faces\[2\] is inverted: bottom \(10.0\) < top"):
        check_boxes(boxes, name="faces")
    boxes[2] = [20, 0, 5, 10]
    with pytest.raises(ValueError, match=r"boxes\[2\] is inverted: right \(5.0\) < left"):
        check_boxes(boxes)
    boxes[2] = [5, 5, 5, 10]
    with pytest.raises(ValueError, match=r"boxes\[2\] is degenerate: width 0"):
        check_boxes(boxes)
    boxes[2] = [5, 5, 6, 10]
    with pytest.raises(ValueError, match=r"boxes\[2\] is degenerate.*> 2"):
        check_boxes(boxes, min_size=2)
    boxes[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN at box 1"):
        check_boxes(boxes)


def test_check_boxes_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(n, 4\).*got shape \(2, 5\)"):
        check_boxes(np.zeros((2, 5)))


def test_check_image_accepts_grey_and_bgr():
    grey = np.zeros((4, 6), np.uint8)
    assert check_image(grey).shape == (4, 6)
    assert check_image(np.zeros((4, 6, 1), np.uint8)).shape == (4, 6)
    bgr = np.zeros((6, 4, 3), np.uint8)[::-1]  # a non-contiguous view
    out = check_image(bgr)
    assert out.shape == (6, 4, 3) and out.flags.c_contiguous


def test_check_image_errors():
    with pytest.raises(TypeError, match="None"):
        check_image(None)
    with pytest.raises(TypeError, match="uint8, got float32"):
        check_image(np.zeros((4, 4), np.float32), name="img")
    with pytest.raises(ValueError, match="BGRA"):
        check_image(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 2\)"):
        check_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        check_image(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        check_image(np.zeros(4, np.uint8))
