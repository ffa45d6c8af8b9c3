"""Sequence loss and fixed-point correction loss against float64 numpy references."""
import numpy as np
import pytest

from jflow import losses


def _reference_loss(preds, gt, valid, weights, max_flow=400.0):
    preds, gt = np.asarray(preds, np.float64), np.asarray(gt, np.float64)
    mask = (valid >= 0.5) & (np.linalg.norm(gt, axis=-1) < max_flow)
    total = 0.0
    for w, p in zip(weights, preds):
        total += w * np.mean(mask[..., None] * np.abs(p - gt))  # invalid pixels in the mean
    return total


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, b, h, w = 4, 2, 5, 6
    gt = rng.normal(0, 3, (b, h, w, 2)).astype(np.float32)
    gt[0, 0, 0] = (500.0, 0.0)  # |gt| >= 400: masked
    valid = rng.random((b, h, w)) > 0.3
    preds = gt[None] + rng.normal(0, 1, (n, b, h, w, 2)).astype(np.float32)
    return preds, gt, valid


def test_sequence_loss_matches_reference(data):
    preds, gt, valid = data
    loss, metrics = losses.sequence_loss(preds, gt, valid, gamma=0.8)
    ref = _reference_loss(preds, gt, valid, [0.8 ** 3, 0.8 ** 2, 0.8, 1.0])
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    mask = (valid >= 0.5) & (np.linalg.norm(gt, axis=-1) < 400)
    epe = np.linalg.norm(preds[-1].astype(np.float64) - gt, axis=-1)[mask]
    np.testing.assert_allclose(float(metrics["epe"]), epe.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["3px"]), (epe < 3).mean(), rtol=1e-6)


def test_large_flow_and_invalid_pixels_do_not_contribute(data):
    preds, gt, valid = data
    bad = preds.copy()
    bad[:, 0, 0, 0] += 1000.0  # a pixel with |gt| >= 400
    bad[:, ~valid] += 50.0  # invalid pixels
    a, _ = losses.sequence_loss(preds, gt, valid)
    b, _ = losses.sequence_loss(bad, gt, valid)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_last_prediction_has_weight_one_and_gamma_matters(data):
    preds, gt, valid = data
    only_last = np.zeros_like(preds)
    only_last[:] = gt
    only_last[-1] = preds[-1]
    loss, _ = losses.sequence_loss(only_last, gt, valid, gamma=0.5)
    np.testing.assert_allclose(float(loss), _reference_loss(preds[-1:], gt, valid, [1.0]),
                               rtol=1e-5)
    l1, _ = losses.sequence_loss(preds, gt, valid, gamma=0.5)
    l2, _ = losses.sequence_loss(preds, gt, valid, gamma=0.9)
    assert float(l1) < float(l2)


@pytest.mark.parametrize("mode,expected", [
    ("exp", [0.8 ** 3, 0.8 ** 2, 0.8, 1.0]),
    ("linear", [0.25, 0.5, 0.75, 1.0]),
    ("const", [1.0, 1.0, 1.0, 1.0]),
])
def test_correction_loss_weights(data, mode, expected):
    preds, gt, valid = data
    loss, _ = losses.fixed_point_correction_loss(preds, gt, valid, gamma=0.8, mode=mode)
    np.testing.assert_allclose(float(loss), _reference_loss(preds, gt, valid, expected), rtol=1e-5)


def test_bad_shapes_are_reported(data):
    preds, gt, valid = data
    with pytest.raises(ValueError, match="predictions"):
        losses.sequence_loss(preds[:, :1], gt, valid)
    with pytest.raises(ValueError, match="cubic"):
        losses.correction_weights(3, "cubic")
