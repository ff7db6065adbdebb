"""Face frame: one square frame from any box style; jitter keeps statistics honest."""

import numpy as np

from facecascade import geometry as geo
from facecascade.frame import face_frame, jitter_boxes


def test_frame_is_square_centred_with_geometric_mean_side():
    boxes = np.array([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 50.0, 50.0]])
    fr = face_frame(boxes)
    wh = geo.box_size(fr)
    np.testing.assert_allclose(wh[:, 0], wh[:, 1])
    np.testing.assert_allclose(wh[:, 0], [np.sqrt(30 * 40), 50])
    np.testing.assert_allclose(geo.box_center(fr), geo.box_center(boxes))
    np.testing.assert_allclose(geo.box_size(face_frame(boxes, 1.2)), wh * 1.2)


def test_tall_and_square_box_of_same_area_give_same_frame():
    tall = np.array([[0.0, 0.0, 30.0, 40.0]])
    c = geo.box_center(tall)
    square = geo.boxes_from_center(c, np.array([np.sqrt(1200.0)]))
    np.testing.assert_allclose(face_frame(tall), face_frame(square))


def test_jitter_statistics():
    rng = np.random.default_rng(0)
    boxes = np.tile([[0.0, 0.0, 100.0, 133.0]], (5000, 1))
    j = jitter_boxes(boxes, rng, scale_sigma=0.1, aspect_sigma=0.05, shift_sigma=0.02)
    wh = geo.box_size(j)
    assert abs(np.log(wh[:, 0] / 100).std() - 0.1) < 0.01
    aspect = np.log(wh[:, 1] / wh[:, 0]) - np.log(1.33)
    assert abs(aspect.std() - 0.05) < 0.005
    shift = geo.box_center(j) - geo.box_center(boxes)
    assert abs(shift[:, 0].std() / np.sqrt(100 * 133) - 0.02) < 0.002
    none = jitter_boxes(boxes[:3], rng, scale_sigma=0, aspect_sigma=0, shift_sigma=0)
    np.testing.assert_allclose(none, boxes[:3])
