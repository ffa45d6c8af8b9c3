"""DEQ-RAFT (Bai, Geng, Savani & Kolter, CVPR 2022), recipes of locuslab/deq-flow v2.

Quick start (README's first command; synthetic data, Tiny model, 64x96 images, CPU-friendly):
  python -m jflow.main --config=configs/deq_raft.py --workdir=runs/quickstart
  300 steps, batch 4, lr 4e-4, 12 naive solver steps (18 at validation), 2 correction states.
  Measured on a 2-core CPU machine, compile included: 3 min 12 s wall (8 min when the machine
  was shared and heavily loaded); synthetic validation EPE 11.25 at step 0 -> 3.83 at step 300.
Published DEQ-Flow-H (v2 ``train_H.sh``: ``--huge --wnorm``, naive solver, 3 GPUs):
  python -m jflow.main --config=configs/deq_raft.py:H,stage=chairs --workdir=runs/deq_h_chairs \\
      --config.data.root=/data
    (120k steps, batch 12, lr 4e-4, crop 368x496, f_thres 36, 6 correction states x 1 phantom step)
  python -m jflow.main --config=configs/deq_raft.py:H,stage=things --workdir=runs/deq_h_things \\
      --config.data.root=/data --config.train.init_from=runs/deq_h_chairs
    (120k steps, batch 6, lr 1.25e-4, crop 400x720, f_thres 40, 2 states x 3 phantom steps, all_grad;
     ``--config.train.num_steps=360000`` for H-3x)
  stage=sintel / stage=kitti follow v1 ``train_H_full.sh`` (gamma 0.9, 6 states).
  Evaluation: ``int(40 * 1.5) = 60`` solver iterations, official naive return rule. Published C+T
  H-1x: Sintel train clean/final 1.27/2.58, KITTI-15 train EPE 3.76, F1 12.95 %.
Variants: sizes ``T`` (Tiny), ``B``, ``L``, ``H``, ``G``; ``:H`` alone gives the v2 H model with the
Things solver settings (f_thres 40, eval 60); ``:smoke`` is a few steps on tiny images (tests).
``:D`` is jflow's interpretation of the paper's size D (B widths, dilated duplicated GRU), no
official code or published checkpoint.
Evaluate: ``--config=configs/deq_raft.py:H --config.mode=eval --config.eval.checkpoint=DIR
--config.eval.datasets='("sintel_clean","sintel_final","kitti")' --config.eval.root=/data``.
"""
from jflow import recipes


def get_config(arg=None):
    return recipes.deq_config("deq_raft", arg)
