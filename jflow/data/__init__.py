"""Datasets, synthetic data, augmentation, TFDS builders and the loader.

Samples are dicts of numpy arrays: `image1`, `image2` (H, W, 3) uint8, `flow` (H, W, 2)
float32, `valid` (H, W) bool, and `meta` (dataset, scene, frame, path, has_gt).

Modules: `sources` (`build_source` and its spec DSL), one reader per dataset (`chairs`, `things`,
`sintel`, `kitti`, `hd1k`, `tartanair`, `spring`, over `base.FlowDataset`), `mixture`, `synthetic` (+ `textures`),
`augment` (+ `color`, `resize`, `params`), `loader`, `tfds_builders` (imported on demand: it
loads tensorflow-datasets), `errors`.
"""
from jflow.data.augment import Augmentor, make_augmentor
from jflow.data.chairs import FlyingChairs
from jflow.data.errors import CorruptSampleError, DatasetError
from jflow.data.hd1k import HD1K
from jflow.data.kitti import Kitti
from jflow.data.loader import Loader
from jflow.data.mixture import Mixture
from jflow.data.params import AugmentParams
from jflow.data.sintel import MpiSintel
from jflow.data.spring import Spring
from jflow.data.sources import build_source, parse_spec
from jflow.data.synthetic import SyntheticFlow
from jflow.data.tartanair import TartanAir
from jflow.data.things import FlyingThings3D

__all__ = [
    "AugmentParams", "Augmentor", "CorruptSampleError", "DatasetError", "FlyingChairs",
    "FlyingThings3D", "HD1K", "Kitti", "Loader", "Mixture", "MpiSintel", "Spring", "SyntheticFlow",
    "TartanAir", "build_source", "make_augmentor", "parse_spec",
]
