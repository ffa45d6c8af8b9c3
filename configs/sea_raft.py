"""SEA-RAFT (Wang, Lipson, Deng, ECCV 2024): sizes S, M and L (L = M weights at 12 iterations).

Quick start on synthetic data (no download):
  python -m jflow.main --config=configs/sea_raft.py:S --workdir=runs/sea_raft_synthetic
Smoke test (a few steps on tiny images, as the tests run it):
  python -m jflow.main --config=configs/sea_raft.py:S,smoke --workdir=/tmp/sea_raft_smoke
Official weights (Google-Drive ``.pth`` state_dicts, named after the training configs):
  python -m jflow.convert --config=configs/sea_raft.py:M \\
      --torch_checkpoint=Tartan-C-T-TSKH432x960-M.pth --output=ckpt/sea-raft-m-tskh
  (``:L`` converts the same M file and evaluates it with 12 iterations; ``:S`` the S files; a
  checkpoint of another size or model is one error naming the keys and shapes)
Published stages (jflow/recipes.py SEA_RAFT_STAGES; each initialised from the previous one with
--config.train.init_from=RUN):
  python -m jflow.main --config=configs/sea_raft.py:M,stage=chairs --workdir=runs/sr_m_chairs \\
      --config.data.root=/data
  tartan 300k steps, batch 32, lr 4e-4, wd 1e-5, crop 480x640, gamma 0.85 (data spec
  tartanair: <root>/tartanair); chairs 100k, 16, 2.5e-4, 1e-4, 368x496, 0.8; things 120k, 32, 4e-4, 1e-5,
  432x960, 0.85 (clean + final); tskh 300k, 32, 4e-4, 1e-5, 432x960, 0.85 on 20 Sintel-clean +
  20 Sintel-final + 80 KITTI + 30 HD1K + Things-clean; kitti 10k, 16, 1e-4, 1e-5, 432x960;
  spring 120k, 32, 4e-4, 1e-5, 540x960, evaluated at scale -1 (<root>/spring).
  AdamW eps 1e-8, OneCycle linear (steps + 100, 5 % warm-up), clip 1.0, 4 iterations, the
  mixture-of-Laplace loss (config.train.loss = "mixture_laplace"), BatchNorm trained throughout.
  Augmentation per dataset as the official fetch_dataloader (jflow/recipes.py SEA_RAFT_AUGMENT),
  written into config.data.train as options, e.g. stage=kitti:
  ``kitti(scale=-0.2:0.4,flip=0,pad=1)`` (pad: frames shorter than the crop are zero-padded).
  The official training initialises both encoders from torchvision's ImageNet ResNet-18 (S) /
  ResNet-34 (M, L); here: ``--config.model.init_encoder_from=resnet18-f37072fd.pth`` (the
  torchvision file, read without torch) for a run that starts from scratch (the first stage).
Evaluate: add ``--config.mode=eval --config.eval.checkpoint=DIR`` (4 iterations S/M, 12 L).
Model fields: ``size``, ``iters`` (training, 4), ``eval_iters``, ``scale`` (evaluation input
scale exponent: Spring -1), ``freeze_bn``.
"""
from jflow import recipes


def get_config(arg=None):
    return recipes.sea_raft_config(arg)
