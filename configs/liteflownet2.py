"""LiteFlowNet2 (Hui, Tang, Loy, TPAMI 2020): the Sintel model, or the KITTI model (``:kitti``).

Quick start on synthetic data (no download):
  python -m jflow.main --config=configs/liteflownet2.py --workdir=runs/lfn2_synthetic
Published weights (ptlflow's conversions of the Caffe models; non-commercial licence):
  python -m jflow.convert --config=configs/liteflownet2.py \\
      --torch_checkpoint=liteflownet2-sintel-1e1eb282.ckpt --output=ckpt/lfn2-sintel
  python -m jflow.convert --config=configs/liteflownet2.py:kitti \\
      --torch_checkpoint=liteflownet2-kitti-da069fca.ckpt --output=ckpt/lfn2-kitti
Training stages (jflow/recipes.py LFN2_STAGES; each initialised from the previous one with
--config.train.init_from=...):
  python -m jflow.main --config=configs/liteflownet2.py:stage=chairs --workdir=runs/lfn2_chairs \\
      --config.data.root=/data
  chairs 1.32M steps, batch 8, lr 1e-4, crop 320x448, wd 4e-4, multi-level L2 (0.32 / 0.08 /
  0.02 / 0.01 on L6..L3 + 6.25e-4 at full resolution); the paper trains Chairs level by level
  (M6S6, +R6, then L5, L4, L3), jflow trains all levels at once for the summed steps.
  things 500k, lr 3e-6, 384x768, L2; sintel (Sintel clean + final + KITTI) 600k, 5e-5, 320x768,
  generalised Charbonnier (q 0.2, eps 0.01); kitti 500k, 5e-5, 320x896, Charbonnier (use
  ``:kitti,stage=kitti`` for the KITTI model). The Caffe solver halves a constant learning rate;
  jflow's trainer uses its one-cycle schedule with the published rate as the peak.
Variants: ``:kitti`` (pseudo level L2), ``:smoke`` (a few steps on tiny images, for tests).
Evaluate: add ``--config.mode=eval --config.eval.checkpoint=DIR``.
"""
from jflow import recipes


def get_config(arg=None):
    return recipes.liteflownet2_config(arg)
