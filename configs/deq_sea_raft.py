"""DEQ SEA-RAFT: SEA-RAFT's update operator solved for its fixed point (jflow's model, no paper).

Quick start on synthetic data (no download; SEA-RAFT S encoders, 12 naive solver steps, 2
correction states, 18 steps at validation):
  python -m jflow.main --config=configs/deq_sea_raft.py:S --workdir=runs/deq_sea_raft_synthetic
Smoke test (a few steps on tiny images, as the tests run it):
  python -m jflow.main --config=configs/deq_sea_raft.py:S,smoke --workdir=/tmp/deq_sea_raft_smoke
Start from SEA-RAFT weights (same parameter names): a SEA-RAFT run or converted checkpoint with
  --config.train.init_from=DIR, or convert an official SEA-RAFT .pth for this model directly:
  python -m jflow.convert --config=configs/deq_sea_raft.py:S \
      --torch_checkpoint=Tartan-C368x496-S.pth --output=ckpt/deq-sea-raft-s
Variants: ``S``, ``M``, ``L`` (SEA-RAFT's encoders), ``stage=...`` (SEA-RAFT's data and optimiser
stages; the solver settings stay these, override with ``--config.deq.*``), ``smoke``.
Every ``config.deq`` option applies (solver, f_max_steps, f_tol, grad ift/phantom/unrolled,
n_states, core, ...; see configs/deq_raft.py); the loss is SEA-RAFT's mixture of Laplace on the
regressed initial flow and the correction states, weighted by ``config.train.correction_weights``.
Experiment vs unrolled SEA-RAFT: experiments/deq_sea_raft.py.
"""
from jflow import recipes


def get_config(arg=None):
    return recipes.deq_sea_raft_config(arg)
