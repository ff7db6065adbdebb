"""Metrics on hand-made faces whose answers are known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facecascade import metrics
from facecascade.frame import face_frame
from facecascade.geometry import to_abs
from facecascade.metrics import (
    auc,
    ced,
    ced_table,
    failure_rate,
    format_table,
    level_report,
    mean_shape_baseline,
    nme,
    point_error_rows,
    point_errors,
)

# eyes 10 px apart on a horizontal line
FACE = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [2.0, 9.0], [8.0, 9.0]])


def faces(n: int = 3) -> np.ndarray:
    """n copies of FACE at different places."""
    return FACE[None] + np.arange(n)[:, None, None] * np.array([30.0, 7.0])


# --------------------------------------------------------------------------- point errors / NME
def test_shift_of_one_pixel_on_every_point_is_nme_one_tenth() -> None:
    gt = faces()
    pred = gt + np.array([1.0, 0.0])
    np.testing.assert_array_equal(point_errors(pred, gt), np.full((3, 5), 0.1))
    np.testing.assert_array_equal(nme(pred, gt), np.full(3, 0.1))
    # the same 1 px along y, or diagonally by (0.6, 0.8)
    np.testing.assert_allclose(nme(gt + [0.0, 1.0], gt), 0.1, rtol=0, atol=1e-15)
    np.testing.assert_allclose(nme(gt + [0.6, 0.8], gt), 0.1, rtol=0, atol=1e-15)


def test_one_point_off_by_a_3_4_5_triangle() -> None:
    gt = faces(2)
    pred = gt.copy()
    pred[1, 2] += [3.0, 4.0]  # nose of face 1 off by 5 px = half the IOD
    pe = point_errors(pred, gt)
    expected = np.zeros((2, 5))
    expected[1, 2] = 0.5
    np.testing.assert_allclose(pe, expected, atol=1e-15)
    np.testing.assert_allclose(nme(pred, gt), [0.0, 0.1], atol=1e-15)


def test_iod_uses_ground_truth_eyes_not_predicted_ones() -> None:
    gt = faces(1)
    pred = gt.copy()
    pred[0, 1, 0] += 10.0  # predicted eyes 20 px apart; IOD must stay 10
    np.testing.assert_allclose(point_errors(pred, gt)[0], [0, 1.0, 0, 0, 0])


def test_box_normaliser_is_sqrt_of_box_area() -> None:
    gt = faces(2)
    boxes = np.array([[0.0, 0.0, 20.0, 5.0],     # sqrt(20 * 5) = 10
                      [30.0, 7.0, 34.0, 16.0]])  # sqrt(4 * 9) = 6
    pred = gt + np.array([3.0, 0.0])
    np.testing.assert_allclose(nme(pred, gt, norm="box", boxes=boxes), [0.3, 0.5])
    np.testing.assert_allclose(metrics.normaliser(gt, norm="box", boxes=boxes), [10.0, 6.0])


def test_wrong_pred_shape_is_named_with_its_shape() -> None:
    gt = faces(3)
    with pytest.raises(ValueError, match=r"pred has shape \(3, 4, 2\), expected \(n, 5, 2\) "
                                         r"with n == 3 as gt"):
        point_errors(np.zeros((3, 4, 2)), gt)
    with pytest.raises(ValueError, match=r"pred has shape \(2, 5, 2\).*n == 3 as gt"):
        nme(np.zeros((2, 5, 2)), gt)
    with pytest.raises(ValueError, match=r"gt has shape \(5, 2\), expected \(n, 5, 2\)"):
        nme(FACE, FACE)


def test_bad_boxes_and_norm_are_rejected() -> None:
    gt = faces(2)
    with pytest.raises(ValueError, match=r"boxes has shape \(3, 4\).*n == 2 as gt"):
        nme(gt, gt, norm="box", boxes=np.ones((3, 4)))
    with pytest.raises(ValueError, match=r'norm="box" needs boxes'):
        nme(gt, gt, norm="box")
    with pytest.raises(ValueError, match=r"degenerate boxes.*face\(s\) \[1\]"):
        nme(gt, gt, norm="box", boxes=np.array([[0, 0, 5, 5], [5, 0, 5, 5]], dtype=float))
    with pytest.raises(ValueError, match=r"norm == 'bbox', must be one of \('iod', 'box'\)"):
        nme(gt, gt, norm="bbox")


def test_zero_inter_ocular_distance_names_the_face() -> None:
    gt = faces(3)
    gt[1, 1] = gt[1, 0]
    with pytest.raises(ValueError, match="inter-ocular distance is 0 at face 1"):
        nme(gt, gt)
    # the box normaliser does not need the eyes apart
    boxes = np.array([[0.0, 0.0, 10.0, 10.0]] * 3)
    assert nme(gt, gt, norm="box", boxes=boxes).tolist() == [0.0, 0.0, 0.0]


def test_non_finite_points_are_rejected() -> None:
    gt = faces(3)
    pred = gt.copy()
    pred[2, 4, 1] = np.nan
    with pytest.raises(ValueError, match=r"pred contains NaN or inf at face\(s\) \[2\]"):
        nme(pred, gt)


# --------------------------------------------------------------------------- FR / CED / AUC
def test_failure_rate_on_a_hand_list() -> None:
    errors = np.array([0.0, 0.05, 0.10, 0.1000001, 0.2, 0.3, 0.09, 0.01])
    assert failure_rate(errors) == 3 / 8          # 0.10 itself is not a failure
    assert failure_rate(errors, 0.08) == 5 / 8
    assert failure_rate(errors, threshold=1.0) == 0.0
    with pytest.raises(ValueError, match="threshold == 0, must be > 0"):
        failure_rate(errors, 0)


def test_auc_extremes() -> None:
    assert auc(np.zeros(7)) == 1.0
    assert auc(np.full(4, 0.10)) == 0.0
    assert auc(np.array([0.1, 0.5, 3.0])) == 0.0
    assert auc(np.array([0.0, 0.1])) == 0.5


def test_auc_of_uniformly_spread_errors() -> None:
    m = 0.1
    # e_i = m * i / n, i = 0..n-1: AUC = mean(1 - i / n) = (n + 1) / (2 n)
    n = 40
    assert auc(m * np.arange(n) / n, max_error=m) == pytest.approx((n + 1) / (2 * n), abs=1e-12)
    # mid-points of [0, 2m]: half fail (area 0), the other half average 1/2 -> 1/4
    e = 2 * m * (np.arange(1000) + 0.5) / 1000
    assert auc(e, max_error=m) == pytest.approx(0.25, abs=1e-12)


def test_ced_is_monotone_and_reaches_one() -> None:
    rng = np.random.default_rng(0)
    e = rng.uniform(0.0, 0.1, 500)
    x, y = ced(e, max_error=0.1, steps=101)
    assert x.shape == y.shape == (101,)
    assert x[0] == 0.0 and x[-1] == pytest.approx(0.1)
    assert np.all(np.diff(y) >= 0)
    assert y[-1] == 1.0
    # y counts errors <= x, inclusive
    x2, y2 = ced(np.array([0.0, 0.05, 0.05, 0.2]), max_error=0.1, steps=3)
    assert y2.tolist() == [0.25, 0.75, 0.75]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ced_trapezoid_agrees_with_exact_auc(seed: int) -> None:
    rng = np.random.default_rng(seed)
    e = np.concatenate([rng.gamma(2.0, 0.02, 300), [0.0, 0.1, 0.25]])
    for m in (0.05, 0.1):
        x, y = ced(e, max_error=m)
        assert np.trapezoid(y, x) / m == pytest.approx(auc(e, max_error=m), abs=1e-3)


def test_error_vectors_are_validated() -> None:
    with pytest.raises(ValueError, match=r"errors has shape \(2, 5\), expected \(n,\)"):
        auc(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="errors is empty"):
        ced(np.array([]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        failure_rate(np.array([0.1, -0.01]))
    with pytest.raises(ValueError, match="steps == 1, must be >= 2"):
        ced(np.zeros(3), steps=1)
    with pytest.raises(ValueError, match="max_error == -0.1, must be > 0"):
        auc(np.zeros(3), max_error=-0.1)


# --------------------------------------------------------------------------- per level
def test_level_report_values_names_and_json() -> None:
    gt = faces(4)
    boxes = gt[:, 0, :].repeat(2, axis=0).reshape(4, 4) + np.array([-5.0, -5.0, 15.0, 15.0])
    # box side 20 -> nme_box = nme_iod / 2
    lvl1 = gt + np.array([1.0, 0.0])       # NME 0.1 everywhere
    lvl2 = gt.copy()
    lvl2[:, 3] += [3.0, 4.0]               # only LM off, by 0.5 IOD -> NME 0.1
    lvl2[0, 3] += [30.0, 40.0]             # face 0: LM off by 5.5 IOD -> NME 1.1
    r = level_report({1: lvl1, "level2": lvl2, "baseline": gt}, gt, boxes)
    assert list(r) == ["level1", "level2", "baseline"]
    a = r["level1"]
    assert a["nme_iod"] == pytest.approx(0.1)
    assert a["nme_box"] == pytest.approx(0.05)
    assert a["failure_rate"] == 0.0
    assert a["auc"] == pytest.approx(0.0, abs=1e-12)
    assert a["per_point"] == pytest.approx(dict.fromkeys(("LE", "RE", "N", "LM", "RM"), 0.1))
    assert a["n_faces"] == 4
    b = r["level2"]
    assert b["failure_rate"] == 0.25
    assert b["per_point"]["LM"] == pytest.approx((5.5 + 3 * 0.5) / 4)
    assert b["per_point"]["LE"] == 0.0
    assert b["nme_iod"] == pytest.approx((1.1 + 3 * 0.1) / 4)
    assert r["baseline"]["auc"] == 1.0 and r["baseline"]["nme_iod"] == 0.0
    json.dumps(r)  # plain Python types only


def test_level_report_thresholds_are_used() -> None:
    gt = faces(2)
    boxes = np.array([[-5.0, -5.0, 15.0, 15.0], [25.0, 2.0, 45.0, 22.0]])
    pred = gt + np.array([0.5, 0.0])  # NME 0.05
    r = level_report({3: pred}, gt, boxes, failure_threshold=0.04, ced_max=0.2)["level3"]
    assert r["failure_rate"] == 1.0
    assert r["auc"] == pytest.approx(0.75)


def test_level_report_rejects_bad_input() -> None:
    gt = faces(2)
    boxes = np.array([[-5.0, -5.0, 15.0, 15.0], [25.0, 2.0, 45.0, 22.0]])
    with pytest.raises(ValueError, match="'level1' given twice"):
        level_report({1: gt, "level1": gt}, gt, boxes)
    with pytest.raises(ValueError, match="preds is empty"):
        level_report({}, gt, boxes)
    with pytest.raises(ValueError, match=r"preds\[2\] has shape \(1, 5, 2\)"):
        level_report({2: gt[:1]}, gt, boxes)
    with pytest.raises(ValueError, match=r"boxes has shape \(1, 4\)"):
        level_report({1: gt}, gt, boxes[:1])


def test_mean_shape_baseline_recovers_a_shape_shared_by_all_faces() -> None:
    rng = np.random.default_rng(3)
    rel = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])

    def place(n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        lt = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(40, 160, (n, 1)) * np.array([1.0, 1.0]) * rng.uniform(0.8, 1.4, (n, 2))
        boxes = np.concatenate([lt, lt + wh], axis=1)  # tall, wide and square boxes
        pts = to_abs(np.broadcast_to(rel, (n, 5, 2)), face_frame(boxes, scale))
        return pts, boxes

    for scale in (1.0, 1.3):
        train_pts, train_boxes = place(25, scale)
        test_pts, test_boxes = place(7, scale)
        base = mean_shape_baseline(train_pts, train_boxes, test_boxes, frame_scale=scale)
        assert base.shape == (7, 5, 2)
        np.testing.assert_allclose(base, test_pts, atol=1e-9)


def test_mean_shape_baseline_is_the_mean_relative_shape() -> None:
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 120.0, 120.0]])
    a = np.full((5, 2), 2.0)     # rel 0.2 in the first frame
    b = np.full((5, 2), 112.0)   # rel 0.6 in the second
    base = mean_shape_baseline(np.stack([a, b]), boxes, np.array([[0.0, 0.0, 100.0, 100.0]]))
    np.testing.assert_allclose(base, np.full((1, 5, 2), 40.0))
    with pytest.raises(ValueError, match=r"train_boxes has shape \(1, 4\).*n == 2"):
        mean_shape_baseline(np.stack([a, b]), boxes[:1], boxes)
    with pytest.raises(ValueError, match=r"test_boxes has shape \(4,\)"):
        mean_shape_baseline(np.stack([a, b]), boxes, boxes[0])


# --------------------------------------------------------------------------- tables
def _report() -> dict:
    gt = faces(4)
    boxes = gt[:, 0, :].repeat(2, axis=0).reshape(4, 4) + np.array([-5.0, -5.0, 15.0, 15.0])
    pred = gt.copy()
    pred[:, 2] += [0.0, 2.5]  # nose off by 0.25 IOD -> NME 0.05
    return level_report({"baseline": gt + [1.0, 0.0], 1: pred}, gt, boxes)


def test_format_table_shows_percentages() -> None:
    text = format_table(_report())
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["level", "NME%(iod)", "NME%(box)", "FR@10%", "AUC@10%",
                                "LE", "RE", "N", "LM", "RM"]
    assert lines[1].split() == ["baseline", "10.00", "5.00", "0.00", "0.00",
                                "10.00", "10.00", "10.00", "10.00", "10.00"]
    assert lines[2].split() == ["level1", "5.00", "2.50", "0.00", "50.00",
                                "0.00", "0.00", "25.00", "0.00", "0.00"]
    assert len({len(line) for line in lines}) == 1  # fixed width
    assert "FR@5%" in format_table(_report(), failure_threshold=0.05)


def test_ced_table_rows_per_level() -> None:
    rows = ced_table({1: np.array([0.0, 0.02]), "baseline": np.array([0.2])},
                     max_error=0.1, steps=11)
    assert len(rows) == 22
    assert set(rows[0]) == {"level", "nme", "fraction"}
    l1 = [r for r in rows if r["level"] == "level1"]
    assert [r["nme"] for r in l1] == pytest.approx(np.linspace(0, 0.1, 11).tolist())
    assert l1[0]["fraction"] == 0.5 and l1[-1]["fraction"] == 1.0
    assert all(r["fraction"] == 0.0 for r in rows if r["level"] == "baseline")
    json.dumps(rows)


def test_point_error_rows() -> None:
    rows = point_error_rows(_report())
    assert len(rows) == 12
    assert rows[0] == {"level": "baseline", "point": "LE", "nme": pytest.approx(0.1)}
    nose = [r for r in rows if r["level"] == "level1" and r["point"] == "N"]
    assert nose[0]["nme"] == pytest.approx(0.25)
    mean = [r for r in rows if r["level"] == "level1" and r["point"] == "mean"]
    assert mean[0]["nme"] == pytest.approx(0.05)


def test_wide_tables_have_one_field_per_level() -> None:
    errors = {1: np.array([0.0, 0.02]), "baseline": np.array([0.2])}
    long = ced_table(errors, max_error=0.1, steps=11)
    wide = ced_table(errors, max_error=0.1, steps=11, wide=True)
    assert len(wide) == 11 and set(wide[0]) == {"nme", "level1", "baseline"}
    assert [r["level1"] for r in wide] == [r["fraction"] for r in long if r["level"] == "level1"]
    with pytest.raises(ValueError, match="'level1' given twice"):
        ced_table({1: errors[1], "level1": errors[1]})
    rows = point_error_rows(_report(), wide=True)
    assert [r["point"] for r in rows] == ["LE", "RE", "N", "LM", "RM", "mean"]
    assert rows[2]["level1"] == pytest.approx(0.25)
    assert rows[0]["baseline"] == pytest.approx(0.1)
