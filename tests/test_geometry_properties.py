"""Property tests: random boxes and points round-trip through the geometry."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from facecascade import geometry as geo
from facecascade.frame import face_frame

coords = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def faces(draw):
    n = draw(st.integers(1, 8))
    pts = draw(arrays(np.float64, (n, 5, 2), elements=coords))
    lo = draw(arrays(np.float64, (n, 2), elements=coords))
    size = draw(arrays(np.float64, (n, 2), elements=st.floats(1.0, 1e4)))
    return pts, np.concatenate([lo, lo + size], axis=1)


@settings(max_examples=200, deadline=None, database=None)
@given(faces())
def test_rel_abs_round_trip(data):
    pts, boxes = data
    back = geo.to_abs(geo.to_rel(pts, boxes), boxes)
    np.testing.assert_allclose(back, pts, atol=1e-6 * max(1.0, np.abs(pts).max()))


@settings(max_examples=200, deadline=None, database=None)
@given(faces(), st.floats(1, 1e4))
def test_mirror_twice_is_identity(data, width):
    pts, boxes = data
    np.testing.assert_allclose(geo.mirror_points(geo.mirror_points(pts, width), width), pts,
                               atol=1e-6 * max(1.0, np.abs(pts).max(), width))
    np.testing.assert_allclose(geo.mirror_boxes(geo.mirror_boxes(boxes, width), width), boxes,
                               atol=1e-6 * max(1.0, np.abs(boxes).max(), width))


@settings(max_examples=200, deadline=None, database=None)
@given(faces(), st.floats(-180, 180), st.floats(0.1, 10))
def test_similarity_inverts(data, angle, scale):
    pts, boxes = data
    m = geo.similarity(geo.box_center(boxes), angle, scale)
    back = geo.apply_affine(geo.invert(m), geo.apply_affine(m, pts))
    np.testing.assert_allclose(back, pts, atol=1e-6 * max(1.0, np.abs(pts).max()) * scale)


@settings(max_examples=200, deadline=None, database=None)
@given(faces())
def test_frame_contains_box_centre_and_is_square(data):
    _, boxes = data
    fr = face_frame(boxes)
    wh = geo.box_size(fr)
    np.testing.assert_allclose(wh[:, 0], wh[:, 1], rtol=1e-9)
    np.testing.assert_allclose(geo.box_center(fr), geo.box_center(boxes), atol=1e-6 * 1e4)
