"""Dataset readers on tiny fixtures in the real formats; errors; build_source and mixtures."""
import os

import numpy as np
import pytest

from jflow.data import (CorruptSampleError, DatasetError, FlyingChairs, FlyingThings3D, HD1K,
                        Kitti, Mixture, MpiSintel, build_source, parse_spec)
from jflow.data import params as P
from tests import fixtures_data as fx


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    data = dict(chairs=fx.write_chairs(str(base)), things=fx.write_things(str(base)),
                sintel=fx.write_sintel(str(base)), kitti=fx.write_kitti(str(base)),
                hd1k=fx.write_hd1k(str(base)))
    return str(base), data


def _check_contract(s):
    h, w = s["image1"].shape[:2]
    assert s["image1"].dtype == s["image2"].dtype == np.uint8 and s["image2"].shape == (h, w, 3)
    assert s["flow"].dtype == np.float32 and s["flow"].shape == (h, w, 2)
    assert s["valid"].dtype == bool and s["valid"].shape == (h, w)
    assert {"dataset", "scene", "frame", "path", "has_gt"} <= set(s["meta"])


def test_chairs_split_and_content(root):
    base, data = root
    train = FlyingChairs(os.path.join(base, "FlyingChairs_release"), "train")
    val = FlyingChairs(os.path.join(base, "FlyingChairs_release"), "val")
    assert (len(train), len(val)) == (2, 1)
    s = val[0]
    _check_contract(s)
    np.testing.assert_array_equal(s["image1"], data["chairs"][2]["image1"])
    np.testing.assert_array_equal(s["image2"], data["chairs"][2]["image2"])
    np.testing.assert_allclose(s["flow"], data["chairs"][2]["flow"])
    assert s["valid"].all() and s["meta"]["path"].endswith("00003_img1.ppm")


def test_things_directions_and_passes(root):
    base, data = root
    ds = FlyingThings3D(os.path.join(base, "FlyingThings3D"), "final")
    assert len(ds) == 4  # 3 frames: 2 pairs per direction
    fut, past = ds[0], ds[2]
    _check_contract(fut)
    np.testing.assert_array_equal(fut["image1"], data["things"]["final"][0])
    np.testing.assert_array_equal(fut["image2"], data["things"]["final"][1])
    np.testing.assert_allclose(fut["flow"], data["things"]["into_future"][0])
    # into_past pairs (img[i+1], img[i]) with flow[i+1]
    np.testing.assert_array_equal(past["image1"], data["things"]["final"][1])
    np.testing.assert_array_equal(past["image2"], data["things"]["final"][0])
    np.testing.assert_allclose(past["flow"], data["things"]["into_past"][1])


def test_things_exclusion_list(root, tmp_path):
    base, _ = root
    things = os.path.join(base, "FlyingThings3D")
    with open(os.path.join(things, "all_unused_files.txt"), "w") as f:
        f.write("A/0000/left/0006.png\n")
    try:
        ds = FlyingThings3D(things, "clean")
        assert len(ds) == 3
        assert all(not r.image1.endswith("0006.png") for r in ds.records)
    finally:
        os.remove(os.path.join(things, "all_unused_files.txt"))


def test_sintel_scenes_and_test_split(root):
    base, data = root
    sintel = os.path.join(base, "Sintel")
    ds = MpiSintel(sintel, "clean", "train")
    assert len(ds) == 3
    assert ds.scenes() == {"alley_1": [0, 1], "bamboo_2": [2]}
    s = ds[1]
    _check_contract(s)
    assert (s["meta"]["scene"], s["meta"]["frame"]) == ("alley_1", 1)
    np.testing.assert_array_equal(s["image1"], data["sintel"][("training", "clean", "alley_1", 2)])
    np.testing.assert_allclose(s["flow"], data["sintel"][("flow", "alley_1", 2)])
    test = MpiSintel(sintel, "final", "test")
    t = test[0]
    assert len(test) == 3 and not t["meta"]["has_gt"] and not t["valid"].any()
    assert not t["flow"].any()


def test_kitti_sparse_valid(root):
    base, data = root
    ds = Kitti(os.path.join(base, "KITTI"), "train")
    assert len(ds) == 2
    s = ds[1]
    _check_contract(s)
    np.testing.assert_array_equal(s["valid"], data["kitti"][1]["valid"])
    np.testing.assert_allclose(s["flow"], data["kitti"][1]["flow"])
    assert s["meta"]["scene"] == "000001"
    test = Kitti(os.path.join(base, "KITTI"), "test")
    assert len(test) == 1 and not test[0]["meta"]["has_gt"]


def test_hd1k_sequences(root):
    base, data = root
    ds = HD1K(os.path.join(base, "HD1K"))
    assert len(ds) == 3  # (3 - 1) + (2 - 1)
    s = ds[2]
    assert s["meta"]["scene"] == "000001"
    img, flow, valid = data["hd1k"][(1, 0)]
    np.testing.assert_array_equal(s["image1"], img)
    np.testing.assert_array_equal(s["valid"], valid)
    np.testing.assert_allclose(s["flow"], flow)


def test_missing_folder_lists_layout(tmp_path):
    for cls, args in ((FlyingChairs, ()), (FlyingThings3D, ()), (MpiSintel, ()), (Kitti, ()),
                      (HD1K, ())):
        with pytest.raises(DatasetError, match="Expected layout"):
            cls(str(tmp_path / "nowhere"), *args)
    with pytest.raises(DatasetError, match="FlyingChairs_release"):
        build_source("chairs", str(tmp_path))


def test_incomplete_folder_is_reported(root, tmp_path):
    base, _ = root
    fx.write_sintel(str(tmp_path))
    os.remove(tmp_path / "Sintel" / "training" / "flow" / "alley_1" / "frame_0002.flo")
    with pytest.raises(DatasetError, match="(?s)alley_1.*Expected layout"):
        MpiSintel(str(tmp_path / "Sintel"))
    fx.write_chairs(str(tmp_path))
    os.remove(tmp_path / "FlyingChairs_release" / "chairs_split.txt")
    with pytest.raises(DatasetError, match="chairs_split.txt"):
        FlyingChairs(str(tmp_path / "FlyingChairs_release"))


def test_corrupt_sample_named_or_skipped(tmp_path):
    fx.write_chairs(str(tmp_path), split_ids=(1, 1, 1))
    bad = tmp_path / "FlyingChairs_release" / "data" / "00002_flow.flo"
    bad.write_bytes(b"PIEH\x00")
    ds = FlyingChairs(str(tmp_path / "FlyingChairs_release"))
    with pytest.raises(CorruptSampleError, match="00002_flow.flo"):
        ds[1]
    skipping = FlyingChairs(str(tmp_path / "FlyingChairs_release"), skip_corrupt=True)
    with pytest.warns(UserWarning, match="00002_flow.flo"):
        s = skipping[1]
    np.testing.assert_array_equal(s["image1"], ds[2]["image1"])


def test_parse_spec_and_errors():
    terms = parse_spec("100*sintel_clean + kitti(scale=-0.3:0.5,flip=1)+things_clean")
    assert [(t.weight, t.name) for t in terms] == [(100, "sintel_clean"), (1, "kitti"),
                                                    (1, "things_clean")]
    assert terms[1].options == {"scale": "-0.3:0.5", "flip": "1"}
    for bad in ("chair", "0*kitti", "kitti(scale)", "2x*kitti", ""):
        with pytest.raises(ValueError, match="data spec"):
            parse_spec(bad)


def test_sintel_stage_mixture(root):
    base, _ = root
    mix = build_source("100*sintel_clean+100*sintel_final+200*kitti+5*hd1k+things_clean", base)
    assert isinstance(mix, Mixture)
    assert len(mix) == 100 * 3 + 100 * 3 + 200 * 2 + 5 * 3 + 2 * 2
    kinds = {}
    for i in (0, 300, 600, 1000, 1015):
        s = mix[i]
        _check_contract(s)
        kinds[s["meta"]["dataset"]] = mix.augment_params_at(i)
    assert kinds == {"sintel_clean": P.SINTEL, "sintel_final": P.SINTEL,
                     "kitti": P.KITTI_IN_SINTEL_MIX, "hd1k": P.HD1K_IN_SINTEL_MIX,
                     "things_clean": P.SINTEL}
    # The same datasets alone follow their own stage.
    assert build_source("kitti", base).augment_params == P.KITTI
    assert build_source("kitti(scale=-1:0,flip=1)", base).augment_params == P.AugmentParams(
        True, -1.0, 0.0, True)
    things = build_source("things", base)
    assert isinstance(things, Mixture) and len(things) == 8
    assert things.augment_params_at(0) == P.THINGS
    assert len(build_source("chairs", {"chairs": os.path.join(base, "FlyingChairs_release")},
                            "val")) == 1


def test_synthetic_spec_and_val_seed():
    train = build_source("synthetic", None, "train", 5, num_samples=3, height=16, width=24)
    val = build_source("synthetic", None, "val", 5, num_samples=3, height=16, width=24)
    assert len(train) == 3 and train[0]["image1"].shape == (16, 24, 3)
    assert not np.array_equal(train[0]["image1"], val[0]["image1"])
    small = build_source("synthetic(n=2,h=8,w=12,max_flow=3)", num_samples=50)
    assert len(small) == 2 and small[1]["flow"].shape == (8, 12, 2)
    with pytest.raises(ValueError, match="unknown synthetic option"):
        build_source("synthetic(depth=3)")


def test_mismatched_pair_is_corrupt(tmp_path):
    from jflow import io as jio
    fx.write_chairs(str(tmp_path), split_ids=(1,))
    data = tmp_path / "FlyingChairs_release" / "data"
    jio.write_image(str(data / "00001_img2.ppm"), np.zeros((5, 7, 3), np.uint8))
    with pytest.raises(CorruptSampleError, match="00001_img2.ppm"):
        FlyingChairs(str(tmp_path / "FlyingChairs_release"))[0]
