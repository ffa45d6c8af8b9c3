"""TensorFlow-Datasets builders for every dataset (array_record files, no TensorFlow needed).

Builders: `jflow_synthetic` (generated, configurable size), and `jflow_chairs`,
`jflow_things` (configs clean/final), `jflow_sintel` (clean/final), `jflow_kitti`, `jflow_hd1k`,
which read the dataset folder given as `manual_dir` (the folder itself, e.g. `.../Sintel`; its
layout is in each builder's `MANUAL_DOWNLOAD_INSTRUCTIONS`). Examples keep generation order
(`disable_shuffling`) and carry their `index`, so example `i` equals `reader[i]`.

    import jflow.data.tfds_builders  # registers the builders
    b = JflowSintel(config="clean", data_dir=out, file_format="array_record")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=sintel))
    src = TfdsFlowSource(b.as_data_source()["train"])   # or tfds.data_source("jflow_sintel/clean")

Arrays are stored as zlib-compressed `Tensor` features (TFDS image features need TensorFlow to
encode numpy arrays).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from jflow.data import chairs, hd1k, kitti, sintel, things
from jflow.data.errors import DatasetError
from jflow.data.params import AugmentParams
from jflow.data.synthetic import SyntheticFlow

VERSION = tfds.core.Version("1.0.0")


def features() -> tfds.features.FeaturesDict:
    """The example features shared by all builders."""
    t = tfds.features.Tensor
    return tfds.features.FeaturesDict({
        "image1": t(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
        "image2": t(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
        "flow": t(shape=(None, None, 2), dtype=np.float32, encoding="zlib"),
        "valid": t(shape=(None, None), dtype=np.bool_, encoding="zlib"),
        "index": tfds.features.Scalar(dtype=np.int64),
        "frame": tfds.features.Scalar(dtype=np.int64),
        "has_gt": tfds.features.Scalar(dtype=np.bool_),
        "dataset": tfds.features.Text(),
        "scene": tfds.features.Text(),
        "path": tfds.features.Text(),
    })


def to_example(sample: dict[str, Any], index: int) -> dict[str, Any]:
    """A data-contract sample -> TFDS example."""
    meta = sample["meta"]
    return dict(image1=sample["image1"], image2=sample["image2"], flow=sample["flow"],
                valid=sample["valid"], index=index, frame=int(meta["frame"]),
                has_gt=bool(meta.get("has_gt", True)), dataset=str(meta["dataset"]),
                scene=str(meta["scene"]), path=str(meta["path"]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def from_example(example: dict[str, Any]) -> dict[str, Any]:
    """A TFDS example (as read from a data source) -> data-contract sample."""
    meta = dict(dataset=_text(example["dataset"]), scene=_text(example["scene"]),
                frame=int(example["frame"]), path=_text(example["path"]),
                has_gt=bool(example["has_gt"]), index=int(example["index"]))
    return dict(image1=np.asarray(example["image1"]), image2=np.asarray(example["image2"]),
                flow=np.asarray(example["flow"], np.float32),
                valid=np.asarray(example["valid"], bool), meta=meta)


class TfdsFlowSource:
    """Random-access data-contract view of a TFDS data source (e.g. `as_data_source()[split]`)."""

    def __init__(self, data_source, augment_params: AugmentParams = AugmentParams(),
                 name: str = "tfds"):
        self.data_source = data_source
        self.augment_params = augment_params
        self.name = name

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return from_example(self.data_source[index])

    def augment_params_at(self, index: int) -> AugmentParams:
        return self.augment_params


class _FlowBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared `_info` / `_generate_examples`; subclasses define `_sources`."""

    VERSION = VERSION
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 derives this through `importlib_resources`, which it does not install on
        # Python >= 3.9; the module file is what it looks for.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=features(), disable_shuffling=True,
                                     description=self.__doc__)

    def _sources(self) -> dict[str, Any]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        self._dl_manager = dl_manager
        return {split: self._generate_examples(src) for split, src in self._sources().items()}

    def _manual_dir(self) -> str:
        try:
            return str(self._dl_manager.manual_dir)
        except (AssertionError, ValueError):
            raise DatasetError(
                f"{self.name}: no manual_dir: pass tfds.download.DownloadConfig(manual_dir=...)"
                " naming the dataset folder itself (the <root>/<Dataset> folder below).\n"
                f"Expected layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            ) from None

    def _generate_examples(self, source) -> Iterator[tuple[int, dict[str, Any]]]:
        for i in range(len(source)):
            yield i, to_example(source[i], i)


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    """Size and sample counts of the synthetic dataset."""

    height: int = 64
    width: int = 96
    num_train: int = 2000
    num_val: int = 200
    seed: int = 0
    max_flow: float | None = None


class JflowSynthetic(_FlowBuilder):
    """Procedural synthetic flow pairs (`jflow.data.synthetic`); needs no download."""

    BUILDER_CONFIGS = [
        SyntheticConfig(name="64x96", height=64, width=96),
        SyntheticConfig(name="96x128", height=96, width=128),
        SyntheticConfig(name="368x496", height=368, width=496, num_train=10_000, num_val=500),
    ]

    def _sources(self):
        c = self.builder_config
        kw = dict(height=c.height, width=c.width, max_flow=c.max_flow)
        return {"train": SyntheticFlow(c.num_train, seed=c.seed, **kw),
                "validation": SyntheticFlow(c.num_val, seed=c.seed + 1_000_003, **kw)}


class JflowChairs(_FlowBuilder):
    """FlyingChairs with RAFT's train/validation split."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = chairs.LAYOUT

    def _sources(self):
        root = self._manual_dir()
        return {"train": chairs.FlyingChairs(root, "train"),
                "validation": chairs.FlyingChairs(root, "val")}


_PASSES = [tfds.core.BuilderConfig(name="clean"), tfds.core.BuilderConfig(name="final")]


class JflowThings(_FlowBuilder):
    """FlyingThings3D, left camera, both directions (one config per pass)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = things.LAYOUT
    BUILDER_CONFIGS = _PASSES

    def _sources(self):
        root, dstype = self._manual_dir(), self.builder_config.name
        return {"train": things.FlyingThings3D(root, dstype, "train")}


class JflowSintel(_FlowBuilder):
    """MPI Sintel training (with flow) and test (without) for one pass."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = sintel.LAYOUT
    BUILDER_CONFIGS = _PASSES

    def _sources(self):
        root, dstype = self._manual_dir(), self.builder_config.name
        return {"train": sintel.MpiSintel(root, dstype, "train"),
                "test": sintel.MpiSintel(root, dstype, "test")}


class JflowKitti(_FlowBuilder):
    """KITTI-2015 training (sparse flow) and testing (no flow)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = kitti.LAYOUT

    def _sources(self):
        root = self._manual_dir()
        return {"train": kitti.Kitti(root, "train"), "test": kitti.Kitti(root, "test")}


class JflowHd1k(_FlowBuilder):
    """HD1K training pairs (sparse flow)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = hd1k.LAYOUT

    def _sources(self):
        return {"train": hd1k.HD1K(self._manual_dir(), "train")}
