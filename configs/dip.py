"""DIP, Deep Inverse Patchmatch (Zheng et al., CVPR 2022), trained with RAFT's published recipe.

The official repository (zihuazheng/DIP) has no flow training code; its authors say RAFT's
recipe reproduces their results, so the stages are RAFT's ``train_standard.sh`` table
(``jflow.recipes.RAFT_STAGES``) with the sequence loss over all 4 x iters predictions
(gamma^(N-1-i), N = 4 * iters: 1/16 stage bilinear-upsampled, then the 1/4 stage).

Quick start on synthetic data (no download):
  python -m jflow.main --config=configs/dip.py --workdir=runs/dip_synthetic
Published schedule, each stage initialised from the previous one:
  python -m jflow.main --config=configs/dip.py:stage=chairs --workdir=runs/dip_chairs \\
      --config.data.root=/data
  python -m jflow.main --config=configs/dip.py:stage=things --workdir=runs/dip_things \\
      --config.data.root=/data --config.train.init_from=runs/dip_chairs
  (then stage=sintel and stage=kitti)
Official checkpoints (DIP_things.pth, DIP_sintel.pth, DIP_kitti.pth):
  python -m jflow.convert --config=configs/dip.py --torch_checkpoint=DIP_things.pth \\
      --output=ckpt/dip-things
  python -m jflow.predict --config=configs/dip.py --checkpoint=ckpt/dip-things \\
      --frames_dir=FRAMES --output_dir=OUT        # 20 iterations, then warm start as demo.py
Evaluate: ``--config.mode=eval --config.eval.checkpoint=DIR`` (20 iterations, the demo's).

Model fields (``config.model``): ``iters`` (training double steps per stage, 6 = the official
``forward`` default), ``eval_iters`` 20 (``warm_iters`` 12 when warm-started), ``max_offset`` 256 (demo; the class default is 192),
``noise`` "torch" (evaluation noise bit-exact with the official seeded ``torch.rand``) or "jax"
(training always uses the JAX ``noise`` stream), ``channel_order`` "bgr": the official
checkpoints take BGR images (cv2), so jflow flips its RGB input; ``:rgb`` feeds RGB as is
(training from scratch is indifferent; fine-tuning official weights needs "bgr").
Variants: ``:smoke`` (a few steps on tiny images, for tests), ``:rgb``, ``stage=...``.
"""
from jflow import recipes


def get_config(arg=None):
    a = recipes.parse_arg(arg, rgb=False, smoke=False, stage="synthetic")
    rest = ",".join(t for t in (arg or "").split(",") if t.strip() and t.strip() != "rgb"
                    and not t.strip().startswith("rgb="))
    c = recipes.recurrent_config("dip", rest, recipes.RAFT_STAGES, recipes.DIP_EVAL_ITERS)
    c.model.max_offset = 256
    c.model.warm_iters = 12
    c.model.noise = "torch"
    c.model.channel_order = "rgb" if a.rgb else "bgr"
    if not a.smoke:
        c.model.iters = 6
    return c
