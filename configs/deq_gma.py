"""DEQ-GMA (deq-flow ``--gma``): DEQ-RAFT's recipes with GMA's global motion aggregation.

deq-flow released no DEQ-GMA script or checkpoint; these stages reuse DEQ-RAFT's (v2
``train_H.sh`` for Chairs/Things, v1 ``train_H_full.sh`` for Sintel/KITTI).
Quick start (synthetic data, Tiny model):
  python -m jflow.main --config=configs/deq_gma.py --workdir=runs/deq_gma_quickstart
Full schedule: ``configs/deq_gma.py:H,stage=chairs`` then ``:H,stage=things`` with
``--config.train.init_from=<chairs workdir>``. Evaluation uses 60 solver iterations.
Variants: sizes ``T``, ``B``, ``L``, ``H``, ``G``; ``:smoke`` (tests).
"""
from jflow import recipes


def get_config(arg=None):
    return recipes.deq_config("deq_gma", arg)
