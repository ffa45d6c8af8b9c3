"""DEQ-RAFT and DEQ-GMA (Bai et al., CVPR 2022; deq-flow v2 layout): the flow as a fixed point.

The update operator ``f(params, z, x)`` maps the state ``z = {"h": (B, h, w, hdim), "coords1":
(B, h, w, 2)}`` to ``(h', coords1 + delta)`` with ``(h', delta) = update_block(h, inp,
corr(coords1), coords1 - coords0[, attn])``; ``coords1`` is detached inside ``f`` unless
``all_grad``. ``x`` carries ``inp = relu(cnet)``, the correlation state, ``coords0`` and (GMA) the
attention. ``jflow.deq.deq_fixed_point`` solves it with every option from ``deq`` (a
``DEQConfig``); ``h0 = 0``. The mask head (``mask_0``/``mask_2``, top level as in v2) is applied
to each returned ``h``: ``flow = convex_upsample(coords1 - coords0, 0.25 * mask(h))``.

Training memory options (same loss and gradients, more compute): ``remat_encoder`` recomputes
both encoders in the backward pass as ``jflow.deq.ordered.Chain`` segments, the feature encoder
one image at a time, the context encoder's backward pass after the feature encoder's, each
encoder's stem and blocks one at a time (``jflow.models.encoders.chained``: the context
encoder's BatchNorm statistics are updated from those pure applications); ``remat_states``
keeps only the state entering each supervised gradient step and recomputes its step (phantom /
IFT step) and its decoding (mask head, convex upsampling) in the backward pass, each a segment
of its own, one state after another (``deq_fixed_point(ordered=True)``); ``corr_feature_grad`` (all-pairs) gives the
feature maps' gradient from the lookups' windows without an (HW)^2 gradient of the
correlation pyramid (``jflow.models.corr.build_corr``), and the supervised steps compute their
windows from the feature maps (``corr.window_state``), so the pyramid serves the solve only
and is not kept for the backward pass.

Returns ``flow``, ``flow_low``, ``state = {"h", "flow"}`` (the fixed point, for reuse on the next
frame via ``state_init``), ``stats`` (solver stats) and, when ``train``, ``predictions``
(n_states, B, H, W, 2). At evaluation the solver runs ``iters`` (else ``eval_iters``, else
``deq.f_max_steps``) steps.
"""
from __future__ import annotations

from functools import partial
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflow import geometry
from jflow.deq import DEQConfig, deq_fixed_point
from jflow.deq.ordered import Chain
from jflow.models.attention import Attention
from jflow.models.corr import build_corr, lookup, window_state
from jflow.models.encoders import Encoder, chained, normalize_image, remat_encoder
from jflow.models.raft import check_images, check_low_res, check_state, features
from jflow.models.update import UpdateBlock, mask_head

Array = Any


class DEQSize(NamedTuple):
    """fnet channels, hidden = context channels, motion dims (c1, c2, f1, f2, cat_dim), GRU."""

    odim: int
    hdim: int
    motion: tuple[int, int, int, int, int]
    gru_layout: str = "sep"  # a ``jflow.models.update.GRU_LAYOUTS`` key
    num_grus: int = 1


# deq-flow v2 ``--tiny`` / default / ``--large`` / ``--huge`` / ``--gigantic``, and the paper's
# "D" (B widths; every ConvGRU projection = 1x5 + 5x1 + 3x3 dilation-4 convs summed, in one GRU
# step; the GRU duplicated: ``gru`` then ``gru2``). D is jflow's interpretation of the paper's
# sentence: no official code or checkpoint exists.
DEQ_SIZES = {
    "T": DEQSize(64, 32, (64, 48, 32, 16, 32)),
    "B": DEQSize(256, 128, (256, 192, 128, 64, 128)),
    "L": DEQSize(256, 192, (384, 288, 192, 96, 192)),
    "H": DEQSize(256, 256, (512, 384, 256, 128, 256)),
    "G": DEQSize(256, 384, (640, 480, 320, 160, 320)),
    "D": DEQSize(256, 128, (256, 192, 128, 64, 128), gru_layout="dilated", num_grus=2),
}


class DEQRAFT(nn.Module):
    """DEQ-RAFT (``gma=False``) or DEQ-GMA (``gma=True``) of a given ``size``.

    Attributes:
      size: "T", "B", "L", "H", "G" (gigantic) or "D" (dilated, duplicated GRU); see
        ``DEQ_SIZES``.
      old_version: v1 flow head (``min(256, 2 * cat_dim)`` hidden channels; v1 H checkpoints).
      deq: solver, gradient and correction options.
      eval_iters: solver steps at evaluation (None: ``deq.f_max_steps``).
      all_grad: keep the gradient through ``coords1`` inside ``f`` (v2 Things stage).
      corr, corr_levels, corr_radius, wnorm, mixed_precision, freeze_bn: as in ``RAFT``.
      remat_encoder, remat_states, corr_feature_grad: training memory (module docstring).
    """

    # Callers pad to a multiple of 8 by replication (official InputPadder); a zero fixed point
    # (``state_init`` of zeros) is the cold start, so one compiled function serves both.
    pad_multiple: ClassVar[int] = 8
    pad_fill: ClassVar[str] = "replicate"
    zero_init_is_cold_start: ClassVar[bool] = True

    size: str = "B"
    gma: bool = False
    old_version: bool = False
    deq: DEQConfig = DEQConfig()
    eval_iters: int | None = None
    all_grad: bool = False
    corr: str = "all_pairs"
    corr_levels: int = 4
    corr_radius: int = 4
    wnorm: bool = True
    mixed_precision: bool = False
    freeze_bn: bool = False
    remat_encoder: bool = False
    remat_states: bool = False
    corr_feature_grad: bool = False

    def _dims(self) -> DEQSize:
        if self.size not in DEQ_SIZES:
            raise ValueError(f"DEQRAFT.size must be one of {sorted(DEQ_SIZES)}, got {self.size!r}")
        return DEQ_SIZES[self.size]

    def _update_block(self, **kw) -> UpdateBlock:
        dims = self._dims()
        cat = dims.motion[-1]
        return UpdateBlock(
            hidden_dim=dims.hdim, motion_dims=dims.motion, gru_layout=dims.gru_layout,
            num_grus=dims.num_grus,
            flow_head_dim=min(256, 2 * cat) if self.old_version else 2 * cat,
            gma=self.gma, gma_name="gma", mask=False, wnorm=self.wnorm, split_context=True,
            dtype=jnp.bfloat16 if self.mixed_precision else None, **kw)

    def _step(self, params: Any, z: dict, x: dict, detach: bool = True) -> dict:
        """The pure update operator handed to ``deq_fixed_point`` (``detach=False``: the
        gradient through ``coords1`` kept, as the Jacobian penalty needs)."""
        keep = self.all_grad or not detach
        c = z["coords1"] if keep else jax.lax.stop_gradient(z["coords1"])
        corr = lookup(x["corr"], c, self.corr_radius)
        block = self._update_block(parent=None)
        h, delta, _ = block.apply({"params": params}, z["h"], x["inp"], corr, c - x["coords0"],
                                  x.get("attn"))
        return {"h": h.astype(z["h"].dtype), "coords1": (c + delta).astype(z["coords1"].dtype)}

    @nn.compact
    def __call__(self, image1: Array, image2: Array, *, train: bool = False,
                 iters: int | None = None, flow_init: Array | None = None,
                 state_init: dict | None = None) -> dict:
        name = f"DEQ-{'GMA' if self.gma else 'RAFT'}-{self.size}"
        check_images(image1, image2, name)
        odim, hdim = self._dims()[:2]
        dtype = jnp.bfloat16 if self.mixed_precision else None

        im1, im2 = normalize_image(image1), normalize_image(image2)
        encoder = partial(remat_encoder(self.remat_encoder), dtype=dtype, remat=self.remat_encoder)
        fnet = encoder(odim, "instance", name="fnet")
        chain = Chain() if self.remat_encoder and train and not self.is_initializing() else None
        if chain is not None:
            # the context encoder's backward pass last, after the feature encoder's (below)
            cnet = Encoder(hdim, "batch", freeze_bn=self.freeze_bn, dtype=dtype, remat=True,
                           parent=None)
            inp = nn.relu(chained(self, chain, cnet, "cnet", im1, train=train))
            # one image at a time (instance norm: the same maps), backward passes in turn
            net = Encoder(odim, "instance", dtype=dtype, remat=True, parent=None)
            run = partial(net.apply, {"params": self.variables["params"]["fnet"]}, train=train)
            fmap1 = chain(run, im1)
            # fmap1 passes through the second segment, whose recomputation then waits for both
            # maps' gradients: the correlation's (HW)^2 gradient is gone by then
            fmap2, fmap1 = chain(lambda im, f1: (run(im), f1), im2, fmap1)
            fmap1, fmap2 = fmap1.astype(jnp.float32), fmap2.astype(jnp.float32)
        elif self.remat_encoder and train:
            fmap1, fmap2 = (fnet(im, train).astype(jnp.float32) for im in (im1, im2))
        else:
            fmap1, fmap2 = features(fnet, im1, im2, train)
        corr_state = build_corr(fmap1, fmap2, kind=self.corr, num_levels=self.corr_levels,
                                feature_grad=self.corr_feature_grad and train)
        if chain is None:
            inp = nn.relu(encoder(hdim, "batch", freeze_bn=self.freeze_bn, name="cnet")(im1, train))
        b, h, w = fmap1.shape[:3]
        coords0 = geometry.coords_grid(b, h, w)
        x = {"inp": inp, "corr": corr_state, "coords0": coords0}
        if self.gma:
            x["attn"] = Attention(hdim, 1, pos_emb=False, dtype=dtype, name="attn")(inp)
        x_solve = None
        if self.corr_feature_grad and train and "pyramid" in corr_state:
            # the gradient steps' lookups from the feature maps: the pyramid serves the solve
            x_solve, x = x, {**x, "corr": window_state(corr_state)}

        z0 = {"h": jnp.zeros((b, h, w, hdim), jnp.float32), "coords1": coords0}
        if state_init is not None:
            check_state(state_init, {"h": (b, h, w, hdim), "flow": (b, h, w, 2)}, name)
            z0 = {"h": jnp.asarray(state_init["h"], jnp.float32),
                  "coords1": coords0 + state_init["flow"]}
        check_low_res("flow_init", flow_init, (b, h, w, 2), name)
        if flow_init is not None:
            z0["coords1"] = z0["coords1"] + flow_init

        block = self._update_block(name="update_block")
        if self.is_initializing():
            corr0 = lookup(corr_state, coords0, self.corr_radius)
            block(z0["h"], inp, corr0, coords0 - coords0, x.get("attn"))
        params = self.variables["params"]["update_block"]

        steps = iters if iters is not None else (None if train else self.eval_iters)
        key = jac_probe_key(self, self.deq, train)
        ordered = train and self.remat_states and not self.is_initializing()
        if ordered:  # the same head applied purely, so that the chain can recompute it
            head = _MaskHead(dtype=dtype, parent=None)
            mask = partial(head.apply, {"params": {k: self.variables["params"][k]
                                                   for k in ("mask_0", "mask_2")}})
        else:
            mask = mask_head(dtype=dtype)
        outs, stats = deq_fixed_point(self._step, params, x, z0, self.deq, train=train,
                                      max_steps=steps, key=key,
                                      jac_f=partial(self._step, detach=False),
                                      readout=lambda z: (z, _decode(mask, z, coords0)),
                                      ordered=ordered, x_solve=x_solve)
        states, decoded = [z for z, _ in outs], [d for _, d in outs]
        flow_low, flow = decoded[-1]
        out = {"flow": flow, "flow_low": flow_low, "stats": stats,
               "state": {"h": states[-1]["h"], "flow": flow_low}}
        if train:
            out["predictions"] = jnp.stack([f for _, f in decoded])
        return out


def jac_probe_key(module: nn.Module, deq: DEQConfig, train: bool) -> jax.Array | None:
    """The Jacobian penalty's probe key (``deq.jac_loss_weight > 0`` in training) from the
    module's "noise" stream; None (``deq_fixed_point``'s default key) otherwise."""
    if train and deq.jac_loss_weight > 0 and module.has_rng("noise"):
        return module.make_rng("noise")
    return None


class _MaskHead(nn.Module):
    """``mask_head`` as a module of its own (params ``mask_0``, ``mask_2`` at its root)."""

    dtype: Any = None

    @nn.compact
    def __call__(self, h: Array) -> Array:
        return mask_head(dtype=self.dtype)(h)


def _decode(mask, z: dict, coords0: Array) -> tuple[Array, Array]:
    """``(flow_low, flow)`` of a state: 1/8 flow and its convex upsampling by ``mask(h)``."""
    flow_low = z["coords1"] - coords0
    return flow_low, geometry.convex_upsample(flow_low, mask(z["h"]), 8)
