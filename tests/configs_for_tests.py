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


def host_trainer(config, batch_size=2, size=(64, 64)):
    """``(model, state, update, batches)`` for ``config`` on host-filled random weights (no
    initialiser to compile): the compiled trainer update and global synthetic batches."""
    from jflow import sharding, train
    from jflow.data import build_source
    from jflow.data.loader import Loader
    from jflow.models import random_variables

    m = model_from_config(config)
    variables = random_variables(m, seed=0)
    mesh = sharding.make_mesh(1)
    state = train.state_from_weights(variables["params"], variables.get("batch_stats", {}),
                                     config, mesh)
    source = build_source("synthetic", None, "train", 0, num_samples=2 * batch_size,
                          height=size[0], width=size[1])
    loader = Loader(source, batch_size, seed=0, augment=False, crop=size, shuffle=False,
                    num_workers=0, drop_meta=True)
    batches = (sharding.global_batch(b, mesh) for b in loader)
    return m, state, train.make_update_fn(m, config, mesh), batches
