"""TFDS builders: build into tmp_path, read back without TensorFlow, compare with the readers."""
import os
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from jflow.data import DatasetError, FlyingChairs, SyntheticFlow  # noqa: E402
from jflow.data.tfds_builders import (JflowChairs, JflowSynthetic, SyntheticConfig,  # noqa: E402
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
