"""Cascade inference: fusion, pair averages, train/predict crop agreement, artifact round trip."""

import json
import pickle

import numpy as np
import pytest
import torch

from facecascade.cascade import Cascade, load_cascade, save_cascade
from facecascade.config import Config, config_from_dict
from facecascade.crops import cut, face_samples, net_windows
from facecascade.frame import face_frame
from facecascade.geometry import window_to_output
from facecascade.specs import get_spec, level_nets


@pytest.fixture(scope="module")
def cascade():
    torch.set_num_threads(1)
    return Cascade.untrained(Config(), levels=3, seed=0)


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (96, 120), dtype=np.uint8) for _ in range(3)]
    boxes = np.array([[20.0, 15.0, 70.0, 80.0], [30.0, 10.0, 90.0, 90.0], [5, 5, 60, 60]])
    return images, boxes


def test_predict_returns_every_level(cascade, faces):
    images, boxes = faces
    out = cascade.predict(images, boxes)
    assert sorted(out) == [1, 2, 3]
    for pts in out.values():
        assert pts.shape == (3, 5, 2) and np.isfinite(pts).all()
    two = cascade.predict(images, boxes, levels=2)
    np.testing.assert_allclose(two[2], out[2])


def test_faces_too_small_for_a_level_keep_the_previous_points(faces):
    images, boxes = faces
    plain = Cascade.untrained(Config(), levels=3, seed=0).predict(images, boxes)
    # level 3's narrowest window is 2 * 0.08 * frame side: 9.1, 11.1 and 8.8 px for these boxes
    side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    assert np.allclose(2 * 0.08 * side, [9.12, 11.09, 8.8], atol=0.01)
    cfg = config_from_dict({"level3": {"crops": {"min_window_px": 10}}})
    gated = Cascade.untrained(cfg, levels=3, seed=0).predict(images, boxes)
    np.testing.assert_array_equal(gated[2], plain[2])  # level 2 is not gated
    np.testing.assert_array_equal(gated[3][[0, 2]], plain[2][[0, 2]])  # kept level 2's
    np.testing.assert_allclose(gated[3][1], plain[3][1], rtol=1e-5)  # refined as before
    assert not np.allclose(plain[3][[0, 2]], plain[2][[0, 2]])  # the gate changed something


@pytest.mark.parametrize("level", [2, 3])
def test_a_patch_level_keeps_its_share_of_the_previous_points(faces, level):
    images, boxes = faces
    plain = Cascade.untrained(Config(), levels=3, seed=0)
    kept = Cascade.untrained(config_from_dict({f"level{level}": {"model": {"keep": 0.25}}}),
                             levels=3, seed=0)
    frames = face_frame(boxes, 1.0)
    index = np.arange(len(boxes))
    prev = plain.predict(images, boxes, levels=level - 1)[level - 1]
    want = 0.75 * plain.predict_level(level, images, index, frames, prev) + 0.25 * prev
    np.testing.assert_allclose(kept.predict_level(level, images, index, frames, prev), want,
                               rtol=1e-12)
    out = kept.predict(images, boxes)
    for k in range(1, level):  # the levels before are untouched
        np.testing.assert_array_equal(out[k], plain.predict(images, boxes)[k])


def test_level1_fusion_is_eq4_weighted_average(faces):
    images, boxes = faces
    cfg = Config()
    base = Cascade.untrained(cfg, levels=1, seed=1)
    weights = {n: net.state_dict() for n, net in base.nets.items()}
    d = cfg.to_dict()
    d["level1"]["model"]["fusion"] = {"F1": 3.0, "EN1": 1.0, "NM1": 1.0}
    weighted = Cascade(config_from_dict(d), weights, levels=1)
    frames = face_frame(boxes)
    per = {n: weighted._run(n, images, np.arange(3),
                            net_windows(get_spec(n), frames, weighted.cfg), 64)
           for n in ("F1", "EN1", "NM1")}
    got = weighted.predict(images, boxes)[1]
    np.testing.assert_allclose(got[:, 0], (3 * per["F1"][:, 0] + per["EN1"][:, 0]) / 4)
    np.testing.assert_allclose(got[:, 2],
                               (3 * per["F1"][:, 2] + per["EN1"][:, 2] + per["NM1"][:, 0]) / 5)
    np.testing.assert_allclose(got[:, 4], (3 * per["F1"][:, 4] + per["NM1"][:, 2]) / 4)


def test_inference_crops_equal_training_crops(cascade, faces):
    """Predict cuts exactly the pixels that training's plain crop (aug 0) cut."""
    images, boxes = faces
    cfg = cascade.cfg
    gt = np.tile(np.array([[40.0, 40], [55, 40], [47, 52], [42, 62], [54, 62]]), (1, 1))
    s = face_samples(1, images[0], gt, boxes[0], 0, cfg, np.random.default_rng(0), train=False)
    for name in level_nets(1):
        spec = get_spec(name)
        win = net_windows(spec, face_frame(boxes[:1]), cfg)
        crop = cut(images[0], window_to_output(win, spec.input_size), spec.input_size)
        np.testing.assert_array_equal(crop.reshape(1, -1), s[name].pixels)


def test_image_index_maps_faces_to_images(cascade, faces):
    images, boxes = faces
    a = cascade.predict([images[0]], boxes[:2], np.array([0, 0]))[3]
    b = cascade.predict([images[0], images[0]], boxes[:2])[3]
    np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="image_index"):
        cascade.predict(images, boxes, np.array([0, 1, 5]))


def test_save_load_round_trip(cascade, faces, tmp_path):
    images, boxes = faces
    save_cascade(cascade, tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["levels"] == 3 and len(manifest["nets"]) == 23
    loaded = load_cascade(tmp_path / "c", fast=False)  # the fast path's parity: test_fused.py
    np.testing.assert_allclose(loaded.predict(images, boxes)[3], cascade.predict(images, boxes)[3])


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_crafted_pickle_is_refused(cascade, tmp_path):
    save_cascade(cascade, tmp_path / "c")
    with open(tmp_path / "c" / "weights.pt", "wb") as f:
        pickle.dump({"F1": Evil()}, f)
    with pytest.raises(ValueError, match="weights.pt: refused"):
        load_cascade(tmp_path / "c")


def test_missing_weights_are_named():
    with pytest.raises(ValueError, match="lacks weights"):
        Cascade(Config(), {}, levels=1)


def test_no_faces_gives_empty_levels(cascade, faces):
    images, _ = faces
    out = cascade.predict(images, np.zeros((0, 4)))
    assert {k: v.shape for k, v in out.items()} == {1: (0, 5, 2), 2: (0, 5, 2), 3: (0, 5, 2)}


def test_a_cascade_of_aligned_widths_round_trips(faces, tmp_path):
    images, boxes = faces
    cfg = config_from_dict({"level1": {"model": {"widths": "aligned"}},
                            "level2": {"model": {"widths": "aligned"}}})
    c = Cascade.untrained(cfg, levels=3, seed=0)
    assert c.nets["F1"].features[0].out_channels == 16
    assert c.nets["LE21"].features[0].out_channels == 16
    assert c.nets["LE31"].features[0].out_channels == 20
    save_cascade(c, tmp_path / "c")
    loaded = load_cascade(tmp_path / "c", fast=False)  # the manifest's params rebuild the nets
    np.testing.assert_allclose(loaded.predict(images, boxes)[3], c.predict(images, boxes)[3])


def test_weights_of_other_widths_are_refused_naming_the_file(tmp_path):
    save_cascade(Cascade.untrained(Config(), levels=1, seed=0), tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["params"]["level1"]["model"]["widths"] = "aligned"
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"weights\.pt.*F1"):
        load_cascade(tmp_path / "c")
