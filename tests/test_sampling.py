"""Compiled crop sampling: the bytes of the reference warpAffine crops, all windows at once."""

import cv2
import numpy as np
import pytest

from facecascade.crops import MIN_STD, cut, standardise
from facecascade.geometry import window_to_output
from facecascade.plans import CropLayout
from facecascade.sampling import crop_groups
from facecascade.synth import generate


def _reference(grays, image_index, windows, size):
    return np.stack([cut(grays[i], window_to_output(w, size), size)
                     for i, w in zip(image_index, windows, strict=True)])


def _random_windows(rng, n, m, *, lo=-30.0, hi=150.0, smin=2.0, smax=90.0):
    left = rng.uniform(lo, hi, (n, m))
    top = rng.uniform(lo, hi, (n, m))
    w = rng.uniform(smin, smax, (n, m))
    h = w * rng.uniform(0.6, 1.5, (n, m))
    return np.stack([left, top, left + w, top + h], axis=-1)


def _blurred_images(rng, count):
    return [cv2.GaussianBlur(rng.integers(0, 256, (int(rng.integers(20, 160)),
                                                   int(rng.integers(20, 160))), np.uint8),
                             (5, 5), 1.5) for _ in range(count)]


@pytest.mark.parametrize("groups", [[((15, 15), 10)], [((39, 39), 1), ((39, 31), 2)],
                                    [((7, 12), 2), ((20, 9), 1)], [((39, 31), 4)]])
def test_crops_are_the_reference_warpaffine_bytes(groups):
    rng = np.random.default_rng(6)
    grays = _blurred_images(rng, 9)
    m = sum(count for _, count in groups)
    n = 200
    index = rng.integers(0, len(grays), n)
    # inside, across the edges and wholly outside the images; up- and down-scaling
    windows = _random_windows(rng, n, m)
    got = crop_groups(grays, index, windows, groups)
    start = 0
    for (size, count), crops in zip(groups, got, strict=True):
        assert crops.dtype == np.float32 and crops.shape == (n, count, size[1], size[0])
        want = _reference(grays, index, windows[:, start:start + count], size)
        np.testing.assert_array_equal(crops, want.astype(np.float32))
        start += count


def test_crops_of_procedural_faces_match_bit_for_bit():
    faces = generate(20, seed=3, size=96)
    grays = [cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY) for f in faces]
    boxes = np.stack([f.box for f in faces])
    # subpixel offsets around each face box, like level-2/3 windows around estimates
    rng = np.random.default_rng(1)
    windows = boxes[:, None, :] + rng.normal(0, 3, (20, 10, 1)) * [1, 1, 1, 1]
    got = crop_groups(grays, np.arange(20), windows, [((15, 15), 10)])[0]
    np.testing.assert_array_equal(got, _reference(grays, np.arange(20), windows, (15, 15)))


def test_one_image_many_faces_unsorted_image_index_and_no_faces():
    rng = np.random.default_rng(2)
    grays = [rng.integers(0, 256, (50, 70), np.uint8), rng.integers(0, 256, (80, 40), np.uint8)]
    index = np.array([1, 0, 1, 1, 0])
    windows = _random_windows(rng, 5, 3, lo=-5, hi=40, smin=5, smax=30)
    layout = CropLayout.of([((15, 15), 3)])
    np.testing.assert_array_equal(crop_groups(grays, index, windows, layout)[0],
                                  _reference(grays, index, windows, (15, 15)))
    assert crop_groups(grays, np.array([], int), np.zeros((0, 3, 4)), layout)[0].shape == \
        (0, 3, 15, 15)


def test_crops_are_standardised_as_the_training_crops():
    rng = np.random.default_rng(7)
    grays = [rng.integers(0, 256, (80, 90), np.uint8), np.full((30, 30), 77, np.uint8)]
    index = np.array([0, 1, 0, 1])
    windows = _random_windows(rng, 4, 3, lo=-10, hi=60, smin=8, smax=40)
    got = crop_groups(grays, index, windows, [((15, 15), 3)], min_std=MIN_STD)[0]
    raw = _reference(grays, index, windows, (15, 15))
    want = standardise(raw.reshape(-1, 15 * 15), (15, 15)).reshape(got.shape)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got[[1, 3]] == 0).all()  # a flat image gives flat crops: zeros, not NaN


def test_a_colour_image_and_a_wrong_layout_are_refused():
    grays = [np.zeros((20, 20), np.uint8), np.zeros((20, 20, 3), np.uint8)]
    with pytest.raises(ValueError, match="image 1: expected a grey uint8"):
        crop_groups(grays, np.array([0, 1]), np.ones((2, 1, 4)) * [0, 0, 9, 9], [((5, 5), 1)])
    with pytest.raises(ValueError, match="windows have 1 nets per face, the groups 2"):
        crop_groups(grays[:1], np.array([0]), np.ones((1, 1, 4)) * [0, 0, 9, 9],
                    [((5, 5), 2)])


def test_doctests():
    import doctest

    from facecascade import decoding, sampling

    assert doctest.testmod(sampling).failed == 0
    assert doctest.testmod(decoding).failed == 0
