"""GMA (Jiang et al., ICCV 2021), recipe of zacjiang/GMA ``train.sh`` (AMP, 2 GPUs).

Quick start on synthetic data (no download):
  python -m jflow.main --config=configs/gma.py --workdir=runs/gma_synthetic
Published schedule (each stage initialised with ``--config.train.init_from=<previous workdir>``):
  python -m jflow.main --config=configs/gma.py:stage=chairs --workdir=runs/gma_chairs \\
      --config.data.root=/data --config.model.mixed_precision=True
  chairs 120k steps, batch 8, lr 2.5e-4; things and sintel 120k, 6, 1.25e-4; kitti 50k, 6,
  1.25e-4; RAFT's crops, weight decay and gamma. C+T reference: Sintel train clean/final
  1.30/2.74, KITTI-15 train EPE 4.69, Fl-all 17.1 %.
Variants: ``:smoke``. Evaluate: ``--config.mode=eval --config.eval.checkpoint=DIR`` (12 iterations).
"""
from jflow import recipes


def get_config(arg=None):
    return recipes.recurrent_config("gma", arg, recipes.GMA_STAGES, recipes.GMA_EVAL_ITERS)
