"""RAFT (Teed & Deng, ECCV 2020), recipe of princeton-vl/RAFT ``train_standard.sh``.

Quick start on synthetic data (no download):
  python -m jflow.main --config=configs/raft.py --workdir=runs/raft_synthetic
Published Chairs -> Things -> Sintel -> KITTI schedule (2 GPUs, fp32 in the original):
  python -m jflow.main --config=configs/raft.py:stage=chairs --workdir=runs/raft_chairs \\
      --config.data.root=/data
  python -m jflow.main --config=configs/raft.py:stage=things --workdir=runs/raft_things \\
      --config.data.root=/data --config.train.init_from=runs/raft_chairs
  (then stage=sintel and stage=kitti, each initialised from the previous stage)
  chairs 100k steps, batch 10, lr 4e-4, crop 368x496, wd 1e-4, gamma 0.8; things 100k, 6,
  1.25e-4, 400x720; sintel 100k, 6, 1.25e-4, 368x768, wd 1e-5, gamma 0.85 on
  100 Sintel-clean + 100 Sintel-final + 200 KITTI + 5 HD1K + Things-clean; kitti 50k, 6, 1e-4,
  288x960, wd 1e-5, gamma 0.85. BatchNorm frozen after Chairs. C+T reference: Sintel train
  clean/final 1.43/2.71, KITTI-15 train EPE 5.04, Fl-all 17.4 %.
Variants: ``raft.py:small`` (RAFT-small), ``:smoke`` (a few steps on tiny images, for tests).
Evaluate: add ``--config.mode=eval --config.eval.checkpoint=DIR`` (24/32/24 iterations on
Chairs/Sintel/KITTI).
"""
from jflow import recipes


def get_config(arg=None):
    return recipes.recurrent_config("raft", arg, recipes.RAFT_STAGES, recipes.RAFT_EVAL_ITERS)
