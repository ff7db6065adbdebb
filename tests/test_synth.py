"""Tests of the procedural face generator (facecascade.synth)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecascade import synth
from facecascade.geometry import similarity
from facecascade.synth import SynthFace, face_rng, generate, render_face, write_synthetic_dataset

LUMA = np.array([0.114, 0.587, 0.299])


@pytest.fixture(scope="module")
def faces() -> list[SynthFace]:
    """200 faces as the pipeline gets them (noise, blur, occluders)."""
    return generate(200, seed=11, size=128)


@pytest.fixture(scope="module")
def clean_faces() -> list[SynthFace]:
    """The same kind of faces without camera noise/blur and without occluders."""
    return generate(90, seed=12, size=128, degrade=False, occlusion_fraction=0.0)


def bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Bilinear sample at pixel-index coordinates (pixel i has its centre at x = i)."""
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    p = img[y0:y0 + 2, x0:x0 + 2].astype(np.float64)
    return (p[0, 0] * (1 - fx) * (1 - fy) + p[0, 1] * fx * (1 - fy)
            + p[1, 0] * (1 - fx) * fy + p[1, 1] * fx * fy)


def read_cuhk_inline(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Minimal CUHK list parser: ``path left right top bottom x1 y1 ... x5 y5``."""
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        assert len(fields) == 15, f"{path.name}:{i}: expected 15 fields, got {len(fields)}"
        v = np.array([float(f) for f in fields[1:]])
        left, right, top, bottom = v[:4]
        rows.append((fields[0], np.array([left, top, right, bottom]), v[4:].reshape(5, 2)))
    return rows


# ----------------------------------------------------------------------------- basics

def test_face_fields_and_types() -> None:
    face = render_face(np.random.default_rng(0), size=96)
    assert face.image.shape == (96, 96, 3) and face.image.dtype == np.uint8
    assert face.points.shape == (5, 2) and face.points.dtype == np.float64
    assert face.box.shape == (4,) and face.box.dtype == np.float64
    json.dumps(face.params)  # plain values only
    assert face.params["size"] == 96 and len(face.params["occluded_points"]) == 5


def test_same_seed_same_bytes() -> None:
    a = render_face(np.random.default_rng(123))
    b = render_face(np.random.default_rng(123))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.points.tobytes() == b.points.tobytes() and a.box.tobytes() == b.box.tobytes()
    assert json.dumps(a.params) == json.dumps(b.params)


def test_different_seed_differs() -> None:
    a = render_face(np.random.default_rng(1))
    b = render_face(np.random.default_rng(2))
    assert a.image.tobytes() != b.image.tobytes()
    assert not np.allclose(a.points, b.points)


def test_face_i_does_not_depend_on_n() -> None:
    short, long = generate(2, seed=9, size=64), generate(4, seed=9, size=64)
    assert short[1].image.tobytes() == long[1].image.tobytes()
    child = np.random.SeedSequence(9).spawn(4)[3]
    alone = render_face(np.random.default_rng(child), size=64)
    assert alone.image.tobytes() == long[3].image.tobytes()
    assert face_rng(9, 3).random() == np.random.default_rng(child).random()


def test_degrade_changes_only_noise_and_blur() -> None:
    noisy = render_face(face_rng(4, 0))
    clean = render_face(face_rng(4, 0), degrade=False)
    assert np.array_equal(noisy.points, clean.points) and np.array_equal(noisy.box, clean.box)
    assert noisy.image.tobytes() != clean.image.tobytes()
    diff = noisy.image.astype(float) - clean.image.astype(float)
    assert abs(diff.mean()) < 3.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size": 16}, "size"), ({"square_fraction": 1.5}, "square_fraction"),
    ({"occlusion_fraction": -0.1}, "occlusion_fraction"),
])
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_face(np.random.default_rng(0), **kwargs)


# ----------------------------------------------------------------------------- exactness

def test_drawing_is_exact_in_pixel_index_coordinates() -> None:
    """Discs drawn through the supersampled canvas have their centroids on the projected points
    (to rasterisation noise: a few hundredths of a pixel, no bias)."""
    flat = synth._Warp(ax=1.0, cy=-0.2, ay_top=1.4, ay_bot=1.5, zs=0.8, yaw=0.0, pitch=0.0)
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(20):
        shift, angle = rng.uniform(18.0, 30.0, 2), rng.uniform(-30.0, 30.0)
        radius = rng.uniform(0.08, 0.3)
        matrix = similarity(np.zeros(2), angle, 20.0, shift)[0]
        cv = synth._Canvas(48, matrix, flat)
        cv.disc(np.array([0.1, -0.05]), radius, 0.7 * radius, np.full(3, 255.0))
        img = cv.render(np.zeros(3))[:, :, 0]
        yy, xx = np.mgrid[:48, :48]
        centroid = np.array([(img * xx).sum(), (img * yy).sum()]) / img.sum()
        errors.append(centroid - cv.project(np.array([[0.1, -0.05]]))[0])
    errors = np.array(errors)
    assert np.abs(errors).max() < 0.08, errors
    assert np.abs(errors.mean(axis=0)).max() < 0.02, errors.mean(axis=0)


def test_points_inside_image_and_box(faces: list[SynthFace]) -> None:
    for f in faces:
        size = f.image.shape[0]
        assert (f.points >= 0).all() and (f.points <= size - 1).all(), f.points
        left, top, right, bottom = f.box
        assert (f.points[:, 0] > left).all() and (f.points[:, 0] < right).all()
        assert (f.points[:, 1] > top).all() and (f.points[:, 1] < bottom).all()
        # the box may run past the image edge, but only slightly
        assert f.box[:2].min() > -0.2 * size and f.box[2:].max() < 1.2 * size


def test_left_eye_is_left(faces: list[SynthFace]) -> None:
    for f in faces:
        assert abs(f.params["rotation_deg"]) <= 30
        assert f.points[0, 0] < f.points[1, 0]
        assert f.points[3, 0] < f.points[4, 0]


def test_eye_points_lie_on_dark_pupils(faces: list[SynthFace],
                                      clean_faces: list[SynthFace]) -> None:
    """At the exact eye points the image is darker than the inner face on average (every
    non-occluded face) and, without camera noise/blur, darker than the cheek below."""
    checked = 0
    for f, clean in [(f, False) for f in faces] + [(f, True) for f in clean_faces]:
        if f.params["occluder"] != "none":
            continue
        grey = f.image.astype(np.float64) @ LUMA
        size = grey.shape[0]
        # the inner face: the rectangle spanned by the five points (skin and features)
        (left, top), (right, bottom) = (np.floor(f.points.min(axis=0)).astype(int),
                                        np.ceil(f.points.max(axis=0)).astype(int))
        face_mean = grey[top:bottom + 1, left:right + 1].mean()
        iod = np.linalg.norm(f.points[1] - f.points[0])
        for x, y in f.points[:2]:
            at_eye = bilinear(grey, x, y)
            assert at_eye < face_mean, (at_eye, face_mean)
            if clean:
                assert at_eye < bilinear(grey, x, min(y + 0.3 * iod, size - 2)) - 5
        checked += 1
    assert checked > 220


def test_mouth_corners_are_the_lip_extremes(clean_faces: list[SynthFace]) -> None:
    """Along the mouth axis, lip colour (darker than the skin beside the corner) reaches the
    corner to within ~1 px and stops there."""
    checked = 0
    for f in clean_faces:
        if abs(f.params["yaw_deg"]) > 20:  # the far corner may then touch the face outline
            continue
        lum = f.image.astype(np.float64) @ LUMA
        lm, rm = f.points[3], f.points[4]
        width = np.linalg.norm(rm - lm)
        u = (rm - lm) / width
        yy, xx = np.mgrid[:lum.shape[0], :lum.shape[1]]
        rel = np.stack([xx - lm[0], yy - lm[1]], axis=-1)
        along, across = rel @ u, rel @ np.array([-u[1], u[0]])
        for inward in (along, width - along):  # distance from the corner towards the mouth
            skin = np.median(lum[(inward > -4.5) & (inward < -2.5) & (np.abs(across) <= 1.5)])
            dark = skin - lum
            band = ((np.abs(across) <= np.where(inward < 0, 1.5, 0.3 * width))
                    & (inward > -4) & (inward < 0.5 * width))
            contrast = np.percentile(dark[band & (inward > 0.15 * width)], 90)
            lip = band & (dark > 0.35 * contrast)
            reach = -inward[lip].min()  # > 0: lip colour past the corner
            assert -1.25 <= reach <= 1.0, (reach, f.params["face_scale"])
        checked += 1
    assert checked > 45


# ----------------------------------------------------------------------------- variety

def test_parameters_are_varied(faces: list[SynthFace]) -> None:
    def values(key: str) -> np.ndarray:
        return np.array([f.params[key] for f in faces], dtype=float)

    rot, yaw, scale = values("rotation_deg"), values("yaw_deg"), values("face_scale")
    assert rot.min() < -20 and rot.max() > 20
    assert yaw.min() < -20 and yaw.max() > 20
    assert scale.min() < 0.4 and scale.max() > 0.65
    assert np.ptp(values("mouth_half_width")) > 0.1
    assert 0.3 < np.mean(values("mouth_open") > 0) < 0.6
    assert 0.05 < np.mean([f.params["occluder"] != "none" for f in faces]) < 0.25
    assert 0.2 < np.mean([f.params["box_style"] == "square" for f in faces]) < 0.4
    assert {f.params["hair_style"] for f in faces} == {"none", "short", "long"}
    assert (values("saturation") == 0).any() and (values("blur_sigma") == 0).any()
    assert values("blur_sigma").max() > 0.8 and np.ptp(values("noise_sigma")) > 4
    # the pixels vary too: brightness, position and size of the face
    assert np.std([f.image.mean() for f in faces]) > 15
    centres = np.array([f.points.mean(axis=0) for f in faces])
    assert centres.std(axis=0).min() > 0.08 * 128
    iod = np.array([np.linalg.norm(f.points[1] - f.points[0]) for f in faces])
    assert iod.max() > 1.7 * iod.min()


def test_boxes_resemble_detector_boxes(faces: list[SynthFace]) -> None:
    tall = [f for f in faces if f.params["box_style"] == "tall"]
    square = [f for f in faces if f.params["box_style"] == "square"]
    for group, aspect in ((tall, 1.33), (square, 1.0)):
        b = np.array([f.box for f in group])
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        assert abs(np.median(h / w) - aspect) < 0.05
    b = np.array([f.box for f in tall])
    p = np.array([f.points for f in tall])
    iod_rel = np.linalg.norm(p[:, 1] - p[:, 0], axis=1) / (b[:, 2] - b[:, 0])
    assert 0.4 < np.median(iod_rel) < 0.5  # MTFL: 0.45
    eyes_y = (p[:, :2, 1].mean(axis=1) - b[:, 1]) / (b[:, 3] - b[:, 1])
    assert 0.33 < np.median(eyes_y) < 0.45  # MTFL: 0.39


# ----------------------------------------------------------------------------- data set files

def test_write_dataset_is_byte_deterministic_and_parses(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="facecascade.synth"):
        list_a = write_synthetic_dataset(tmp_path / "a", n=6, size=64, seed=3)
    write_synthetic_dataset(tmp_path / "b", n=6, size=64, seed=3)
    assert list_a == tmp_path / "a" / "faces.txt" and "6/6" in caplog.text
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                     if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
                     if p.is_file())
    assert files_a == files_b and len(files_a) == 6 + 2
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp dirs left

    text = list_a.read_bytes()
    assert b"\r" not in text and text.endswith(b"\n")
    rows = read_cuhk_inline(list_a)
    expected = generate(6, seed=3, size=64)
    assert [r[0] for r in rows] == [f"images/{i:05d}.png" for i in range(6)]
    for (rel, box, points), face in zip(rows, expected, strict=True):
        np.testing.assert_allclose(box, face.box, atol=1e-6)
        np.testing.assert_allclose(points, face.points, atol=1e-6)
        image = cv2.imread(str(tmp_path / "a" / rel), cv2.IMREAD_COLOR)
        assert np.array_equal(image, face.image)
    readme = (tmp_path / "a" / "README.md").read_text(encoding="utf-8")
    assert "seed" in readme and "left right top bottom" in readme


def test_write_dataset_replaces_existing_dir(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    write_synthetic_dataset(out, n=3, size=48, seed=1)
    (out / "stale.txt").write_text("old")
    write_synthetic_dataset(out, n=2, size=48, seed=1)
    assert not (out / "stale.txt").exists()
    assert len(read_cuhk_inline(out / "faces.txt")) == 2
