"""DIP, Deep Inverse Patchmatch (Zheng et al., CVPR 2022), faithful to the official weights.

``model.apply(variables, image1, image2, *, train=False, iters=None, flow_init=None,
state_init=None)`` with images (B, H, W, 3) float32 RGB 0..255, H and W multiples of 16 (callers
pad with zeros, ``InputPadder(multiple=16, fill="zeros")``, as the official ``InputPadder``).
Returns ``flow`` (B, H, W, 2), ``flow_low`` (B, H/4, W/4, 2), ``state`` (= ``flow``: the next
pair's warm start is this full-resolution flow forward-interpolated, as the official demo),
``stats`` ``{}`` and, when ``train``, ``predictions`` (4 * iters, B, H, W, 2).

Schedule (official ``forward``): quarter-resolution features of both images (``fnet``), context
``net = tanh(f1[:128])``, ``inp = relu(f1[128:])``; random initial flow
``U(-1, 1) * (max_offset // 16)`` at 1/16; ``iters`` x (inverse propagation half-step with
``update_block_s``, local search half-step with ``update_block``) on 4x4-average-pooled
features/context, each upsampled by convex x4 (training prediction: bilinear x4 of that); then
``iters`` double steps at 1/4 with the hidden state restarted from the 1/4 ``net``.

Warm start (``flow_init`` and/or ``state_init`` given; full-resolution flows, summed): the
official ``inference()`` path. Its number of pyramid levels depends on the data,
``min(3, ceil(max |init| / 32))`` over the whole batch, capped by the shapes (pooling stops once
both sides of a level are < 40). jflow computes this inside the compiled function: every level
the shapes allow is evaluated and the data-dependent count only selects, with ``jnp.where``,
which level starts from the (resized) initial flow + U(+-16) noise; the levels above it are
computed and discarded (at most 1/4 + 1/16 extra work over the 1/4 level). Finer levels start
from the coarser level's convex-upsampled flow resized bilinearly + U(+-4) noise; the context is
split after pooling and the hidden state restarts at every level.

Noise: ``noise="torch"`` (evaluation default) reproduces the official test mode bit for bit,
``torch.manual_seed(20); torch.rand(N, 2, h, w)`` before every draw (``jflow.models.torch_noise``);
``noise="jax"`` draws from the ``noise`` RNG stream (``rngs={"noise": key}``; PRNGKey(0) when
none is given). Training always draws from the ``noise`` stream.

Input channel order: the official checkpoints were trained and are run (demo, ptlflow) on BGR
images (cv2); ``channel_order="bgr"`` (default) flips jflow's RGB input to BGR first, ``"rgb"``
feeds it as is (models trained by jflow).

Flax paths mirror the PyTorch module paths: ``fnet/{conv1,layerI_J/{conv1,conv2,downsample_0},
conv2}``, ``update_block_s/{encoder/{convc1,convf1,convf2,conv},gru/{convz,convr,convq},
flow_head/{conv1,conv2},mask_0,mask_2}``, ``update_block/{encoder/{convc1,convc2,convf1,convf2,
conv},gru/{convz1,...,convq2},flow_head,mask_0,mask_2}``. Instance norms have no parameters.
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflow import geometry
from jflow.models.layers import Conv2d, instance_norm
from jflow.models.raft import check_images
from jflow.models.torch_noise import torch_rand
from jflow.models.update import ConvGRU, FlowHead, mask_head
from jflow.models.window_corr import shifted_products

Array = Any
NOISE_KINDS = ("torch", "jax")
CHANNEL_ORDERS = ("bgr", "rgb")
HIDDEN = 128
NOISE_SEED = 20  # the official test mode seeds torch with 20 before every draw
# Inverse propagation: F2 and its four diagonal neighbours (dx, dy), in the official
# concatenation order [F2, tl, tr, dl, dr] (tl(y, x) = F2(y - 1, x - 1), replicate padded).
SHIFTS = ((0, 0), (-1, -1), (1, -1), (-1, 1), (1, 1))


# ---------------------------------------------------------------------------------- encoder
class ResidualBlock(nn.Module):
    """DIP's block: the 1x1 ``downsample`` shortcut (conv + instance norm) is in every block."""

    planes: int
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = dict(init_mode="kaiming", dtype=self.dtype)
        y = nn.relu(instance_norm(Conv2d(self.planes, 3, self.stride, 1, name="conv1",
                                         **conv)(x)))
        y = nn.relu(instance_norm(Conv2d(self.planes, 3, 1, 1, name="conv2", **conv)(y)))
        x = instance_norm(Conv2d(self.planes, 1, self.stride, 0, name="downsample_0", **conv)(x))
        return nn.relu(x + y)


class QuarterEncoder(nn.Module):
    """``BasicEncoderQuarter``: 7x7/2 stem (64), blocks 64, 64, 96/2, 96, 128, 128, 1x1 -> 256."""

    output_dim: int = 256
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = Conv2d(64, 7, 2, 3, init_mode="kaiming", dtype=self.dtype, name="conv1")(x)
        x = nn.relu(instance_norm(x))
        for i, (width, stride) in enumerate(((64, 1), (96, 2), (128, 1)), start=1):
            for j, s in enumerate((stride, 1)):
                x = ResidualBlock(width, s, self.dtype, name=f"layer{i}_{j}")(x)
        return Conv2d(self.output_dim, 1, 1, 0, init_mode="kaiming", dtype=self.dtype,
                      name="conv2")(x)


# ----------------------------------------------------------------------------- update blocks
class MotionEncoder(nn.Module):
    """``SmallMotionEncoder`` (``small``: 10 propagation costs) or ``BasicMotionEncoder`` (25
    search costs); 5x5 flow convs; output = conv features + the flow (96 or 128 channels)."""

    small: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, flow: Array, corr: Array) -> Array:
        d = dict(dtype=self.dtype)
        if self.small:
            cor = nn.relu(Conv2d(96, 1, 1, 0, name="convc1", **d)(corr))
            flo = nn.relu(Conv2d(64, 5, 1, 2, name="convf1", **d)(flow))
            flo = nn.relu(Conv2d(32, 3, 1, 1, name="convf2", **d)(flo))
            out_dim = 96 - 2
        else:
            cor = nn.relu(Conv2d(64, 1, 1, 0, name="convc1", **d)(corr))
            cor = nn.relu(Conv2d(128, 3, 1, 1, name="convc2", **d)(cor))
            flo = nn.relu(Conv2d(64, 5, 1, 2, name="convf1", **d)(flow))
            flo = nn.relu(Conv2d(64, 3, 1, 1, name="convf2", **d)(flo))
            out_dim = 128 - 2
        out = nn.relu(Conv2d(out_dim, 3, 1, 1, name="conv", **d)(
            jnp.concatenate([cor, flo.astype(cor.dtype)], axis=-1)))
        return jnp.concatenate([out, flow.astype(out.dtype)], axis=-1)


class UpdateBlock(nn.Module):
    """``SmallUpdateBlock`` (``small``: 3x3 ConvGRU, flow head 128) after propagation, or
    ``BasicUpdateBlock`` (SepConvGRU, flow head 256) after search. -> (net, mask, delta)."""

    small: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, net: Array, inp: Array, corr: Array, flow: Array
                 ) -> tuple[Array, Array, Array]:
        motion = MotionEncoder(self.small, self.dtype, name="encoder")(flow, corr)
        # the context apart (tuple): XLA computes its share of the GRU convs once per forward
        x = (inp.astype(motion.dtype), motion)
        net = ConvGRU(HIDDEN, "conv" if self.small else "sep", dtype=self.dtype, name="gru")(
            net, x)
        delta = FlowHead(128 if self.small else 256, dtype=self.dtype, name="flow_head")(net)
        mask = mask_head(dtype=self.dtype, rate=4)(net)
        return net, mask, delta.astype(jnp.float32)


# ------------------------------------------------------------------------------- patch match
# Bilinear corners (dx, dy) of a sample point: top-left, top-right, bottom-left, bottom-right.
CORNERS = ((0, 0), (1, 0), (0, 1), (1, 1))


def _corner(flat: Array, coords: Array, corner: Array, h: int, w: int) -> Array:
    """One weighted bilinear corner of torch ``grid_sample(align_corners=True,
    padding_mode="border")``: ``flat`` (B, H*W, C), ``coords`` (B, H', W', 2) clamped to the image,
    ``corner`` a traced (dx, dy) in {0, 1}^2 -> (B, H', W', C) = weight * value."""
    b, c = flat.shape[0], flat.shape[-1]
    x, y = coords[..., 0], coords[..., 1]
    x0f, y0f = jnp.floor(x), jnp.floor(y)
    fx, fy = x - x0f, y - y0f
    xi = jnp.minimum(x0f.astype(jnp.int32) + corner[0], w - 1)
    yi = jnp.minimum(y0f.astype(jnp.int32) + corner[1], h - 1)
    wgt = (jnp.where(corner[0] == 1, fx, 1 - fx) * jnp.where(corner[1] == 1, fy, 1 - fy))
    vals = jax.vmap(lambda im, i: im[i])(flat, (yi * w + xi).reshape(b, -1))
    return vals.reshape(*x.shape, c) * wgt[..., None]


def _warp(img: Array, coords: Array) -> Array:
    """Bilinear sample of ``img`` (B, H, W, C) at ``coords`` already clamped to the image (torch
    ``grid_sample(align_corners=True, padding_mode="border")``). The four corners are gathered
    one after the other (``lax.scan``), so at most one (B, N, C) gather is alive: DIP warps
    256-channel maps at 1/4 resolution, where RAFT-style sampling would hold four at once."""
    b, h, w, c = img.shape
    flat = img.reshape(b, h * w, c)
    corners = jnp.asarray(CORNERS, jnp.int32)

    def body(acc, corner):
        return acc + _corner(flat, coords, corner, h, w), None

    # the first corner is the initial carry: a zeros constant would be shared by every scan
    # of the unrolled iterations and keep a full-size buffer alive per call
    out, _ = jax.lax.scan(body, _corner(flat, coords, corners[0], h, w), corners[1:])
    return out


def _clamp(coords: Array, h: int, w: int) -> Array:
    return jnp.stack([jnp.clip(coords[..., 0], 0, w - 1), jnp.clip(coords[..., 1], 0, h - 1)],
                     axis=-1)


def inverse_propagation(f1: Array, f2: Array, flow: Array) -> Array:
    """The official ``PathMatch.inverse_propagation`` (10 channels), channel layout included.

    Official: warp ``S2 = [F2, tl, tr, dl, dr]`` (5C channels) at ``p + flow``, view it as
    (N, C/2, 2, 5, H, W), multiply by F1 viewed as (N, C/2, 2, 1, H, W), mean over axis 1, view
    as 10 channels: output ``j`` averages ``W[i] * F1[2 (i // 10) + (i % 10) // 5]`` (that is
    ``W[i] * F1[i // 5]``) over the warped channels ``i`` with ``i % 10 == j``.

    Here the 5C-channel tensor is never built: a replicate-padded shift of F2 sampled at the
    border-clamped point equals F2 sampled at the clamped point + shift, clamped again, so each
    shift is one warp of F2 (its four corners summed), multiplied by F1's channels ``i // 5`` and
    binned by ``i % 10`` (one product with a 0/1 matrix); the 5 shifts run one after the other
    (``lax.scan``).
    """
    b, h, w, c = f1.shape
    if c % 2 or f2.shape != f1.shape:
        raise ValueError(f"inverse_propagation: feature maps {f1.shape}, {f2.shape}")
    q = _clamp(geometry.coords_grid(b, h, w, flow.dtype) + flow, h, w)
    bins = jnp.arange(10)

    def body(out, xs):
        s, offset = xs
        i = s * c + jnp.arange(c)  # warped channel index in the official 5C layout
        g1 = jnp.take(f1, i // 5, axis=-1)
        onehot = (i[:, None] % 10 == bins[None]).astype(f1.dtype)
        prod = _warp(f2, _clamp(q + offset, h, w)) * g1
        return out + jnp.einsum("bhwc,cj->bhwj", prod, onehot,
                                precision=jax.lax.Precision.HIGHEST), None

    out, _ = jax.lax.scan(body, jnp.zeros((b, h, w, 10), f1.dtype),
                          (jnp.arange(len(SHIFTS)), jnp.asarray(SHIFTS, q.dtype)))
    return out / (c // 2)


def local_search(f1: Array, f2: Array, flow: Array, radius: int = 2) -> Array:
    """The official ``PathMatch.search`` (25 channels): warp F2 at ``p + flow`` (border), pad it by
    replication, ``mean_c(F1 * window)`` for offsets (ox, oy), channel ``(ox+2)*5 + (oy+2)``.
    The windows' products are row matrix products (:mod:`jflow.models.window_corr`)."""
    b, h, w, c = f1.shape
    q = _clamp(geometry.coords_grid(b, h, w, flow.dtype) + flow, h, w)
    warped = _warp(f2, q)
    padded = jnp.pad(warped, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    cost = shifted_products(f1, padded, radius)  # [.., oy, ox]
    return jnp.swapaxes(cost, -1, -2).reshape(b, h, w, -1) / c


def avg_pool(x: Array, k: int) -> Array:
    """``F.avg_pool2d(x, k, stride=k)`` (floor), NHWC."""
    b, h, w, c = x.shape
    h2, w2 = h // k, w // k
    x = x[:, :h2 * k, :w2 * k]
    return jnp.mean(x.reshape(b, h2, k, w2, k, c), axis=(2, 4))


def resize_flow(flow: Array, hw: tuple[int, int], scale: float) -> Array:
    """``scale * F.interpolate(flow, size=hw, mode="bilinear", align_corners=True)``, NHWC."""
    return scale * geometry.resize_bilinear(flow, hw, align_corners=True)


def pyramid_levels(h4: int, w4: int, max_layers: int = 3, min_width: int = 40) -> int:
    """Levels the official ``build_pyramid`` can build from a (h4, w4) 1/4-res map (shapes only):
    halving stops once both sides are < ``min_width``."""
    n = 1
    for _ in range(max_layers - 1):
        if h4 < min_width and w4 < min_width:
            break
        h4, w4 = h4 // 2, w4 // 2
        n += 1
    return n


# ------------------------------------------------------------------------------------- model
class DIP(nn.Module):
    """DIP; see the module docstring.

    Attributes:
      iters: double steps per stage when training; ``eval_iters`` at evaluation from a cold
        start, ``warm_iters`` when warm-started (demo.py: 20 and 12); ``iters=`` overrides all.
      max_offset: range of the random initial flow in input pixels (official demo 256, class 192).
      noise: "torch" (evaluation noise bit-exact with the official test mode) | "jax".
      channel_order: "bgr" (official checkpoints) | "rgb".
      mixed_precision: bfloat16 convolutions (patch-match costs and flows stay float32).
    """

    pad_multiple: ClassVar[int] = 16
    pad_fill: ClassVar[str] = "zeros"
    # A warm start from zeros runs the official ``inference()`` path, not the cold ``forward``.
    zero_init_is_cold_start: ClassVar[bool] = False

    iters: int = 6
    eval_iters: int = 20
    warm_iters: int = 12
    max_offset: int = 256
    noise: str = "torch"
    channel_order: str = "bgr"
    mixed_precision: bool = False

    def _uniform(self, shape: tuple[int, ...], train: bool) -> Array:
        """U[0, 1) of NHWC ``shape``: torch's seeded stream (NCHW order) or the noise RNG."""
        if not train and self.noise == "torch":
            b, h, w, c = shape
            return jnp.asarray(np.transpose(torch_rand(NOISE_SEED, (b, c, h, w)), (0, 2, 3, 1)))
        key = self.make_rng("noise") if self.has_rng("noise") else jax.random.PRNGKey(0)
        return jax.random.uniform(key, shape, jnp.float32)

    def iterations(self, train: bool, warm: bool, iters: int | None = None) -> int:
        """Double steps per stage: ``iters`` if given, else ``iters`` (training), ``warm_iters``
        (evaluation from a warm start) or ``eval_iters`` (cold), as demo.py runs 20 then 12."""
        default = self.iters if train else (self.warm_iters if warm else self.eval_iters)
        n_iters = int(iters if iters is not None else default)
        if n_iters < 1:
            raise ValueError(f"DIP: iters must be >= 1, got {n_iters}")
        return n_iters

    @nn.compact
    def __call__(self, image1: Array, image2: Array, *, train: bool = False,
                 iters: int | None = None, flow_init: Array | None = None,
                 state_init: Array | None = None) -> dict:
        check_images(image1, image2, "DIP", self.pad_multiple, self.pad_fill)
        s1 = jnp.shape(image1)
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"DIP: noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"DIP: channel_order must be one of {CHANNEL_ORDERS}, got "
                             f"{self.channel_order!r}")
        n_iters = self.iterations(train, flow_init is not None or state_init is not None, iters)
        init = None
        for arg, value in (("state_init", state_init), ("flow_init", flow_init)):
            if value is None:
                continue
            if tuple(jnp.shape(value)) != (s1[0], s1[1], s1[2], 2):
                raise ValueError(f"DIP: {arg} must be the full-resolution flow "
                                 f"{(s1[0], s1[1], s1[2], 2)}, got {tuple(jnp.shape(value))}")
            value = jnp.asarray(value, jnp.float32)
            init = value if init is None else init + value

        dtype = jnp.bfloat16 if self.mixed_precision else None
        im1 = jnp.asarray(image1, jnp.float32)
        im2 = jnp.asarray(image2, jnp.float32)
        if self.channel_order == "bgr":
            im1, im2 = im1[..., ::-1], im2[..., ::-1]
        im1 = 2 * (im1 / 255.0) - 1.0
        im2 = 2 * (im2 / 255.0) - 1.0
        b = s1[0]
        fmaps = QuarterEncoder(256, dtype, name="fnet")(jnp.concatenate([im1, im2], axis=0))
        fmaps = fmaps.astype(jnp.float32)
        f1, f2 = fmaps[:b], fmaps[b:]
        block_s = UpdateBlock(True, dtype, name="update_block_s")
        block = UpdateBlock(False, dtype, name="update_block")

        def double_step(f1l, f2l, net, inp, flow):
            """Propagation then search half-step -> (net, flow, [convex x4 after each])."""
            ups = []
            for half, (cost_fn, blk) in enumerate(((inverse_propagation, block_s),
                                                   (local_search, block))):
                flow = jax.lax.stop_gradient(flow)
                net, mask, delta = blk(net, inp, cost_fn(f1l, f2l, flow), flow)
                flow = flow + delta
                if train or half == 1:
                    ups.append(geometry.convex_upsample(flow, mask, 4))
                else:
                    ups.append(None)
            return net, flow, ups

        def split(ctx):
            return jnp.tanh(ctx[..., :HIDDEN]), nn.relu(ctx[..., HIDDEN:])

        predictions = []
        if init is None:
            # official forward(): 1/16 stage, then 1/4 with the hidden state restarted
            net4, inp4 = split(f1)
            s_f1, s_f2 = avg_pool(f1, 4), avg_pool(f2, 4)
            s_net, s_inp = avg_pool(net4, 4), avg_pool(inp4, 4)
            u = self._uniform(s_f1.shape[:3] + (2,), train)
            s_flow = (u - 0.5) * 2 * float(self.max_offset // 16)
            flow4 = None
            for _ in range(n_iters):
                s_net, s_flow, ups = double_step(s_f1, s_f2, s_net, s_inp, s_flow)
                flow4 = ups[1]
                if train:
                    predictions += [geometry.upflow(up, 4) for up in ups]
            flow, net = flow4, net4
            flow_up = None
            for _ in range(n_iters):
                net, flow, ups = double_step(f1, f2, net, inp4, flow)
                flow_up = ups[1]
                if train:
                    predictions += ups
            flow_low = flow
        else:
            flow_up, flow_low = self._inference(f1, f2, init, n_iters, train, double_step, split,
                                                predictions)
        out = {"flow": flow_up, "flow_low": flow_low, "state": flow_up, "stats": {}}
        if train:
            out["predictions"] = jnp.stack(predictions)
        return out

    def _inference(self, f1, f2, init, n_iters, train, double_step, split, predictions):
        """The official warm-start ``inference()``; see the module docstring."""
        b, h4, w4, _ = f1.shape
        full_h = init.shape[1]
        n_static = pyramid_levels(h4, w4)
        levels = [(f1, f2)]
        for _ in range(n_static - 1):
            levels.append((avg_pool(levels[-1][0], 2), avg_pool(levels[-1][1], 2)))
        mag = jnp.sqrt(jnp.sum(jnp.square(init), axis=-1))
        auto_layer = jnp.ceil(jnp.max(mag) / 32).astype(jnp.int32)
        max_layers = jnp.minimum(3, auto_layer)
        n_levels = 1 + jnp.clip(max_layers - 1, 0, n_static - 1)  # traced: levels in use
        flow_up = None
        flow = None
        for lvl in reversed(range(n_static)):
            lf1, lf2 = levels[lvl]
            hl, wl = lf1.shape[1:3]
            net, inp = split(lf1)  # context = pooled fmap1, split after pooling
            u = self._uniform((b, hl, wl, 2), train)
            start = resize_flow(init, (hl, wl), hl / full_h) + (u - 0.5) * 2 * 16.0
            if flow_up is not None:
                from_prev = (resize_flow(flow_up, (hl, wl), hl / flow_up.shape[1])
                             + (u - 0.5) * 2 * 4.0)
                start = jnp.where(n_levels - 1 == lvl, start, from_prev)
            flow = start
            for _ in range(n_iters):
                net, flow, ups = double_step(lf1, lf2, net, inp, flow)
                flow_up = ups[1]
                if train and lvl == 0:
                    predictions += ups
        return flow_up, flow
