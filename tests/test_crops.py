"""Crops: every augmented crop shows each point exactly where its target says."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from facecascade.config import Config, config_from_dict
from facecascade.crops import (
    crop_schema,
    face_samples,
    net_windows,
    patch_frames,
    read_crop_table,
    samples_to_table,
    standardise,
)
from facecascade.frame import face_frame
from facecascade.specs import get_spec, level_nets

POINTS = np.array([[40.0, 45.0], [72.0, 47.0], [57.0, 62.0], [44.0, 80.0], [70.0, 81.0]])
BOX = np.array([25.0, 25.0, 90.0, 105.0])


def dot_image(point: np.ndarray, size=(128, 128)) -> np.ndarray:
    """A dark image with a smooth bright blob at ``point`` (sub-pixel exact)."""
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    d2 = (xx - point[0]) ** 2 + (yy - point[1]) ** 2
    return (255 * np.exp(-d2 / (2 * 2.5 ** 2))).astype(np.uint8)


def blob_centre(crop: np.ndarray) -> np.ndarray:
    w = crop.astype(float)
    w = np.where(w > 0.5 * w.max(), w, 0)
    ys, xs = np.mgrid[0:crop.shape[0], 0:crop.shape[1]]
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


@pytest.mark.parametrize("point", [0, 2, 4])
def test_level1_targets_match_the_pixels_for_every_augmentation(point):
    cfg = Config()
    img = dot_image(POINTS[point])
    samples = face_samples(1, img, POINTS, BOX, 7, cfg, np.random.default_rng(0), train=True)
    s = samples["F1"]
    aug = cfg.level1.crops.augment
    expected = 1 + 1 + len(aug.rotations) + len(aug.small_rotations) + len(aug.scales) + 4 \
        + aug.copies
    assert len(s.face_id) == expected and (s.face_id == 7).all()
    assert list(s.aug_id) == list(range(expected))
    for i in range(expected):
        crop = s.pixels[i].reshape(39, 39)
        target = s.target[i].reshape(5, 2)
        # a mirrored face swaps labels: find which label sits on our blob
        dists = [np.linalg.norm(blob_centre(crop) - (t * 39 - 0.5)) for t in target]
        assert min(dists) < 0.6, (i, dists)
    # mirror (aug 1) swaps left/right labels: the blob of LE shows as RE
    if point == 0:
        mirrored = s.target[1].reshape(5, 2)
        crop = s.pixels[1].reshape(39, 39)
        assert np.linalg.norm(blob_centre(crop) - (mirrored[1] * 39 - 0.5)) < 0.6


def test_validation_crops_are_only_the_plain_copy():
    s = face_samples(1, dot_image(POINTS[0]), POINTS, BOX, 0, Config(), np.random.default_rng(0),
                     train=False)
    assert all(len(v.face_id) == 1 for v in s.values())
    assert set(s) == {"F1", "EN1", "NM1"}
    assert s["EN1"].pixels.shape == (1, 39 * 31)
    assert s["EN1"].target.shape == (1, 6)


def test_patch_crops_are_centred_on_previous_prediction_and_shaken():
    cfg = Config()
    prev = POINTS + np.array([2.0, -1.5])  # a level-1 error to be corrected
    img = dot_image(POINTS[2])
    s = face_samples(2, img, POINTS, BOX, 3, cfg, np.random.default_rng(1), train=True,
                     prev_points=prev)
    assert set(s) == set(level_nets(2))
    n21 = s["N21"]
    assert len(n21.face_id) == 1 + cfg.level2.crops.shakes
    side = np.sqrt(65 * 80)
    np.testing.assert_allclose(n21.win_wh[0], [2 * 0.16 * side] * 2, rtol=1e-5)
    # unshaken window is centred on the previous estimate: target = 0.5 - error / window
    t0 = n21.target[0]
    np.testing.assert_allclose(t0, 0.5 - np.array([2.0, -1.5]) / n21.win_wh[0], atol=1e-5)
    assert not np.allclose(n21.target[1], t0)  # shaken
    for i in range(len(n21.face_id)):
        crop = n21.pixels[i].reshape(15, 15)
        assert np.linalg.norm(blob_centre(crop) - (n21.target[i] * 15 - 0.5)) < 0.6


@pytest.mark.parametrize("patches", ["box", "points"])
def test_points_sized_patches_do_not_depend_on_the_box(patches):
    # the same face and level-1 estimate, boxed by two detectors: MTFL-tall and a larger square
    cfg = config_from_dict({"frame": {"patches": patches}})
    prev = POINTS + np.array([1.0, -1.0])
    square = np.array([12.0, 18.0, 102.0, 108.0])
    img = dot_image(POINTS[0])
    a, b = (face_samples(2, img, POINTS, box, 0, cfg, np.random.default_rng(0), train=False,
                         prev_points=prev)["LE21"] for box in (BOX, square))
    if patches == "box":  # window half-size 0.16 of each box's frame
        np.testing.assert_allclose(a.win_wh[0], 2 * 0.16 * np.sqrt(65 * 80), rtol=1e-6)
        np.testing.assert_allclose(b.win_wh[0], 2 * 0.16 * 90, rtol=1e-6)
    else:  # 0.16 of 2.5 * sqrt(IOD * eye-mouth distance), the same for both boxes
        iod = np.linalg.norm(prev[1] - prev[0])
        em = np.linalg.norm(prev[3:].mean(axis=0) - prev[:2].mean(axis=0))
        np.testing.assert_allclose(a.win_wh[0], 2 * 0.16 * 2.5 * np.sqrt(iod * em), rtol=1e-6)
        np.testing.assert_array_equal(a.win_wh, b.win_wh)
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_points_frame_is_kept_within_half_and_twice_the_box_frame():
    cfg = config_from_dict({"frame": {"patches": "points"}})
    frames = face_frame(BOX[None])
    side = np.sqrt(65 * 80)
    collapsed = np.repeat(POINTS.mean(axis=0, keepdims=True), 5, axis=0)[None]
    spread = (POINTS - POINTS.mean(axis=0)) * 10 + POINTS.mean(axis=0)
    for prev, want in ((collapsed, 0.5 * side), (spread[None], 2.0 * side)):
        w = net_windows(get_spec("LE21"), patch_frames(frames, prev, cfg), cfg, prev)
        np.testing.assert_allclose(w[0, 2] - w[0, 0], 2 * 0.16 * want, rtol=1e-6)


def test_patch_windows_need_previous_points():
    with pytest.raises(ValueError, match="previous level"):
        net_windows(get_spec("LE21"), face_frame(BOX[None]), Config())


def test_table_round_trip(tmp_path):
    s = face_samples(1, dot_image(POINTS[0]), POINTS, BOX, 5, Config(), np.random.default_rng(0),
                     train=True)
    spec = get_spec("NM1")
    table = samples_to_table(spec, [s["NM1"], s["NM1"]])
    assert table.schema == crop_schema(spec)
    pq.write_table(table, tmp_path / "t.parquet")
    cols = read_crop_table(tmp_path / "t.parquet")
    np.testing.assert_array_equal(cols["pixels"][: len(s["NM1"].pixels)], s["NM1"].pixels)
    np.testing.assert_allclose(cols["target"][:3], s["NM1"].target[:3])
    assert cols["iod"].dtype == np.float32


def test_standardise():
    x = standardise(np.arange(15 * 15, dtype=np.uint8).reshape(1, 225) % 7, (15, 15))
    assert x.shape == (1, 1, 15, 15)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4
    flat = standardise(np.full((2, 225), 9, np.uint8), (15, 15))
    assert np.all(flat == 0)


def test_square_copies_redraw_the_box_in_the_square_style():
    """With square_fraction 1, every jittered copy frames the face as a square detector would:
    a smaller frame (IOD 0.47 of a square box's side, not 0.45 of a tall box's width), lower."""
    from dataclasses import replace

    from facecascade.crops import level1_augment
    from facecascade.frame import measure_style

    base = Config()
    aug = replace(base.level1.crops.augment, copies=40, jitter_scale=0.0, jitter_aspect=0.0,
                  jitter_shift=0.0, jitter_rotation=0.0, mirror=False, square_fraction=1.0)
    cfg = replace(base, level1=replace(base.level1, crops=replace(base.level1.crops, augment=aug)))
    box = np.array([30.0, 20.0, 90.0, 100.0])  # tall: h/w 1.33, eyes 0.40 down, IOD 0.45 w
    pts = np.array([[46.5, 52.0], [73.5, 52.0], [60.0, 66.0], [49.0, 80.0], [71.0, 80.0]])
    style = measure_style(pts[None], box[None])
    plain = level1_augment(pts, box, 128, cfg, np.random.default_rng(0), train=True)
    redrawn = level1_augment(pts, box, 128, cfg, np.random.default_rng(0), train=True,
                             style=style)
    copies = redrawn.boxes[-aug.copies:]
    assert np.allclose(plain.boxes[-aug.copies:], box)  # no style: copies keep the list box
    got = measure_style(redrawn.points[-aug.copies:], copies)
    assert (got.aspect, got.eye_y, got.iod) == pytest.approx((1.0, 0.25, 0.47))
    sq_frame, tall_frame = face_frame(copies[:1])[0], face_frame(box[None])[0]
    assert sq_frame[2] - sq_frame[0] < tall_frame[2] - tall_frame[0]
    assert sq_frame[1] + sq_frame[3] > tall_frame[1] + tall_frame[3]
