"""TFDS builders: build into tmp_path, read back without TensorFlow, compare with the readers."""
import os
import sys

import numpy as np
import pytest

import tensorflow_datasets as tfds  # noqa: E402  (a dependency: never skipped)

from jflow.data import (HD1K, DatasetError, FlyingChairs, FlyingThings3D, Kitti,  # noqa: E402
                        MpiSintel, SyntheticFlow)
from jflow.data.tfds_builders import (JflowChairs, JflowHd1k, JflowKitti,  # noqa: E402
                                      JflowSintel, JflowSynthetic, JflowThings, SyntheticConfig,
                                      TfdsFlowSource)
from tests import fixtures_data as fx  # noqa: E402

KEYS = ("image1", "image2", "flow", "valid")


def _assert_same(got, want):
    for key in KEYS:
        np.testing.assert_array_equal(got[key], want[key])
        assert got[key].dtype == want[key].dtype
    for key in ("dataset", "scene", "frame", "path", "has_gt"):
        assert got["meta"][key] == want["meta"][key]


def test_synthetic_builder_round_trip(tmp_path):
    config = SyntheticConfig(name="tiny", height=16, width=24, num_train=4, num_val=2, seed=3)
    builder = JflowSynthetic(config=config, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    assert list((tmp_path / "jflow_synthetic" / "tiny" / "1.0.0").glob("*.array_record*"))
    sources = builder.as_data_source()
    train = TfdsFlowSource(sources["train"])
    ref = SyntheticFlow(4, 16, 24, seed=3)
    assert len(train) == 4 and len(sources["validation"]) == 2
    for i in range(4):
        _assert_same(train[i], ref[i])
        assert train[i]["meta"]["index"] == i
    again = tfds.data_source("jflow_synthetic/tiny", data_dir=str(tmp_path))
    _assert_same(TfdsFlowSource(again["validation"])[1],
                 SyntheticFlow(2, 16, 24, seed=3 + 1_000_003)[1])
    assert "tensorflow" not in sys.modules


def test_chairs_builder_from_manual_dir(tmp_path):
    fx.write_chairs(str(tmp_path / "raw"))
    manual = str(tmp_path / "raw" / "FlyingChairs_release")
    builder = JflowChairs(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual))
    sources = builder.as_data_source()
    for split, name in (("train", "train"), ("validation", "val")):
        reader = FlyingChairs(manual, name)
        got = TfdsFlowSource(sources[split])
        assert len(got) == len(reader)
        for i in range(len(reader)):
            _assert_same(got[i], reader[i])


def test_builder_without_manual_dir_lists_layout(tmp_path):
    builder = JflowChairs(data_dir=str(tmp_path), file_format="array_record")
    with pytest.raises(DatasetError, match="(?s)manual_dir.*Expected layout.*chairs_split"):
        builder.download_and_prepare()
    assert not os.path.exists(tmp_path / "jflow_chairs" / "1.0.0" / "dataset_info.json")


def _build(builder_cls, manual: str, data_dir: str, config: str | None = None) -> dict:
    """Build `builder_cls` from `manual` into `data_dir`; return its data sources per split."""
    kw = {} if config is None else {"config": config}
    builder = builder_cls(data_dir=data_dir, file_format="array_record", **kw)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return builder.as_data_source()


def _assert_split(source, reader) -> None:
    got = TfdsFlowSource(source)
    assert len(got) == len(reader) > 0
    for i in range(len(reader)):
        sample = got[i]
        _assert_same(sample, reader[i])
        assert sample["meta"]["index"] == i


# (builder, manual folder under the fixture root, fixture writer, config, {split: reader})
CASES = {
    "things_clean": (JflowThings, "FlyingThings3D", fx.write_things, "clean",
                     lambda r: {"train": FlyingThings3D(r, "clean", "train")}),
    "things_final": (JflowThings, "FlyingThings3D", fx.write_things, "final",
                     lambda r: {"train": FlyingThings3D(r, "final", "train")}),
    "sintel_clean": (JflowSintel, "Sintel", fx.write_sintel, "clean",
                     lambda r: {"train": MpiSintel(r, "clean", "train"),
                                "test": MpiSintel(r, "clean", "test")}),
    "sintel_final": (JflowSintel, "Sintel", fx.write_sintel, "final",
                     lambda r: {"train": MpiSintel(r, "final", "train"),
                                "test": MpiSintel(r, "final", "test")}),
    "kitti": (JflowKitti, "KITTI", fx.write_kitti, None,
              lambda r: {"train": Kitti(r, "train"), "test": Kitti(r, "test")}),
    "hd1k": (JflowHd1k, "HD1K", fx.write_hd1k, None, lambda r: {"train": HD1K(r, "train")}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_manual_builder_round_trip(tmp_path, case):
    builder_cls, folder, write, config, readers = CASES[case]
    write(str(tmp_path / "raw"))
    manual = str(tmp_path / "raw" / folder)
    sources = _build(builder_cls, manual, str(tmp_path / "tfds"), config)
    want = readers(manual)
    assert set(sources) == set(want)
    for split, reader in want.items():
        _assert_split(sources[split], reader)
    has_gt = {s: TfdsFlowSource(sources[s])[0]["meta"]["has_gt"] for s in want}
    assert has_gt == {s: s == "train" for s in want}
    name = f"{builder_cls.name}/{config}" if config else builder_cls.name
    again = tfds.data_source(name, data_dir=str(tmp_path / "tfds"))
    last = len(want["train"]) - 1
    _assert_same(TfdsFlowSource(again["train"])[last], want["train"][last])
    assert "tensorflow" not in sys.modules
