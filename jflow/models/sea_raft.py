"""SEA-RAFT (Wang, Lipson, Deng, ECCV 2024), faithful to the official weights (S, M, L).

``model.apply(variables, image1, image2, *, train=False, iters=None, flow_init=None,
state_init=None)`` with images (B, H, W, 3) float32 RGB 0..255. Any H, W: the pair is padded
inside the model to a multiple of 8 by replication, centred, as the official ``InputPadder``
(callers that pad to 8 themselves, ``pad_multiple = 8``, make this a no-op), and the outputs are
unpadded. Returns

* ``flow`` (B, H, W, 2): the final prediction; ``info`` (B, H, W, 4): its raw mixture
  parameters (2 mixture logits, 2 raw log-scales), convex-upsampled with the flow's mask;
  ``uncertainty`` (B, H, W): ``sum_m softmax(logits)_m * log b_m`` with the official clamps
  (``log b_1 = clip(raw_1, 0, var_max)``, ``log b_2 = clip(raw_2, var_min, 0)``), as the demo's
  heat map;
* ``flow_low`` (B, H'/8, W'/8, 2) at the padded (and scaled) 1/8 resolution; ``state`` (=
  ``flow_low``); ``stats`` ``{}``;
* when ``train``: ``predictions`` (iters + 1, B, H, W, 2) and ``info_predictions``
  (iters + 1, B, H, W, 4): the regressed initial flow, then one per update (the mixture loss,
  :func:`jflow.losses.mixture_laplace_loss`, takes both).

Schedule (official ``core/raft.py``): inputs ``2x/255 - 1``; ``cnet`` (ResNet-FPN on the channel
concatenation of both images) -> ``init_conv`` -> ``net`` (hidden state, first 128 channels) and
``ctx`` (next 128), no activation on either; ``flow_head(net)`` gives the initial flow and its
mixture parameters (6 channels); ``fnet`` on each image -> all-pairs correlation (4 levels,
radius 4, shared with RAFT: :mod:`jflow.models.corr`); ``iters`` x (lookup at ``grid +
stop_gradient(flow)``, motion encoder, 2 ConvNeXt blocks over ``cat[net, ctx, motion]``,
``flow_head`` -> ``flow += delta``, fresh mixture parameters). Each prediction is convex-
upsampled x8 with ``0.25 * upsample_weight(net)``.

Warm start: official SEA-RAFT has none. jflow's ``flow_init`` / ``state_init`` (1/8-resolution
flows at the padded size, summed) *replace* the regressed initial flow (a zero warm start is
therefore not the cold start: ``zero_init_is_cold_start = False``).

``scale`` s (Spring: -1): at evaluation the pair is bilinearly resized by ``2^s`` (torch
``F.interpolate(scale_factor=2^s, align_corners=False)``), the flow is resized back bilinearly
and multiplied by ``2^-s``, the mixture parameters area-resized (``calc_flow`` of the official
``evaluate.py``). Training ignores ``scale`` (the official trainer scales in augmentation).

BatchNorm (eps 1e-5, both encoders) uses batch statistics when ``train`` unless ``freeze_bn``;
as the official code, ``fnet`` normalises each image's batch separately when training with batch
statistics (one batched call otherwise: identical results).

Flax paths mirror the PyTorch module paths: ``cnet``/``fnet`` ``{conv1, bn1, layerI_J/{conv1,
bn1, conv2, bn2, downsample_0, bn3}, final_conv}`` (torch ``downsample.1`` is ``bn3``),
``init_conv``, ``flow_head_0``, ``flow_head_2``, ``upsample_weight_0``, ``upsample_weight_2``,
``update_block/encoder/{convc1, convc2, convf1, convf2, conv}``, ``update_block/refine_K/{dwconv,
norm, pwconv1, pwconv2, gamma, final}``.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflow import geometry
from jflow.models.corr import build_corr, lookup
from jflow.models.encoders import normalize_image
from jflow.models.layers import Conv2d, make_norm
from jflow.models.raft import check_images
from jflow.models.update import MotionEncoder

Array = Any
# size: (ResNet blocks per stage, default evaluation iterations)
SEA_RAFT_SIZES = {"S": ((2, 2, 2), 4), "M": ((3, 4, 6), 4), "L": ((3, 4, 6), 12)}
DIM = 128  # hidden and context channels
BLOCK_DIMS = (64, 128, 256)
INITIAL_DIM = 64
VAR_MIN, VAR_MAX = 0.0, 10.0  # official eval/train configs: use_var, var_min 0, var_max 10


def log_scales(info: Array, var_min: float = VAR_MIN, var_max: float = VAR_MAX) -> Array:
    """(..., 4) raw mixture parameters -> (..., 2) clamped ``log b``: component 1 in
    [0, var_max] (the wide one), component 2 in [var_min, 0] (= 0 with the published configs)."""
    raw = info[..., 2:4]
    return jnp.stack([jnp.clip(raw[..., 0], 0.0, var_max), jnp.clip(raw[..., 1], var_min, 0.0)],
                     axis=-1)


def uncertainty_map(info: Array, var_min: float = VAR_MIN, var_max: float = VAR_MAX) -> Array:
    """``sum_m softmax(logits)_m * log b_m`` (the official demo's heat map), shape info[..., 0]."""
    weights = jax.nn.softmax(info[..., 0:2].astype(jnp.float32), axis=-1)
    return jnp.sum(weights * log_scales(info.astype(jnp.float32), var_min, var_max), axis=-1)


# ----------------------------------------------------------------------------------- resizing
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) torch ``mode='area'`` (adaptive average pooling) weights."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo = (i * n_in) // n_out
        hi = -((-(i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _resize(x: Array, mh: np.ndarray, mw: np.ndarray) -> Array:
    return geometry.resize_separable(x, jnp.asarray(mh, x.dtype), jnp.asarray(mw, x.dtype))



# ------------------------------------------------------------------------------------- layers
class BasicBlock(nn.Module):
    """``relu(sc(x) + relu(bn2(conv2(relu(bn1(conv1 x))))))``; biased convs; ``sc`` = strided
    1x1 conv (``downsample_0``) + ``bn3`` when the shape changes."""

    planes: int
    stride: int = 1
    freeze_bn: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        def bn(name):
            return make_norm("batch", name, self.planes, train=train, freeze_bn=self.freeze_bn)

        y = Conv2d(self.planes, 3, self.stride, 1, init_mode="kaiming", name="conv1")(x)
        y = nn.relu(bn("bn1")(y))
        y = Conv2d(self.planes, 3, 1, 1, init_mode="kaiming", name="conv2")(y)
        y = nn.relu(bn("bn2")(y))
        if self.stride != 1 or x.shape[-1] != self.planes:
            x = Conv2d(self.planes, 1, self.stride, 0, init_mode="kaiming",
                       name="downsample_0")(x)
            x = bn("bn3")(x)
        return nn.relu(x + y)


class ResNetFPN(nn.Module):
    """Truncated ResNet-18/34 at 1/8 resolution: 7x7 s2 conv, BN, ReLU (no max-pool), stages of
    ``blocks`` BasicBlocks at 64 (1/2), 128 (1/4), 256 (1/8), then a 1x1 conv to ``output_dim``."""

    blocks: tuple[int, ...] = (2, 2, 2)
    output_dim: int = 256
    freeze_bn: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = Conv2d(INITIAL_DIM, 7, 2, 3, init_mode="kaiming", name="conv1")(x)
        x = make_norm("batch", "bn1", INITIAL_DIM, train=train, freeze_bn=self.freeze_bn)(x)
        x = nn.relu(x)
        for i, (n, width, stride) in enumerate(zip(self.blocks, BLOCK_DIMS, (1, 2, 2)), start=1):
            for j in range(n):
                x = BasicBlock(width, stride if j == 0 else 1, self.freeze_bn,
                               name=f"layer{i}_{j}")(x, train)
        return Conv2d(self.output_dim, 1, 1, 0, init_mode="kaiming", name="final_conv")(x)


def _uniform(fan_in: int):
    """PyTorch's default Linear/Conv init for weights and biases: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                     bound)


class DepthwiseConv(nn.Module):
    """``nn.Conv2d(C, C, k, padding=k // 2, groups=C)``: kernel (k, k, 1, C) HWIO, bias (C,).

    ``x`` an array, or a tuple of arrays standing for their channel concatenation: each part is
    filtered with its channels of the kernel (a depthwise filter acts channel by channel), so a
    part repeated across unrolled iterations (the context features) is filtered once.
    """

    kernel_size: int = 7

    @nn.compact
    def __call__(self, x: Array | tuple[Array, ...]) -> Array:
        parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        c, k = sum(part.shape[-1] for part in parts), self.kernel_size
        kernel = self.param("kernel", _uniform(k * k), (k, k, 1, c), jnp.float32)
        bias = self.param("bias", _uniform(k * k), (c,), jnp.float32)
        # A sum of k*k shifted products: one fused elementwise loop per part (XLA:CPU's grouped
        # convolution is an order of magnitude slower for this shape). The concatenation of the
        # parts also keeps the loop out of the library fusion XLA:CPU forms for the LayerNorm and
        # Linear that follow, where the shifted slices would be copied out one by one (2.5x
        # slower ConvNeXt block).
        p, out, start = k // 2, [], 0
        for part in parts:
            h, w, n = part.shape[1], part.shape[2], part.shape[-1]
            xp = jnp.pad(part, ((0, 0), (p, p), (p, p), (0, 0)))
            kern = kernel[:, :, 0, start:start + n].astype(part.dtype)
            out.append(sum(xp[:, i:i + h, j:j + w] * kern[i, j] for i in range(k)
                           for j in range(k)) + bias[start:start + n].astype(part.dtype))
            start += n
        return jnp.concatenate(out, axis=-1) if len(out) > 1 else out[0]


class _Params(nn.Module):
    """Holds parameters under a submodule name (``{name: (shape, init)}``) and returns them."""

    shapes: tuple[tuple[str, tuple[int, ...], Any], ...]

    @nn.compact
    def __call__(self) -> tuple[Array, ...]:
        return tuple(self.param(name, init, shape, jnp.float32)
                     for name, shape, init in self.shapes)


class ConvNextBlock(nn.Module):
    """``final(x + gamma * pwconv2(gelu(pwconv1(norm(dwconv(x))))))``: depthwise 7x7, LayerNorm
    over channels (eps 1e-6), Linear to ``4 * output_dim``, exact-erf GELU, Linear back, layer
    scale ``gamma`` (init 1e-6), residual, 1x1 conv to ``output_dim``. ``x`` an array or a tuple
    of channel parts (:class:`DepthwiseConv`).

    The LayerNorm's scale and shift are folded into ``pwconv1`` (parameters ``norm/{scale, bias}``,
    ``pwconv1/{kernel, bias}`` as ``nn.LayerNorm`` and ``nn.Dense`` name them): applied to the
    activations they were broadcast to full maps that XLA:CPU shares between the unrolled
    iterations and writes out, one map each.
    """

    output_dim: int = DIM

    @nn.compact
    def __call__(self, x: Array | tuple[Array, ...]) -> Array:
        y = DepthwiseConv(7, name="dwconv")(x)
        x = jnp.concatenate(x, axis=-1) if isinstance(x, (tuple, list)) else x
        c, hidden = x.shape[-1], 4 * self.output_dim
        scale, shift = _Params((("scale", (c,), nn.initializers.ones),
                                ("bias", (c,), nn.initializers.zeros)), name="norm")()
        kernel, bias = _Params((("kernel", (c, hidden), _uniform(c)),
                                ("bias", (hidden,), _uniform(c))), name="pwconv1")()
        y = y - jnp.mean(y, axis=-1, keepdims=True)
        y = y * jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=-1, keepdims=True) + 1e-6)
        y = jnp.dot(y, scale[:, None] * kernel) + (jnp.dot(shift, kernel) + bias)
        y = jax.nn.gelu(y, approximate=False)
        y = nn.Dense(c, kernel_init=_uniform(hidden), bias_init=_uniform(hidden),
                     name="pwconv2")(y)
        gamma = self.param("gamma", nn.initializers.constant(1e-6), (c,), jnp.float32)
        return Conv2d(self.output_dim, 1, 1, 0, name="final")(x + gamma * y)


class UpdateBlock(nn.Module):
    """Motion encoder (RAFT's), then ``net = refine_k(cat[net, ctx, motion])`` for each block."""

    num_blocks: int = 2

    @nn.compact
    def __call__(self, net: Array, ctx: Array, corr: Array, flow: Array) -> Array:
        motion = MotionEncoder((2 * DIM, DIM + DIM // 2, DIM, DIM // 2, DIM), name="encoder")(
            flow, corr)
        for k in range(self.num_blocks):  # cat[net, ctx, motion] as parts (DepthwiseConv)
            net = ConvNextBlock(DIM, name=f"refine_{k}")((net, ctx, motion))
        return net


# ------------------------------------------------ pieces shared with DEQ SEA-RAFT (deq_sea_raft)
# The functions below that create modules are called inside a compact ``__call__``: their
# modules (``cnet``, ``init_conv``, ``fnet``, the heads) become children of the calling model
# under the official names.
def check_inputs(image1: Array, image2: Array, size: str, name: str
                 ) -> tuple[tuple[int, ...], int]:
    """Checks the pair (any size) and ``size``; returns (blocks per stage, eval iterations)."""
    check_images(image1, image2, name, multiple=1)  # any size: padded in the model
    if size not in SEA_RAFT_SIZES:
        raise ValueError(f"{name}: size must be one of {sorted(SEA_RAFT_SIZES)}, got {size!r}")
    return SEA_RAFT_SIZES[size]


def prepare_pair(image1: Array, image2: Array, scale: int
                 ) -> tuple[Array, Array, geometry.InputPadder | None]:
    """RGB 0..255 -> resized by ``2^scale``, ``2x/255 - 1``, replicate-padded (centred) to a
    multiple of 8 as the official ``InputPadder``; returns the pair and its padder (None when
    the size is a multiple of 8 already, also a symbolic ``8 * k`` of ``jflow.export``)."""
    im1 = jnp.asarray(image1, jnp.float32)
    im2 = jnp.asarray(image2, jnp.float32)
    if scale:
        f = 2.0 ** scale
        h0, w0 = im1.shape[1:3]
        hs, ws = int(math.floor(h0 * f)), int(math.floor(w0 * f))
        im1, im2 = (geometry.resize_bilinear(im, (hs, ws), align_corners=False, scale=f)
                    for im in (im1, im2))
    im1, im2 = normalize_image(im1), normalize_image(im2)
    if all(geometry.pad_amounts(s, 8) == (0, 0) for s in im1.shape[1:3]):
        return im1, im2, None
    padder = geometry.InputPadder(im1.shape[1:3], 8)
    im1, im2 = padder.pad(im1, im2)
    return im1, im2, padder


def context(blocks: tuple[int, ...], freeze_bn: bool, im1: Array, im2: Array, train: bool
            ) -> tuple[Array, Array]:
    """``cnet`` on ``cat[im1, im2]`` -> ``init_conv`` -> (``net``, ``ctx``), 128 channels each."""
    cnet = ResNetFPN(blocks, 2 * DIM, freeze_bn, name="cnet")(
        jnp.concatenate([im1, im2], axis=-1), train)
    cnet = Conv2d(2 * DIM, 3, 1, 1, name="init_conv")(cnet)
    return cnet[..., :DIM], cnet[..., DIM:]


def correlation(blocks: tuple[int, ...], freeze_bn: bool, im1: Array, im2: Array, train: bool,
                kind: str, levels: int) -> Any:
    """``fnet`` on each image -> the correlation state (:func:`jflow.models.corr.build_corr`)."""
    b = im1.shape[0]
    fnet = ResNetFPN(blocks, 2 * DIM, freeze_bn, name="fnet")
    if train and not freeze_bn:  # batch statistics per image, as the official code
        fmap1, fmap2 = fnet(im1, train), fnet(im2, train)
    else:
        fmaps = fnet(jnp.concatenate([im1, im2], axis=0), train)
        fmap1, fmap2 = fmaps[:b], fmaps[b:]
    return build_corr(fmap1, fmap2, kind=kind, num_levels=levels)


class Heads:
    """The flow head (``flow_head_0``, ``flow_head_2``) and the mask head
    (``upsample_weight_0``, ``upsample_weight_2``) of the calling model:
    ``heads(net) -> (delta flow, raw mixture parameters (4), 0.25 * mask)``."""

    def __init__(self):
        self.head0 = Conv2d(2 * DIM, 3, 1, 1, name="flow_head_0")
        self.head2 = Conv2d(6, 3, 1, 1, name="flow_head_2")
        self.up0 = Conv2d(2 * DIM, 3, 1, 1, name="upsample_weight_0")
        self.up2 = Conv2d(64 * 9, 1, 1, 0, name="upsample_weight_2")

    def __call__(self, net: Array) -> tuple[Array, Array, Array]:
        out = self.head2(nn.relu(self.head0(net)))
        return out[..., :2], out[..., 2:], 0.25 * self.up2(nn.relu(self.up0(net)))


def flow_head(params: Any, net: Array) -> Array:
    """The flow head's delta flow from its parameters ``{"flow_head_0", "flow_head_2"}`` (for a
    pure update operator)."""
    y = Conv2d(2 * DIM, 3, 1, 1, parent=None).apply({"params": params["flow_head_0"]}, net)
    return Conv2d(6, 3, 1, 1, parent=None).apply({"params": params["flow_head_2"]},
                                                 nn.relu(y))[..., :2]


def upsample_outputs(padder: geometry.InputPadder | None, flow_8x: Array, info_8x: Array,
                     mask: Array) -> tuple[Array, Array]:
    """Convex x8 upsampling of the flow (x8) and the mixture parameters (unscaled) with one
    mask, unpadded (``padder`` None: nothing to unpad)."""
    up = geometry.convex_upsample(jnp.concatenate([flow_8x, info_8x / 8], -1), mask, 8)
    if padder is None:
        return up[..., :2], up[..., 2:]
    return padder.unpad(up[..., :2]), padder.unpad(up[..., 2:])


def finish(flow: Array, info: Array, image_hw: tuple[int, int], scale: int,
           var_min: float = VAR_MIN, var_max: float = VAR_MAX) -> dict:
    """``{"flow", "info", "uncertainty"}`` at the input size: a scaled prediction is resized
    back (flow bilinear x ``2^-scale``, mixture parameters area-averaged)."""
    if scale:
        f = 2.0 ** -scale
        h0, w0 = image_hw
        hs, ws = flow.shape[1:3]
        flow = f * geometry.resize_bilinear(flow, (h0, w0), align_corners=False, scale=f)
        info = _resize(info, _area_matrix(hs, h0), _area_matrix(ws, w0))
    return {"flow": flow, "info": info, "uncertainty": uncertainty_map(info, var_min, var_max)}


class SEARAFTFields(nn.Module):
    """The attributes SEA-RAFT and DEQ SEA-RAFT share; no ``__call__``.

    Attributes:
      size: "S" (ResNet-18 stages 2,2,2), "M" or "L" (ResNet-34 stages 3,4,6; L = M weights
        evaluated with 12 iterations).
      eval_iters: iterations (solver steps) at evaluation.
      num_blocks: ConvNeXt blocks in the update (2).
      corr: "all_pairs" | "on_the_fly"; ``corr_levels`` 4, ``corr_radius`` 4.
      freeze_bn: BatchNorm on running statistics even when training (official: never frozen).
      scale: evaluation input scale exponent (Spring -1).
      var_min, var_max: the log-scale clamps of the mixture (official 0, 10).
    """

    # Callers' padding to 8 is a no-op (the model pads itself); the regressed initial flow, not
    # zeros, is the cold start.
    pad_multiple: ClassVar[int] = 8
    pad_fill: ClassVar[str] = "replicate"
    zero_init_is_cold_start: ClassVar[bool] = False

    size: str = "S"
    eval_iters: int | None = None
    num_blocks: int = 2
    corr: str = "all_pairs"
    corr_levels: int = 4
    corr_radius: int = 4
    freeze_bn: bool = False
    scale: int = 0
    var_min: float = VAR_MIN
    var_max: float = VAR_MAX


class SEARAFT(SEARAFTFields):
    """SEA-RAFT; see the module docstring and :class:`SEARAFTFields`.

    Attributes:
      iters: updates when training (4, official); ``eval_iters`` None: the size's (4 S/M, 12 L).
    """

    iters: int = 4

    @nn.compact
    def __call__(self, image1: Array, image2: Array, *, train: bool = False,
                 iters: int | None = None, flow_init: Array | None = None,
                 state_init: Array | None = None) -> dict:
        blocks, size_eval_iters = check_inputs(image1, image2, self.size, "SEA-RAFT")
        default = self.iters if train else (self.eval_iters or size_eval_iters)
        n_iters = int(iters if iters is not None else default)
        if n_iters < 0:
            raise ValueError(f"SEA-RAFT: iters must be >= 0, got {n_iters}")

        b = image1.shape[0]
        im1, im2, padder = prepare_pair(image1, image2, 0 if train else int(self.scale))
        h, w = im1.shape[1] // 8, im1.shape[2] // 8
        net, ctx = context(blocks, self.freeze_bn, im1, im2, train)
        heads = Heads()

        def upsample(flow_8x, info_8x, mask):
            return upsample_outputs(padder, flow_8x, info_8x, mask)

        flow_8x, info_8x, mask = heads(net)
        warm = [v for v in (state_init, flow_init) if v is not None]
        for name, v in (("state_init", state_init), ("flow_init", flow_init)):
            if v is not None and tuple(jnp.shape(v)) != (b, h, w, 2):
                raise ValueError(f"SEA-RAFT: {name} must have shape {(b, h, w, 2)} (1/8 of the "
                                 f"padded size), got {tuple(jnp.shape(v))}")
        if warm:
            flow_8x = sum(jnp.asarray(v, jnp.float32) for v in warm)
        predictions, infos = [], []
        if train or n_iters == 0:
            fu, iu = upsample(flow_8x, info_8x, mask)
            predictions.append(fu)
            infos.append(iu)

        if n_iters > 0:
            corr_state = correlation(blocks, self.freeze_bn, im1, im2, train, self.corr,
                                     self.corr_levels)
            update = UpdateBlock(self.num_blocks, name="update_block")
            grid = geometry.coords_grid(b, h, w)
            for i in range(n_iters):
                flow_8x = jax.lax.stop_gradient(flow_8x)
                corr = lookup(corr_state, grid + flow_8x, self.corr_radius)
                net = update(net, ctx, corr, flow_8x)
                delta, info_8x, mask = heads(net)
                flow_8x = flow_8x + delta
                if train or i == n_iters - 1:
                    fu, iu = upsample(flow_8x, info_8x, mask)
                    predictions.append(fu)
                    infos.append(iu)

        out = finish(predictions[-1], infos[-1], image1.shape[1:3],
                     0 if train else int(self.scale), self.var_min, self.var_max)
        out.update(flow_low=flow_8x, state=flow_8x, stats={})
        if train:
            out["predictions"] = jnp.stack(predictions)
            out["info_predictions"] = jnp.stack(infos)
        return out


def checkpoint_blocks(state: dict) -> tuple[int, ...] | None:
    """ResNet blocks per stage of an official SEA-RAFT state_dict's ``fnet`` (``cnet`` if absent);
    None when it has neither."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in state]
    for net in ("fnet", "cnet"):
        counts = []
        for stage in (1, 2, 3):
            prefix = f"{net}.layer{stage}."
            idx = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)
                   and k[len(prefix):].split(".")[0].isdigit()}
            counts.append(max(idx) + 1 if idx else 0)
        if any(counts):
            return tuple(counts)
    return None


def check_checkpoint_size(state: dict, size: str, source: str) -> None:
    """Raises :class:`jflow.convert.ConversionError` (one message) unless ``state`` is an official
    SEA-RAFT state_dict of ``size`` (S: ResNet-18 stages 2,2,2; M and L: ResNet-34 stages 3,4,6).
    """
    from jflow.convert import ConversionError

    keys = [k[len("module."):] if k.startswith("module.") else k for k in state]
    heads = [k for k in keys if k.startswith(("init_conv.", "flow_head.", "upsample_weight."))]
    blocks = checkpoint_blocks(state)
    if not heads or blocks is None:
        sample = ", ".join(f"{k} {tuple(np.shape(state[k]))}" for k in list(state)[:4])
        raise ConversionError(
            f"{source} is not a SEA-RAFT checkpoint: it has no init_conv / flow_head / "
            f"upsample_weight and ResNet-FPN tensors (first keys: {sample}; {len(state)} in all)")
    want = SEA_RAFT_SIZES[size.upper()][0]
    if blocks != want:
        found = [s for s, (b, _) in SEA_RAFT_SIZES.items() if b == blocks]
        what = (f"SEA-RAFT {'/'.join(found)}" if found else "an unknown SEA-RAFT variant")
        raise ConversionError(
            f"{source} is {what} (ResNet-FPN blocks per stage {blocks}, e.g. "
            f"fnet.layer3.{blocks[2] - 1}.conv1.weight) but the config builds SEA-RAFT {size} "
            f"(blocks {want}); use configs/sea_raft.py:{found[0] if found else size}")
