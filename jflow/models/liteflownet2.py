"""LiteFlowNet2 (Hui, Tang, Loy, TPAMI 2020): a lightweight coarse-to-fine pyramid network.

``model.apply(variables, image1, image2, *, train=False, iters=None, flow_init=None,
state_init=None)`` with images (B, H, W, 3) RGB float32 0..255 of any size. The pair is resized
internally to the next multiple of 32 (bilinear, ``align_corners=False``, no antialiasing) and the
flow is resized back (u * W / W', v * H / H'), so callers do not pad (``pad_multiple = 1``).
Returns ``flow`` (B, H, W, 2), ``flow_low`` (pixel flow at the output level: 1/4 of the resized
input for the Sintel model, 1/2 for the KITTI model), ``state`` (``None``: LiteFlowNet2 has no warm
start, so ``flow_init`` / ``state_init`` are accepted and ignored), ``stats`` (``{}``) and, when
``train``, ``pyramid``: the list of per-level flows in *scaled* units (pixel flow / 20), coarse to
fine (L6, L5, L4, L3 and, for the KITTI model, the pseudo level L2), for the multi-level loss.

Architecture (from the Caffe deploy prototxts of the TPAMI 2020 release and ptlflow's port):

* NetC: a 6-level feature pyramid (LeakyReLU 0.1), levels 3..6 used.
* NetE, levels 6 -> 3, each with the cascade M (descriptor matching: upsample the coarser flow,
  warp F2, 7x7 cost volume (max displacement 3; at L3 a sparse stride-2 volume over offsets
  -6..6 step 2 upsampled by a fixed bilinear 49-group deconvolution), flow CNN, residual), S
  (sub-pixel refinement on ``[F1, warped F2, flow]``) and R (flow regularisation, f-lcon).
* Flow units: scaled flow = pixel flow / 20; at level k the pixel flow is scaled * 0.625, 1.25,
  2.5, 5 (L6..L3) and 10 (KITTI pseudo L2).
* R (f-lcon): the brightness error ``||img1 - warp(img2)||_2`` over the three colour channels (as
  the Caffe prototxt defines it; ptlflow's port subtracts only channel 1 of the warped image, a bug
  jflow does not copy: on seeded weights it moves the flow by up to 0.24 px), the flow minus its
  per-sample mean and the features feed a CNN that outputs a k x k distance map ``d``; the weights
  ``w = exp(-d^2 - max_c(-d^2))`` (the ExpMax layer; jflow takes the max per sample and pixel --
  the Caffe layer is only correct at batch 1, which is how the models were run) average the
  k x k neighbourhood of each flow component: ``conv1x1(w * unfold(u)) / conv1x1(w)``. Those
  three 1x1 convolutions (``flcon_u``, ``flcon_v``, ``flcon_div``: ones, zero bias) were frozen
  in Caffe; jflow keeps them as parameters (so the counts equal Caffe's 6,429,208 / 6,493,241)
  and stops their gradient. Weight decay scales all three alike and leaves the output unchanged.
* KITTI model: a pseudo level L2 (no matching, no image term) after L3, then output at 1/2.
* The bilinear upsampling deconvolutions between levels (``up_flow``, ``up_corr``) are
  parameters initialised to the bilinear kernel, trainable as in ptlflow (frozen in Caffe). The
  final upsampling to the input resolution is ptlflow's fixed bilinear deconvolution (x4, k8 s4
  p2 for the Sintel model; x2, k4 s2 p1 for KITTI) followed by a bilinear resize; it has no
  parameters (Caffe's parameter-free Resample stands there; ``jflow.convert`` checks that
  ptlflow's kernel is the bilinear one).

Warping is bilinear with zero padding, multiplied by a mask that is 1 where the sample lies in
the closed rectangle ``[0, w-1] x [0, h-1]``, computed from the coordinates (ptlflow computes it
by warping a ones image and thresholding at 1, which drops ~1.5 % of interior samples through
rounding). Correlation and f-lcon are sums of shifted slices (no gathers); every layer works at any
batch size.

Module names follow ptlflow's ``liteflownet2.py`` (``feature_net.convs.1.2`` ->
``feature_net/convs_1_2``, ``matching_nets.3.flow_net.10`` -> ``matching_nets_3/flow_net_10``, ...)
so ``jflow.convert`` maps the checkpoint mechanically. Transposed convolutions store the kernel of
the equivalent forward convolution (HWIO, spatially flipped); :func:`ptlflow_to_jflow_state` does
that re-layout and adds the constant f-lcon convolutions.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflow import geometry
from jflow.models.layers import ROW_STACKING_HELPS, Conv2d, torch_uniform_init
from jflow.models.window_corr import shifted_products

Array = Any

VARIANTS = ("sintel", "kitti")
DIV_FLOW = 20.0
# Per-level multipliers from scaled flow to pixel flow at that level: L6, L5, L4, L3, (L2).
LEVEL_MULT = (0.625, 1.25, 2.5, 5.0, 10.0)
FLOW_KERNEL = (3, 3, 5, 5)          # last conv of M and S, and the f-lcon window, per level
FEAT_CHANNELS = (192, 128, 96, 64)  # NetC channels at L6..L3
# The image means ptlflow applies (Caffe LiteFlowNet v1 values, frame 1), to RGB / 255.
RGB_MEAN = (0.411618, 0.434631, 0.454253)


def leaky(x: Array) -> Array:
    return jax.nn.leaky_relu(x, 0.1)


def bilinear_kernel(size: int) -> np.ndarray:
    """Caffe's 1-D ``bilinear`` filler (the fixed upsampling deconvolutions): k=4 -> .25 .75 .75 .25."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    x = np.arange(size)
    return 1 - np.abs(x / f - c)


def bilinear_kernel_2d(size: int) -> np.ndarray:
    k = bilinear_kernel(size)
    return np.outer(k, k)


def _resize_axis(x: Array, axis: int, n_out: int) -> Array:
    """torch ``F.interpolate(bilinear, align_corners=False)`` along one axis (no antialias)."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    i0, i1, lam = geometry.linear_taps(n_in, n_out, align_corners=False)
    shape = [1] * x.ndim
    shape[axis] = n_out
    lam = jnp.asarray(lam, x.dtype).reshape(shape)
    a = jnp.take(x, jnp.asarray(i0), axis=axis)
    b = jnp.take(x, jnp.asarray(i1), axis=axis)
    return a * (1 - lam) + b * lam


def resize_bilinear(x: Array, hw: tuple[int, int]) -> Array:
    """(B, H, W, C) -> (B, h, w, C), torch bilinear ``align_corners=False`` without antialiasing."""
    return _resize_axis(_resize_axis(x, 1, int(hw[0])), 2, int(hw[1]))


def warp(x: Array, pixel_flow: Array) -> Array:
    """Backward warp with zero padding, masked to samples inside ``[0, w-1] x [0, h-1]``."""
    b, h, w, _ = x.shape
    coords = geometry.coords_grid(b, h, w, pixel_flow.dtype) + pixel_flow
    out = geometry.bilinear_sample(x, coords)
    cx, cy = coords[..., 0], coords[..., 1]
    inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
    return out * inside[..., None].astype(out.dtype)


def correlation(f1: Array, f2: Array, max_disp: int = 3, *, tile: int = 16) -> Array:
    """Cost volume ``mean_c f1(x) * f2(x + d)`` over d in [-r, r]^2 (zero outside), (B, H, W, (2r+1)^2).

    Channel ``(dy + r) * (2r + 1) + (dx + r)`` (y-major), divided by the channel count as Caffe's
    Correlation layer does; computed as row matrix products (:mod:`jflow.models.window_corr`).
    """
    b, h, w, c = f1.shape
    r = max_disp
    f2p = jnp.pad(f2, ((0, 0), (r, r), (r, r), (0, 0)))
    return shifted_products(f1, f2p, r, tile=tile).reshape(b, h, w, -1) / c


def unfold(x: Array, k: int) -> Array:
    """torch ``nn.Unfold(k, padding=k//2)`` of (B, H, W, C) -> (B, H, W, C, k*k), zero padded,
    window index y-major (one patches op: cheaper to compile than k*k slices)."""
    p = k // 2
    out = jax.lax.conv_general_dilated_patches(
        x, (k, k), (1, 1), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    return out.reshape(*x.shape, k * k)  # patch features are channel-major: c * k*k + window


def depthwise_conv_transpose(x: Array, kernel: Array, stride: int, padding: int) -> jax.Array:
    """``ConvTranspose2d(C, C, k, stride, padding, groups=C)`` with the equivalent forward kernel
    (k, k, 1, C) (as :class:`ConvTranspose2d` stores it), computed per output phase: output pixel
    ``(s i + a, s j + b)`` is a sum of the input shifted by whole pixels times the kernel taps of
    that phase; the s^2 phases are interleaved. Elementwise products only: XLA:CPU's grouped,
    input-dilated convolution is two orders of magnitude slower."""
    b, h, w, c = x.shape
    k, s = kernel.shape[0], stride
    pad = k - 1 - padding  # of the equivalent forward convolution on the dilated input
    ho, wo = (h - 1) * s + k - 2 * padding, (w - 1) * s + k - 2 * padding
    if ho % s or wo % s:
        raise ValueError(f"depthwise_conv_transpose: output {ho}x{wo} is not a multiple of the "
                         f"stride {s}")
    hq, wq = ho // s, wo // s

    def taps(phase):  # (kernel tap, input offset) pairs of an output phase along one axis
        return [(t, (phase + t - pad) // s) for t in range(k) if (phase + t - pad) % s == 0]

    xp = jnp.pad(x, ((0, 0), (k, k + hq), (k, k + wq), (0, 0)))
    phases = [[sum(xp[:, k + dy:k + dy + hq, k + dx:k + dx + wq] * kernel[t, u, 0]
                   for t, dy in taps(a) for u, dx in taps(bb))
               for bb in range(s)] for a in range(s)]
    out = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, hq, s, wq, s, C)
    return out.reshape(b, ho, wo, c)

class ConvTranspose2d(nn.Module):
    """``torch.nn.ConvTranspose2d`` in NHWC. ``kernel`` is the equivalent forward convolution's
    (HWIO: (kh, kw, Cin/groups, Cout), spatially flipped relative to torch's (Cin, Cout/groups,
    kh, kw)); ``bilinear=True`` initialises it to Caffe's bilinear upsampling kernel (per-channel
    groups)."""

    features: int
    kernel_size: int
    stride: int
    padding: int
    groups: int = 1
    use_bias: bool = False
    bilinear: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k, s, p = self.kernel_size, self.stride, self.padding
        cin = x.shape[-1]
        shape = (k, k, cin // self.groups, self.features)
        if self.bilinear:
            def init(key, shape, dtype=jnp.float32):
                del key
                return jnp.broadcast_to(jnp.asarray(bilinear_kernel_2d(k), dtype)[:, :, None, None],
                                        shape)
        else:
            # torch's default for ConvTranspose2d: fan_in = weight.size(1) * k * k = Cout/g k^2.
            init = torch_uniform_init(self.features // self.groups * k * k)
        kernel = self.param("kernel", init, shape, jnp.float32)
        if self.groups == cin == self.features:  # depthwise: every upsampling deconv here
            y = depthwise_conv_transpose(x, kernel.astype(x.dtype), s, p)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel.astype(x.dtype), window_strides=(1, 1),
                padding=((k - 1 - p, k - 1 - p), (k - 1 - p, k - 1 - p)), lhs_dilation=(s, s),
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups)
        if self.use_bias:
            bias = self.param("bias", torch_uniform_init(self.features // self.groups * k * k),
                              (self.features,), jnp.float32)
            y = y + bias.astype(y.dtype)
        return y


class ConstantConv1x1(nn.Module):
    """A frozen Caffe 1x1 convolution k*k -> 1 (kernel ones, bias zero); gradients are stopped."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.ones, (1, 1, c, 1), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (1,), jnp.float32)
        kernel = jax.lax.stop_gradient(kernel).astype(x.dtype)
        bias = jax.lax.stop_gradient(bias).astype(x.dtype)
        return jnp.sum(x * kernel[0, 0, :, 0], axis=-1) + bias[0]


def flcon(flow: Array, dist: Array, k: int, sum_u: nn.Module, sum_v: nn.Module,
          sum_w: nn.Module) -> Array:
    """Feature-driven local convolution of ``flow`` (B, H, W, 2) with distances ``dist`` (.., k*k)."""
    d = -jnp.square(dist)
    wgt = jnp.exp(d - jnp.max(d, axis=-1, keepdims=True))  # ExpMax, per sample and pixel
    div = sum_w(wgt)
    patches = unfold(flow, k)  # (B, H, W, 2, k*k)
    u = sum_u(wgt * patches[..., 0, :]) / div
    v = sum_v(wgt * patches[..., 1, :]) / div
    return jnp.stack([u, v], axis=-1)


def _safe_norm(x: Array) -> Array:
    """L2 norm over the last axis with a zero (not NaN) gradient at 0."""
    s = jnp.sum(jnp.square(x), axis=-1)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


class FeatureNet(nn.Module):
    """NetC: returns the features at L3, L4, L5, L6 of a (N, H, W, 3) batch, coarse first."""

    @nn.compact
    def __call__(self, x: Array) -> list[Array]:
        spec = [[(32, 7, 1)], [(32, 3, 2), (32, 3, 1), (32, 3, 1)], [(64, 3, 2), (64, 3, 1)],
                [(96, 3, 2), (96, 3, 1)], [(128, 3, 2)], [(192, 3, 2)]]
        feats = []
        for i, block in enumerate(spec):
            for j, (c, k, s) in enumerate(block):
                x = leaky(Conv2d(c, k, s, k // 2, name=f"convs_{i}_{2 * j}",
                                 stack_rows=i == 0 and ROW_STACKING_HELPS)(x))  # 7x7 on RGB
            if i > 1:
                feats.append(x)
        return feats[::-1]


def _conv_stack(prefix: str, channels: tuple[int, ...], x: Array, last_kernel: int | None = None
                ) -> Array:
    """Sequential 3x3 convs named ``{prefix}_{0,2,4,...}``, LeakyReLU after each; if
    ``last_kernel`` a final conv to 2 channels (no activation) named ``{prefix}_{2n}``."""
    for j, c in enumerate(channels):
        x = leaky(Conv2d(c, 3, 1, 1, name=f"{prefix}_{2 * j}")(x))
    if last_kernel is not None:
        x = Conv2d(2, last_kernel, 1, last_kernel // 2, name=f"{prefix}_{2 * len(channels)}")(x)
    return x


class Matching(nn.Module):
    """Descriptor matching (M) at pyramid level ``level`` (0 = L6 ... 3 = L3)."""

    level: int

    @nn.compact
    def __call__(self, f1: Array, f2: Array, flow: Array | None) -> Array:
        lvl = self.level
        if flow is not None:
            flow = ConvTranspose2d(2, 4, 2, 1, groups=2, bilinear=True, name="up_flow")(flow)
            f2 = warp(f2, flow * LEVEL_MULT[lvl])
        if lvl < 3:
            corr = correlation(f1, f2, 3)
        else:  # sparse: every 2nd pixel, offsets -6..6 step 2, then a fixed bilinear x2 deconv
            corr = correlation(f1[:, ::2, ::2], f2[:, ::2, ::2], 3)
        corr = leaky(corr)
        if lvl == 3:
            corr = ConvTranspose2d(49, 4, 2, 1, groups=49, bilinear=True, name="up_corr")(corr)
        new = _conv_stack("flow_net", (128, 128, 96, 64, 32), corr, FLOW_KERNEL[lvl])
        return new if flow is None else flow + new


class SubPixel(nn.Module):
    """Sub-pixel refinement (S); returns the flow and its 32-channel features."""

    level: int

    @nn.compact
    def __call__(self, f1: Array, f2: Array, flow: Array) -> tuple[Array, Array]:
        k = FLOW_KERNEL[self.level]
        warped = warp(f2, flow * LEVEL_MULT[self.level])
        x = _conv_stack("feat_net", (128, 128, 96, 64, 32),
                        jnp.concatenate([f1, warped, flow], axis=-1))
        return flow + Conv2d(2, k, 1, k // 2, name="flow_net")(x), x


class Regularization(nn.Module):
    """Flow regularisation (R, f-lcon); returns the flow and its 32-channel features."""

    level: int

    @nn.compact
    def __call__(self, img1: Array, img2: Array, f1: Array, flow: Array) -> tuple[Array, Array]:
        lvl = self.level
        k = FLOW_KERNEL[lvl]
        warped = warp(img2, flow * LEVEL_MULT[lvl])
        err = _safe_norm(img1 - warped)[..., None]  # all three channels (Caffe), not ptlflow's one
        flow_nomean = flow - jnp.mean(flow, axis=(1, 2), keepdims=True)
        g = f1 if lvl < 2 else leaky(Conv2d(128, 1, 1, 0, name="feat_conv_0")(f1))
        x = _conv_stack("feat_net", (128, 128, 64, 64, 32, 32),
                        jnp.concatenate([err, flow_nomean, g], axis=-1))
        if lvl < 2:
            dist = Conv2d(k * k, 3, 1, 1, name="dist")(x)
        else:
            dist = Conv2d(k * k, (k, 1), 1, (k // 2, 0), name="dist_0")(x)
            dist = Conv2d(k * k, (1, k), 1, (0, k // 2), name="dist_1")(dist)
        out = flcon(flow, dist, k, ConstantConv1x1(name="flcon_u"),
                    ConstantConv1x1(name="flcon_v"), ConstantConv1x1(name="flcon_div"))
        return out, x


class PseudoSubpixel(nn.Module):
    """KITTI pseudo level L2, flow part: ``up(flow) + conv7x7(deconv(S features of L3))``."""

    @nn.compact
    def __call__(self, sub_feat: Array, flow: Array) -> Array:
        up = ConvTranspose2d(2, 4, 2, 1, groups=2, bilinear=True, name="up_flow")(flow)
        x = ConvTranspose2d(32, 4, 2, 1, use_bias=True, name="flow_net_0")(sub_feat)
        return up + Conv2d(2, 7, 1, 3, name="flow_net_1")(x)


class PseudoRegularization(nn.Module):
    """KITTI pseudo level L2, 7x7 f-lcon driven by a deconvolution of the L3 R features."""

    @nn.compact
    def __call__(self, reg_feat: Array, flow: Array) -> Array:
        x = ConvTranspose2d(32, 4, 2, 1, use_bias=True, name="feat_net_0")(reg_feat)
        x = Conv2d(49, (7, 1), 1, (3, 0), name="feat_net_1")(x)
        dist = Conv2d(49, (1, 7), 1, (0, 3), name="feat_net_2")(x)
        return flcon(flow, dist, 7, ConstantConv1x1(name="flcon_u"),
                     ConstantConv1x1(name="flcon_v"), ConstantConv1x1(name="flcon_div"))


def _fixed_upsample(flow: Array, factor: int) -> Array:
    """ptlflow's final deconvolution with the bilinear kernel (x4: k8 s4 p2; x2: k4 s2 p1)."""
    k, p = 2 * factor, factor // 2
    kernel = jnp.asarray(bilinear_kernel_2d(k), flow.dtype)[:, :, None, None]
    kernel = jnp.broadcast_to(kernel, (k, k, 1, 2))
    return depthwise_conv_transpose(flow, kernel, factor, p)


class LiteFlowNet2(nn.Module):
    """LiteFlowNet2, ``variant`` "sintel" (output at L3) or "kitti" (pseudo level L2)."""

    # Any input size: the model resizes to a multiple of 32 itself; no warm start.
    pad_multiple: ClassVar[int] = 1
    pad_fill: ClassVar[str] = "replicate"
    zero_init_is_cold_start: ClassVar[bool] = False

    variant: str = "sintel"

    @nn.compact
    def __call__(self, image1: Array, image2: Array, *, train: bool = False,
                 iters: int | None = None, flow_init: Array | None = None,
                 state_init: Array | None = None) -> dict:
        del iters, flow_init, state_init  # not iterative, no warm start
        if self.variant not in VARIANTS:
            raise ValueError(f"LiteFlowNet2: variant must be one of {VARIANTS}, got "
                             f"{self.variant!r}")
        s1, s2 = jnp.shape(image1), jnp.shape(image2)
        if len(s1) != 4 or s1[-1] != 3:
            raise ValueError(f"LiteFlowNet2: image1 must be (B, H, W, 3), got shape {s1}")
        if s1 != s2:
            raise ValueError(f"LiteFlowNet2: image2 shape {s2} differs from image1 shape {s1}")
        b, h, w, _ = s1
        h2, w2 = -(-h // 32) * 32, -(-w // 32) * 32
        mean = jnp.asarray(RGB_MEAN, jnp.float32)
        ims = jnp.concatenate([image1, image2], axis=0).astype(jnp.float32) / 255.0 - mean
        ims = resize_bilinear(ims, (h2, w2))

        feats = FeatureNet(name="feature_net")(ims)
        flow = sub_feat = reg_feat = None
        pyramid = []
        for lvl in range(4):
            f = feats[lvl]
            f1, f2 = f[:b], f[b:]
            imgs = resize_bilinear(ims, f.shape[1:3])
            flow = Matching(lvl, name=f"matching_nets_{lvl}")(f1, f2, flow)
            flow, sub_feat = SubPixel(lvl, name=f"subpixel_nets_{lvl}")(f1, f2, flow)
            flow, reg_feat = Regularization(lvl, name=f"regularization_nets_{lvl}")(
                imgs[:b], imgs[b:], f1, flow)
            pyramid.append(flow)
        if self.variant == "kitti":
            flow = PseudoSubpixel(name="pseudo_subpixel")(sub_feat, flow)
            flow = PseudoRegularization(name="pseudo_regularization")(reg_feat, flow)
            pyramid.append(flow)
            factor, mult = 2, LEVEL_MULT[4]
        else:
            factor, mult = 4, LEVEL_MULT[3]
        flow_low = flow * mult
        up = _fixed_upsample(flow, factor) * DIV_FLOW
        up = resize_bilinear(up, (h, w))
        up = up * jnp.asarray([w / w2, h / h2], up.dtype)
        out = {"flow": up, "flow_low": flow_low, "state": None, "stats": {}}
        if train:
            out["pyramid"] = pyramid
        return out

    @staticmethod
    def constant_variables(variables: Mapping[str, Any]) -> dict:
        """Sets the frozen f-lcon 1x1 convolutions (``flcon_*``) to ones / zero bias, leaving the
        rest; for ``random_variables`` (tests, benchmarks)."""
        def fix(tree):
            if not isinstance(tree, Mapping):
                return tree
            out = {}
            for k, v in tree.items():
                if k.startswith("flcon_") and isinstance(v, Mapping):
                    out[k] = {n: (jnp.ones_like(a) if n == "kernel" else jnp.zeros_like(a))
                              for n, a in v.items()}
                else:
                    out[k] = fix(v)
            return out
        return fix(dict(variables))


# ------------------------------------------------------------------ ptlflow checkpoint re-layout

_LEVELS = range(4)


def _is_transposed(key: str) -> bool:
    return bool(key.endswith(".weight") and (
        key.endswith("up_flow.weight") or key.endswith("up_corr.weight")
        or key in ("pseudo_subpixel.flow_net.0.weight", "pseudo_regularization.feat_net.0.weight")))


def _transposed_to_forward(w: np.ndarray, groups: int) -> np.ndarray:
    """torch ConvTranspose2d weight (Cin, Cout/g, kh, kw) -> the equivalent forward conv's OIHW
    weight (Cout, Cin/g, kh, kw), spatially flipped (``jflow.convert`` then makes it HWIO)."""
    cin, cout_g, kh, kw = w.shape
    w = w.reshape(groups, cin // groups, cout_g, kh, kw)
    w = np.transpose(w, (0, 2, 1, 3, 4)).reshape(groups * cout_g, cin // groups, kh, kw)
    return np.ascontiguousarray(w[:, :, ::-1, ::-1])


def ptlflow_to_jflow_state(state: Mapping[str, np.ndarray], variant: str,
                           source: str = "checkpoint") -> dict[str, np.ndarray]:
    """ptlflow's LiteFlowNet2 state_dict -> one ``jflow.convert`` maps mechanically.

    Transposed-conv weights are re-laid out as forward convolutions; ptlflow's final ``up_flow``
    deconvolution is checked to be the bilinear kernel (jflow applies it as a constant) and
    dropped; the frozen f-lcon 1x1 convolutions ptlflow leaves out are added (ones, zero bias).
    Raises ``ValueError`` naming ``source`` for a checkpoint of another model or variant.
    """
    from jflow.convert import ConversionError

    state = {k[len("module."):] if k.startswith("module.") else k: np.asarray(v)
             for k, v in state.items()}
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    if "feature_net.convs.0.0.weight" not in state or "matching_nets.0.flow_net.0.weight" not in state:
        sample = ", ".join(sorted(state)[:4])
        raise ConversionError(
            f"{source} is not a ptlflow LiteFlowNet2 checkpoint (no feature_net.convs.* / "
            f"matching_nets.* keys; it has {sample}, ...)")
    has_pseudo = any(k.startswith("pseudo_") for k in state)
    if has_pseudo != (variant == "kitti"):
        which = "KITTI (liteflownet2_pseudoreg)" if has_pseudo else "Sintel (liteflownet2)"
        want = "configs/liteflownet2.py:kitti" if has_pseudo else "configs/liteflownet2.py"
        raise ConversionError(f"{source} holds the {which} model; convert it with {want}")
    if "up_flow.weight" not in state:
        raise ConversionError(f"{source}: missing the final up_flow.weight of ptlflow's model")
    final = state.pop("up_flow.weight")
    factor = 2 if variant == "kitti" else 4
    expect = np.broadcast_to(bilinear_kernel_2d(2 * factor), (2, 1, 2 * factor, 2 * factor))
    if final.shape != expect.shape or not np.allclose(final, expect, atol=1e-6):
        raise ConversionError(
            f"{source}: the final up_flow deconvolution {tuple(final.shape)} is not the bilinear "
            f"x{factor} kernel jflow applies as a constant (max |diff| "
            f"{np.max(np.abs(final - expect)) if final.shape == expect.shape else 'n/a'})")
    out = {}
    for key, w in state.items():
        if _is_transposed(key):
            groups = w.shape[0] if w.shape[1] == 1 and "feat_net" not in key and \
                "flow_net" not in key else 1
            out[key] = _transposed_to_forward(w, groups)
        else:
            out[key] = w
    sizes = [(f"regularization_nets.{i}", FLOW_KERNEL[i]) for i in _LEVELS]
    if variant == "kitti":
        sizes.append(("pseudo_regularization", 7))
    for prefix, k in sizes:
        for name in ("flcon_u", "flcon_v", "flcon_div"):
            out[f"{prefix}.{name}.weight"] = np.ones((1, k * k, 1, 1), np.float32)
            out[f"{prefix}.{name}.bias"] = np.zeros((1,), np.float32)
    return out
