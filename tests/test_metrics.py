"""jflow.metrics on small hand-computed cases."""
import numpy as np
import pytest

from jflow import metrics


def image_a():
    """|gt| = 5 everywhere; EPEs 0, 0.5, 2, 6."""
    gt = np.tile(np.array([3.0, 4.0], np.float32), (2, 2, 1))
    pred = gt.copy()
    pred[0, 1, 1] += 0.5
    pred[1, 0, 0] += 2.0
    pred[1, 1, 1] += 6.0
    return pred, gt


def image_b():
    """gt (100,0),(0,0),(0,0); EPEs 4 (under 5% of 100), 0 (invalid), 3.5."""
    gt = np.array([[[100.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], np.float32)
    pred = np.array([[[104.0, 0.0], [0.0, 0.0], [0.0, 3.5]]], np.float32)
    valid = np.array([[True, False, True]])
    return pred, gt, valid


def test_epe_map():
    pred, gt = image_a()
    np.testing.assert_allclose(metrics.epe_map(pred, gt), [[0.0, 0.5], [2.0, 6.0]])
    with pytest.raises(ValueError, match="same shape"):
        metrics.epe_map(pred, gt[:1])


def test_flow_metrics_hand_computed():
    m = metrics.flow_metrics(*image_a())
    assert m["epe"] == pytest.approx(8.5 / 4)
    assert (m["1px"], m["3px"], m["5px"]) == (0.5, 0.75, 0.75)
    assert m["fl_all"] == pytest.approx(25.0)
    assert (m["count"], m["nan_count"]) == (4, 0)
    m = metrics.flow_metrics(*image_b())
    assert m["epe"] == pytest.approx(3.75) and m["count"] == 2
    assert (m["1px"], m["3px"], m["5px"]) == (0.0, 0.0, 1.0)
    assert m["fl_all"] == pytest.approx(50.0)  # EPE 4 is not > 5% of |gt| = 100


def test_nan_predictions_are_outliers():
    pred, gt = image_a()
    pred[0, 0] = [np.nan, 0.0]
    m = metrics.flow_metrics(pred, gt)
    assert m["nan_count"] == 1 and m["count"] == 4
    assert m["epe"] == np.inf  # explicit, not NaN
    assert m["1px"] == 0.25  # only the 0.5 px pixel is still accurate
    assert m["fl_all"] == pytest.approx(50.0)
    valid = np.ones((2, 2), bool)
    valid[0, 0] = False  # a NaN at an invalid pixel does not matter
    m = metrics.flow_metrics(pred, gt, valid)
    assert m["nan_count"] == 0 and m["epe"] == pytest.approx(8.5 / 3)
    gt_nan = gt.copy()
    gt_nan[1, 1] = np.nan  # non-finite ground truth is not valid
    assert metrics.flow_metrics(image_a()[0], gt_nan)["count"] == 3


def test_accumulator_conventions():
    acc = metrics.MetricAccumulator("kitti")
    acc.update(*image_a())
    acc.update(*image_b())
    r = acc.result()
    assert r["epe/pooled"] == pytest.approx(16.0 / 6)
    assert r["epe/per_image_mean"] == pytest.approx((2.125 + 3.75) / 2)
    assert r["fl_all/pooled"] == pytest.approx(100 * 2 / 6)
    assert r["fl_all/per_image_mean"] == pytest.approx(37.5)
    assert r["1px/pooled"] == pytest.approx(2 / 6)
    assert r["1px/per_image_mean"] == pytest.approx(0.25)
    assert r["5px/pooled"] == pytest.approx(5 / 6)
    assert r["5px/per_image_mean"] == pytest.approx(0.875)
    assert (r["count"], r["images"], r["nan_count"]) == (6, 2, 0)
    # RAFT's KITTI protocol: EPE per image, Fl pooled
    assert r["epe"] == r["epe/per_image_mean"] and r["fl_all"] == r["fl_all/pooled"]
    sintel = metrics.MetricAccumulator("sintel")
    sintel.merge(acc)
    assert sintel.result()["epe"] == pytest.approx(16.0 / 6)
    assert "epe" not in metrics.MetricAccumulator().result()


def test_accumulator_batches_and_empty_images():
    pred, gt = image_a()
    acc = metrics.MetricAccumulator()
    per_image = acc.update(np.stack([pred, gt]), np.stack([gt, gt]))
    assert [p["epe"] for p in per_image] == [pytest.approx(2.125), 0.0]
    acc.update(pred, gt, np.zeros((2, 2), bool))  # no valid pixel: skipped, reported
    r = acc.result()
    assert np.isnan(metrics.flow_metrics(pred, gt, np.zeros((2, 2), bool))["epe"])
    assert r["images"] == 2 and r["empty_images"] == 1 and r["count"] == 8
    assert r["epe/per_image_mean"] == pytest.approx(2.125 / 2)
    assert r["epe/pooled"] == pytest.approx(8.5 / 8)
    with pytest.raises(ValueError, match="convention"):
        metrics.MetricAccumulator("middlebury")
    with pytest.raises(ValueError, match="valid must have shape"):
        acc.update(pred, gt, np.ones((3, 3), bool))
