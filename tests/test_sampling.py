"""Vectorised crop sampling: the bytes of the reference warpAffine crops, all windows at once."""

import cv2
import numpy as np
import pytest

from facecascade.crops import cut
from facecascade.geometry import window_to_output
from facecascade.sampling import sample_groups, sample_windows, sampling_grids
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


@pytest.mark.parametrize("size", [(15, 15), (39, 31), (39, 39), (7, 12)])
def test_crops_are_the_reference_warpaffine_bytes(size):
    rng = np.random.default_rng(0)
    grays = [cv2.GaussianBlur(rng.integers(0, 256, (int(rng.integers(20, 160)),
                                                    int(rng.integers(20, 160))), np.uint8),
                              (5, 5), 1.5) for _ in range(12)]
    n, m = 300, 4
    index = rng.integers(0, len(grays), n)
    # windows inside, across the edges and wholly outside the images; up- and down-scaling
    windows = _random_windows(rng, n, m)
    got = sample_windows(grays, index, windows, size)
    assert got.shape == (n, m, size[1], size[0]) and got.dtype == np.uint8
    want = _reference(grays, index, windows.reshape(n, m, 4), size)
    np.testing.assert_array_equal(got, want)


def test_crops_of_procedural_faces_match_bit_for_bit():
    faces = generate(20, seed=3, size=96)
    grays = [cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY) for f in faces]
    boxes = np.stack([f.box for f in faces])
    # subpixel offsets around each face box, like level-2/3 windows around estimates
    rng = np.random.default_rng(1)
    windows = boxes[:, None, :] + rng.normal(0, 3, (20, 10, 1)) * [1, 1, 1, 1]
    got = sample_windows(grays, np.arange(20), windows, (15, 15))
    np.testing.assert_array_equal(got, _reference(grays, np.arange(20), windows, (15, 15)))


def test_one_image_many_faces_and_unsorted_image_index():
    rng = np.random.default_rng(2)
    grays = [rng.integers(0, 256, (50, 70), np.uint8), rng.integers(0, 256, (80, 40), np.uint8)]
    index = np.array([1, 0, 1, 1, 0])
    windows = _random_windows(rng, 5, 3, lo=-5, hi=40, smin=5, smax=30)
    np.testing.assert_array_equal(sample_windows(grays, index, windows, (15, 15)),
                                  _reference(grays, index, windows, (15, 15)))
    assert sample_windows(grays, np.array([], int), np.zeros((0, 3, 4)), (15, 15)).shape == \
        (0, 3, 15, 15)


def test_groups_of_sizes_in_one_call_are_each_groups_reference_crops():
    rng = np.random.default_rng(5)
    grays = [rng.integers(0, 256, (90, 110), np.uint8), rng.integers(0, 256, (60, 70), np.uint8)]
    index = np.array([0, 1, 1, 0])
    windows = _random_windows(rng, 4, 5, lo=-10, hi=60, smin=10, smax=50)
    groups = [((39, 39), 1), ((39, 31), 2), ((15, 15), 2)]  # widths differ: split calls
    got = sample_groups(grays, index, windows, groups)
    start = 0
    for (size, count), crops in zip(groups, got, strict=True):
        assert crops.shape == (4, count, size[1], size[0])
        want = _reference(grays, index, windows[:, start:start + count], size)
        np.testing.assert_array_equal(crops, want)
        start += count
    same_width = sample_groups(grays, index, windows[:, :3], groups[:2])
    np.testing.assert_array_equal(same_width[1], got[1])


def test_grids_are_separable_and_fractions_in_32nds():
    windows = np.array([[[10.0, 20.0, 40.0, 35.0]]])
    ix, fx, iy, fy = sampling_grids(windows, (15, 15))
    assert ix.shape == (1, 1, 15) and iy.shape == (1, 1, 15)
    assert fx.min() >= 0 and fx.max() < 32 and fy.min() >= 0 and fy.max() < 32
    # window of 30 x 15 pixels on 15 x 15: columns 2 px apart, rows 1 px apart
    assert (np.diff(ix[0, 0] * 32 + fx[0, 0]) == 64).all()
    assert (np.diff(iy[0, 0] * 32 + fy[0, 0]) == 32).all()


def test_doctests():
    import doctest

    from facecascade import decoding, sampling

    assert doctest.testmod(sampling).failed == 0
    assert doctest.testmod(decoding).failed == 0


@pytest.mark.parametrize("groups", [[((15, 15), 10)], [((39, 39), 1), ((39, 31), 2)],
                                    [((7, 12), 2), ((20, 9), 1)]])
def test_compiled_crops_are_the_reference_warpaffine_bytes(groups):
    from facecascade.sampling import crop_groups

    rng = np.random.default_rng(6)
    grays = [cv2.GaussianBlur(rng.integers(0, 256, (int(rng.integers(20, 160)),
                                                    int(rng.integers(20, 160))), np.uint8),
                              (5, 5), 1.5) for _ in range(9)]
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


def test_compiled_crops_are_standardised_as_the_training_crops():
    from facecascade.crops import MIN_STD, standardise
    from facecascade.sampling import crop_groups

    rng = np.random.default_rng(7)
    grays = [rng.integers(0, 256, (80, 90), np.uint8), np.full((30, 30), 77, np.uint8)]
    index = np.array([0, 1, 0, 1])
    windows = _random_windows(rng, 4, 3, lo=-10, hi=60, smin=8, smax=40)
    got = crop_groups(grays, index, windows, [((15, 15), 3)], min_std=MIN_STD)[0]
    raw = sample_windows(grays, index, windows, (15, 15))
    want = standardise(raw.reshape(-1, 15 * 15), (15, 15)).reshape(got.shape)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got[[1, 3]] == 0).all()  # a flat image gives flat crops: zeros, not NaN


def test_compiled_crops_refuse_a_colour_image_by_its_index():
    from facecascade.sampling import crop_groups

    grays = [np.zeros((20, 20), np.uint8), np.zeros((20, 20, 3), np.uint8)]
    with pytest.raises(ValueError, match="image 1: expected a grey uint8"):
        crop_groups(grays, np.array([0, 1]), np.ones((2, 1, 4)) * [0, 0, 9, 9], [((5, 5), 1)])
