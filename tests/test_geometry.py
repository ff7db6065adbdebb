"""Geometry: round trips within 1e-6, mirroring, one-matrix affine maps."""

import cv2
import numpy as np
import pytest

from facecascade import geometry as geo


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_faces(rng, n=50):
    pts = rng.uniform(10, 90, size=(n, 5, 2))
    boxes = np.concatenate([pts.min(axis=1) - 5, pts.max(axis=1) + 5], axis=1)
    return pts, boxes


def test_rel_abs_round_trip(rng):
    pts, boxes = random_faces(rng)
    rel = geo.to_rel(pts, boxes)
    assert np.all((rel > 0) & (rel < 1))
    np.testing.assert_allclose(geo.to_abs(rel, boxes), pts, atol=1e-6)


def test_rel_of_window_corners_are_zero_and_one():
    win = np.array([[10.0, 20.0, 30.0, 60.0]])
    corners = np.array([[[10.0, 20.0], [30.0, 60.0], [20.0, 40.0]]])
    np.testing.assert_allclose(geo.to_rel(corners, win)[0], [[0, 0], [1, 1], [0.5, 0.5]])


def test_mirror_twice_is_identity_with_labels_restored(rng):
    pts, boxes = random_faces(rng)
    widths = rng.uniform(100, 200, len(pts))
    once = geo.mirror_points(pts, widths)
    # labels swapped: the mirrored left eye comes from the original right eye
    np.testing.assert_allclose(once[:, 0, 0], widths - 1 - pts[:, 1, 0])
    np.testing.assert_allclose(once[:, 3, 1], pts[:, 4, 1])
    np.testing.assert_allclose(geo.mirror_points(once, widths), pts, atol=1e-12)
    np.testing.assert_allclose(geo.mirror_boxes(geo.mirror_boxes(boxes, widths), widths), boxes)


def test_mirror_matches_cv2_flip():
    img = np.zeros((20, 30), np.uint8)
    img[5, 7] = 255
    flipped = cv2.flip(img, 1)
    y, x = np.argwhere(flipped == 255)[0]
    p = geo.mirror_points(np.tile([[7.0, 5.0]], (1, 5, 1)), 30)
    assert (p[0, 0, 0], p[0, 0, 1]) == (x, y)
    m = geo.mirror_matrix(30)
    np.testing.assert_allclose(geo.apply_affine(m, np.array([[[7.0, 5.0]]]))[0, 0], [x, y])


def test_similarity_inverse_and_compose_round_trip(rng):
    pts, boxes = random_faces(rng)
    n = len(pts)
    m = geo.similarity(geo.box_center(boxes), rng.uniform(-30, 30, n), rng.uniform(0.8, 1.2, n),
                       rng.normal(0, 3, (n, 2)))
    back = geo.apply_affine(geo.invert(m), geo.apply_affine(m, pts))
    np.testing.assert_allclose(back, pts, atol=1e-6)
    ident = geo.compose(geo.invert(m), m)
    np.testing.assert_allclose(ident[:, :, :2], np.tile(np.eye(2), (n, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(ident[:, :, 2], 0, atol=1e-9)


def test_similarity_agrees_with_cv2_rotation_matrix():
    center = np.array([[40.0, 30.0]])
    ours = geo.similarity(center, 12.0, 1.1)[0]
    theirs = cv2.getRotationMatrix2D((40.0, 30.0), 12.0, 1.1)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_rotation_keeps_distances_and_center():
    center = np.array([[50.0, 50.0]])
    p = np.array([[[60.0, 50.0], [50.0, 50.0]]])
    q = geo.apply_affine(geo.similarity(center, 90.0), p)
    np.testing.assert_allclose(q[0, 1], [50, 50], atol=1e-9)
    # counter-clockwise on screen: a point to the right goes up (smaller y)
    np.testing.assert_allclose(q[0, 0], [50, 40], atol=1e-9)


def test_same_matrix_moves_image_and_points():
    img = np.zeros((64, 64), np.uint8)
    cv2.circle(img, (40, 20), 2, 255, -1)
    m = geo.similarity(np.array([[32.0, 32.0]]), 25.0, 0.9, np.array([[3.0, -2.0]]))
    warped = cv2.warpAffine(img, m[0], (64, 64), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(warped > 0)
    w = warped[ys, xs].astype(float)
    centroid = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    np.testing.assert_allclose(centroid, geo.apply_affine(m, np.array([[[40.0, 20.0]]]))[0, 0],
                               atol=0.1)


def test_window_to_output_maps_window_to_output_edges():
    win = np.array([[10.0, 20.0, 40.0, 50.0]])
    m = geo.window_to_output(win, (15, 15))
    corners = geo.apply_affine(m, np.array([[[10.0, 20.0], [40.0, 50.0], [25.0, 35.0]]]))[0]
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [14.5, 14.5], [7.0, 7.0]])


def test_windows_around_and_shake(rng):
    frames = np.array([[0.0, 0.0, 100.0, 100.0]] * 2000)
    pts = np.full((2000, 2), 50.0)
    win = geo.windows_around(pts, frames, (0.16, 0.16))
    np.testing.assert_allclose(win[0], [34, 34, 66, 66])
    shaken = geo.shake(win, frames, 0.01, rng)
    d = shaken - win
    np.testing.assert_allclose(d[:, 0], d[:, 2])  # shifted, not resized
    assert abs(d[:, 0].std() - 1.0) < 0.05  # sigma 0.01 of a 100 px frame


def test_sub_box_and_transform_boxes():
    b = np.array([[0.0, 0.0, 40.0, 80.0]])
    np.testing.assert_allclose(geo.sub_box(b, (0, 0.5, 1, 1)), [[0, 40, 40, 80]])
    m = geo.similarity(geo.box_center(b), 90.0)
    np.testing.assert_allclose(geo.transform_boxes(m, b), [[-20, 20, 60, 60]], atol=1e-9)
