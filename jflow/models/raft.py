"""RAFT (basic and small) and GMA: recurrent refinement with the shared update operator.

``model.apply(variables, image1, image2, *, train=False, iters=None, flow_init=None,
state_init=None)`` with images (B, H, W, 3) RGB 0..255, H and W multiples of 8. Returns ``flow``
(B, H, W, 2), ``flow_low`` (B, H/8, W/8, 2), ``state`` (= ``flow_low``), ``stats`` (``{}``) and,
when ``train``, ``predictions`` (iters, B, H, W, 2). Each iteration detaches the coordinates
(``coords1 = stop_gradient(coords1)``) as the original does. ``flow_init`` (1/8-res flow) and
``state_init`` (a previous ``state``; RAFT treats it like ``flow_init``) are added to ``coords1``.

Top-level names follow PyTorch: ``fnet``, ``cnet``, ``update_block`` and (GMA) ``att``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflow import geometry
from jflow.models.attention import Attention
from jflow.models.corr import build_corr, lookup
from jflow.models.encoders import Encoder, normalize_image
from jflow.models.update import UpdateBlock

Array = Any


def check_images(image1: Array, image2: Array, model: str, multiple: int = 8,
                 fill: str = "replicate") -> None:
    """Raises ValueError unless both images are (B, H, W, 3) with H, W multiples of
    ``multiple`` (the padding ``fill`` is named in the message)."""
    # np.shape: the static shape (jax2onnx patches jnp.shape to return a traced array)
    s1, s2 = tuple(np.shape(image1)), tuple(np.shape(image2))
    if len(s1) != 4 or s1[-1] != 3:
        raise ValueError(f"{model}: image1 must be (B, H, W, 3), got shape {s1}")
    if s1 != s2:
        raise ValueError(f"{model}: image2 shape {s2} differs from image1 shape {s1}")
    if s1[1] % multiple or s1[2] % multiple:
        raise ValueError(f"{model}: H and W must be multiples of {multiple} (pad with "
                         f"jflow.geometry.InputPadder(multiple={multiple}, fill='{fill}')), got "
                         f"{s1[1]}x{s1[2]}")


def check_low_res(name: str, value: Array | None, shape: tuple, model: str) -> None:
    if value is not None and tuple(np.shape(value)) != tuple(shape):
        raise ValueError(f"{model}: {name} must have shape {tuple(shape)} (1/8 resolution), "
                         f"got {tuple(np.shape(value))}")


def check_state(state_init: Any, shapes: dict[str, tuple], model: str) -> None:
    """A DEQ model's ``state_init``: a previous ``output["state"]`` dict with exactly the keys of
    ``shapes`` and those (1/8-resolution) shapes."""
    if not isinstance(state_init, dict) or set(state_init) != set(shapes):
        keys = " and ".join(repr(k) for k in shapes)
        raise ValueError(f"{model}: state_init must be a previous output['state'] dict with keys "
                         f"{keys}, got {type(state_init).__name__}")
    for key, shape in shapes.items():
        check_low_res(f"state_init[{key!r}]", state_init[key], shape, model)


def features(fnet: nn.Module, image1: Array, image2: Array, train: bool) -> tuple[Array, Array]:
    """Runs ``fnet`` on both images at once (batch concat, as the original) -> float32 fmaps."""
    b = image1.shape[0]
    fmaps = fnet(jnp.concatenate([image1, image2], axis=0), train)
    return fmaps[:b].astype(jnp.float32), fmaps[b:].astype(jnp.float32)


INFERENCE_LOOPS = ("auto", "loop", "unrolled")


class RAFT(nn.Module):
    """RAFT (``small=False``), RAFT-small (``small=True``) and GMA (``gma=True``).

    Attributes:
      small, gma: the variant; ``gma_mode`` "content" (published) | "position" |
        "position_and_content".
      iters: iterations when training; ``eval_iters`` at evaluation (``iters=`` overrides both).
      corr: "all_pairs" | "on_the_fly"; ``corr_levels``; ``corr_radius`` (None: 4, small 3).
      mixed_precision: bfloat16 encoders/update block (correlation stays float32).
      freeze_bn: BatchNorm uses running statistics even when training (after the Chairs stage).
      inference_loop: how inference runs the iterations (same flow either way): "unrolled"
        (in Python, as training does: XLA compiles each one), "loop" (all but the last in one
        ``lax.fori_loop``, compiled once), "auto" (the default: "loop" with on-the-fly
        correlation, whose unrolled lookups make compilation several times longer; "unrolled"
        with all-pairs, which compiles quickly either way and runs GMA and RAFT-small slightly
        faster unrolled; figures in experiments/README.md).
    """

    # Callers pad to a multiple of 8 by replication (official InputPadder); a zero warm start
    # (``flow_init`` / ``state_init`` of zeros) is the cold start, so one compiled function
    # serves both.
    pad_multiple: ClassVar[int] = 8
    pad_fill: ClassVar[str] = "replicate"
    zero_init_is_cold_start: ClassVar[bool] = True

    small: bool = False
    gma: bool = False
    gma_mode: str = "content"
    iters: int = 12
    eval_iters: int = 24
    corr: str = "all_pairs"
    corr_levels: int = 4
    corr_radius: int | None = None
    mixed_precision: bool = False
    freeze_bn: bool = False
    inference_loop: str = "auto"

    @nn.compact
    def __call__(self, image1: Array, image2: Array, *, train: bool = False,
                 iters: int | None = None, flow_init: Array | None = None,
                 state_init: Array | None = None) -> dict:
        name = "RAFT-small" if self.small else ("GMA" if self.gma else "RAFT")
        check_images(image1, image2, name)
        if self.small and self.gma:
            raise ValueError("RAFT: GMA is defined for the basic model only (small=False)")
        dtype = jnp.bfloat16 if self.mixed_precision else None
        radius = self.corr_radius or (3 if self.small else 4)
        hdim, cdim = (96, 64) if self.small else (128, 128)
        n_iters = int(iters if iters is not None else (self.iters if train else self.eval_iters))
        if n_iters < 1:
            raise ValueError(f"{name}: iters must be >= 1, got {n_iters}")
        if self.inference_loop not in INFERENCE_LOOPS:
            raise ValueError(f"{name}: inference_loop must be one of {INFERENCE_LOOPS}, got "
                             f"{self.inference_loop!r}")

        im1, im2 = normalize_image(image1), normalize_image(image2)
        fnet = Encoder(128 if self.small else 256, "instance", self.small, dtype=dtype,
                       name="fnet")
        fmap1, fmap2 = features(fnet, im1, im2, train)
        corr_state = build_corr(fmap1, fmap2, kind=self.corr, num_levels=self.corr_levels)

        ctx = Encoder(hdim + cdim, "none" if self.small else "batch", self.small,
                      freeze_bn=self.freeze_bn, dtype=dtype, name="cnet")(im1, train)
        net = jnp.tanh(ctx[..., :hdim].astype(jnp.float32))
        inp = nn.relu(ctx[..., hdim:])
        attn = None
        if self.gma:
            attn = Attention(cdim, 1, mode=self.gma_mode, dtype=dtype, name="att")(inp)

        b, h, w = fmap1.shape[:3]
        coords0 = geometry.coords_grid(b, h, w)
        coords1 = coords0
        for arg, value in (("flow_init", flow_init), ("state_init", state_init)):
            check_low_res(arg, value, (b, h, w, 2), name)
            if value is not None:
                coords1 = coords1 + value

        motion = (96, 0, 64, 32, 82) if self.small else (256, 192, 128, 64, 128)
        update_block = UpdateBlock(
            hidden_dim=hdim, motion_dims=motion, small=self.small,
            flow_head_dim=128 if self.small else 256, gma=self.gma, mask=not self.small,
            split_context=True, dtype=dtype, name="update_block")

        def upsample(flow_low, mask):
            if mask is None:
                return geometry.upflow(flow_low, 8)
            return geometry.convex_upsample(flow_low, mask, 8)

        def iterate(net, coords1, update):  # one RAFT iteration; ``update`` bound or pure
            coords1 = jax.lax.stop_gradient(coords1)
            corr = lookup(corr_state, coords1, radius)
            net, delta, mask = update(net, inp, corr, coords1 - coords0, attn)
            return net, coords1 + delta, mask

        predictions = []
        flow_up = None
        loop = self.inference_loop == "loop" or (self.inference_loop == "auto"
                                                  and self.corr == "on_the_fly")
        first = 0
        if loop and not (train or self.is_initializing()) and n_iters > 1:
            # all but the last iteration in one loop (its body compiled once; the mask head,
            # unused there, is dropped by XLA); the last one below returns the mask
            pure = partial(update_block.clone(parent=None).apply,
                           {"params": self.variables["params"]["update_block"]})

            def step(_, carry):
                return iterate(*carry, pure)[:2]

            # the loop carries the hidden state in the update's own dtype (mixed precision:
            # float32 in, bfloat16 out), so an iteration that changes it runs before the loop
            if jax.eval_shape(step, 0, (net, coords1))[0].dtype != net.dtype:
                net, coords1 = step(0, (net, coords1))
                first = 1
            # static bounds: a scan, so reverse mode still works
            net, coords1 = jax.lax.fori_loop(first, n_iters - 1, step, (net, coords1))
            first = n_iters - 1
        for i in range(first, n_iters):
            net, coords1, mask = iterate(net, coords1, update_block)
            if train or i == n_iters - 1:
                flow_up = upsample(coords1 - coords0, mask)
                predictions.append(flow_up)
        flow_low = coords1 - coords0
        out = {"flow": flow_up, "flow_low": flow_low, "state": flow_low, "stats": {}}
        if train:
            out["predictions"] = jnp.stack(predictions)
        return out
