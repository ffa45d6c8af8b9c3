"""SEA-RAFT's datasets, TartanAir (.npy flow + mask) and Spring (HDF5 .flo5 at 2x), on tiny
fixtures in the real formats and layouts (tests/fixtures_data.py)."""
import os

import numpy as np
import pytest

from jflow.data import DatasetError, Spring, TartanAir, build_source, parse_spec
from jflow.data import params as P
from jflow.data.base import CorruptSampleError
from tests import fixtures_data as fx


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    return str(base), fx.write_tartanair(str(base)), fx.write_spring(str(base))


def test_tartanair_pairs_flow_and_mask_validity(root):
    base, data, _ = root
    ds = TartanAir(os.path.join(base, "tartanair"))
    assert len(ds) == 3  # (3 - 1) + (2 - 1) pairs
    assert [(s["meta"]["scene"], s["meta"]["frame"]) for s in ds] == [
        ("abandonedfactory/Easy/abandonedfactory/abandonedfactory/Easy/P000", 0),
        ("abandonedfactory/Easy/abandonedfactory/abandonedfactory/Easy/P000", 1),
        ("amusement/Easy/amusement/amusement/Easy/P001", 0)]
    assert ds.augment_params == P.TARTANAIR and ds.augment_params.sparse
    s = ds[1]
    flow, mask = data[(0, "flow", 1)]
    np.testing.assert_array_equal(s["image1"], data[(0, "image", 1)])
    np.testing.assert_array_equal(s["image2"], data[(0, "image", 2)])
    # validity 1 - mask/100 (SEA-RAFT), kept where > 0.5: masks 0, 1, 10 valid, 100 not
    np.testing.assert_array_equal(s["valid"], 1 - mask / 100 > 0.5)
    assert set(np.unique(mask)) == {0, 1, 10, 100}
    np.testing.assert_array_equal(s["flow"], np.where(s["valid"][..., None], flow, 0))
    assert s["meta"]["has_gt"] and s["meta"]["dataset"] == "tartanair"
    assert len(build_source("tartanair", base)) == 3


def test_spring_forward_backward_and_subsampled_ground_truth(root):
    base, _, data = root
    ds = Spring(os.path.join(base, "spring"))
    # per camera: FW 1->2, 2->3, then BW 3->2, 2->1 (SEA-RAFT's order)
    assert [(s.scene, s.frame) for s in ds.records] == [
        (f"0001/{cam}/{d}", k) for cam in ("left", "right")
        for d, k in (("FW", 1), ("FW", 2), ("BW", 3), ("BW", 2))]
    assert ds.augment_params == P.SPRING
    s = ds[2]  # left BW 3 -> 2
    np.testing.assert_array_equal(s["image1"], data[("train", "left", 3)])
    np.testing.assert_array_equal(s["image2"], data[("train", "left", 2)])
    full = data[("BW", "left", 3)]
    assert full.shape == (2 * fx.H, 2 * fx.W, 2) and s["flow"].shape == (fx.H, fx.W, 2)
    assert not s["valid"][0, 0] and s["valid"].sum() == fx.H * fx.W - 1  # NaN -> invalid
    np.testing.assert_array_equal(s["flow"][1:], full[::2, ::2][1:])
    np.testing.assert_array_equal(s["flow"][0, 0], [0, 0])
    # test: no flow; val without a val folder = the training set; the spec DSL names
    test = Spring(os.path.join(base, "spring"), "test")
    assert len(test) == 8 and not test[0]["meta"]["has_gt"] and not test[0]["valid"].any()
    assert len(Spring(os.path.join(base, "spring"), "val")) == 8
    assert len(build_source("spring", base, split="val")) == 8
    mix = build_source("2*spring+tartanair", base)
    assert len(mix) == 2 * 8 + 3
    assert [t.name for t in parse_spec("tartanair+spring")] == ["tartanair", "spring"]


def test_missing_incomplete_and_corrupt_files_are_named(root, tmp_path):
    base, _, _ = root
    for cls in (TartanAir, Spring):
        with pytest.raises(DatasetError, match="Expected layout"):
            cls(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="only training data"):
        build_source("tartanair", base, split="val")
    fx.write_tartanair(str(tmp_path), trajectories=(3,))
    scene = tmp_path / "tartanair/abandonedfactory/Easy/abandonedfactory/abandonedfactory/Easy/P000"
    os.remove(scene / "flow" / "000001_000002_flow.npy")
    with pytest.raises(DatasetError, match="000001_000002_flow.npy"):
        TartanAir(str(tmp_path / "tartanair"))
    os.remove(scene / "flow" / "000000_000001_mask.npy")
    os.remove(scene / "image_left" / "000002_left.png")
    with pytest.raises(CorruptSampleError, match="000000_000001_mask.npy"):
        TartanAir(str(tmp_path / "tartanair"))[0]
    fx.write_spring(str(tmp_path), frames=2)
    flo5 = tmp_path / "spring/train/0001/flow_FW_left/flow_FW_left_0001.flo5"
    flo5.write_bytes(b"not hdf5")
    with pytest.raises(CorruptSampleError, match="flow_FW_left_0001.flo5"):
        Spring(str(tmp_path / "spring"))[0]
    os.remove(tmp_path / "spring/train/0001/flow_BW_right/flow_BW_right_0002.flo5")
    with pytest.raises(DatasetError, match="flow_BW_right_0002.flo5"):
        Spring(str(tmp_path / "spring"))


def test_tartanair_fractional_validity_through_the_sparse_resize(root):
    """SEA-RAFT keeps ``1 - mask/100`` fractional: a resized sample scatters only validity >= 1
    (mask 0), an unresized one keeps validity > 0.5 (masks 0, 1, 10)."""
    from jflow.data.augment import Augmentor, resize_sparse_flow

    base, data, _ = root
    s = TartanAir(os.path.join(base, "tartanair"))[1]
    flow, mask = data[(0, "flow", 1)]
    np.testing.assert_array_equal(s["valid_resize"], mask == 0)
    crop = (s["flow"].shape[0] - 1, s["flow"].shape[1] - 1)  # scale 1 and a crop offset 0 or 1
    params = P.AugmentParams(True, 0.0, 0.0, False)

    def crops(valid):
        return [valid[y:y + crop[0], x:x + crop[1]] for y in (0, 1) for x in (0, 1)]

    for prob, keep in ((1.0, mask == 0), (0.0, mask < 100)):
        out = Augmentor(crop, params, eraser_prob=0.0, spatial_prob=prob)(
            s, np.random.default_rng(0))
        assert "valid_resize" not in out
        if prob:
            keep = resize_sparse_flow(s["flow"], keep, 1.0, 1.0)[1]
        assert any(np.array_equal(out["valid"], c) for c in crops(keep))
        other = resize_sparse_flow(s["flow"], mask < 100, 1.0, 1.0)[1] if prob else mask == 0
        assert not any(np.array_equal(out["valid"], c) for c in crops(other))
