"""Shared tiny training setup for the trainer tests: smoke config, models and a fixed batch."""
import pathlib

import numpy as np

from jflow.config_files import config_module
from jflow.models import model_from_config
from fake_flow_model import TinyFlowModel

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config_module(name):
    return config_module(str(CONFIGS / f"{name}.py"))


def smoke_config():
    """``configs/deq_raft.py:smoke``: DEQ-RAFT-T, 3 solver steps, 32x48 synthetic pairs."""
    return load_config_module("deq_raft").get_config("smoke")


def model(config):
    return model_from_config(config)


def fake_model(config):
    """A model-agnostic stand-in for evaluation-logic tests (cheap to compile)."""
    return TinyFlowModel(iters=3, eval_iters=3, freeze_bn=bool(config.model.freeze_bn))


def batch(config, n):
    from jflow.data.synthetic import SyntheticFlow
    h, w = config.data.crop
    src = SyntheticFlow(n, h, w, seed=3)
    samples = [src[i] for i in range(n)]
    return {k: np.stack([s[k] for s in samples]) for k in ("image1", "image2", "flow", "valid")}
