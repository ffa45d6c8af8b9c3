"""Building blocks shared by every network: a PyTorch-equivalent Conv2d and the normalisations.

``Conv2d`` pads explicitly like ``torch.nn.Conv2d`` (``padding=p`` means ``p`` zeros on each side),
so given the same weights it computes the same numbers. Its parameters are ``kernel`` (HWIO) and
``bias``, or ``kernel_v``/``kernel_g``/``bias`` when weight-normed (``w = g * v / ||v||``, see
:mod:`jflow.deq.weight_norm`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflow.deq.weight_norm import weight_normed_kernel

Array = Any
IntPair = int | Sequence[int]


def _pair(v: IntPair) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v}")
    return v


def torch_uniform_init(fan_in: int) -> Callable:
    """PyTorch's default Conv2d init for weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kaiming_normal_fan_out(key, shape, dtype=jnp.float32):
    """``nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu')`` for an HWIO kernel."""
    kh, kw, _, cout = shape
    std = math.sqrt(2.0 / (cout * kh * kw))
    return std * jax.random.normal(key, shape, dtype)


class Conv2d(nn.Module):
    """``torch.nn.Conv2d`` in NHWC with explicit symmetric padding.

    Attributes:
      features: output channels.
      kernel_size: int or (kh, kw).
      stride, padding, dilation: ints or pairs with PyTorch's meaning.
      use_bias: add a bias.
      wnorm: weight-normalise the kernel (params ``kernel_v``, ``kernel_g``).
      init_mode: ``"torch"`` (PyTorch default uniform) or ``"kaiming"`` (normal, fan_out, ReLU
        gain) for the kernel; the bias always uses PyTorch's default.
      dtype: computation dtype (e.g. bfloat16 for mixed precision); params stay float32.
      stack_rows: convolve the kh row-shifted copies of the input, stacked on channels, with a
        1 x kw kernel (same sum, reordered): for few input channels (an RGB image) jax 0.10's
        XLA:CPU runs that about twice as fast as the kh x kw convolution; jax >= 0.12 runs the
        plain one faster (see ``ROW_STACKING_HELPS``).
      pad_features: convolve with the output channels padded with zero filters to a multiple of
        this and slice them off (same numbers, same parameters): XLA:CPU's convolution runs an
        odd count such as 126 outputs slower than 128.
    """

    features: int
    kernel_size: IntPair = 3
    stride: IntPair = 1
    padding: IntPair = 0
    dilation: IntPair = 1
    use_bias: bool = True
    wnorm: bool = False
    init_mode: str = "torch"
    dtype: Any = None
    stack_rows: bool = False
    pad_features: int = 1

    @nn.compact
    def __call__(self, x: Array | Sequence[Array]) -> Array:
        """``x`` (B, H, W, Cin), or a tuple of arrays standing for their channel concatenation:
        then each part is convolved with its slice of the kernel and the results are summed
        (linearity), so that a part repeated across unrolled iterations (RAFT's context
        features) is computed once by XLA's common-subexpression elimination."""
        parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        kh, kw = _pair(self.kernel_size)
        cin = sum(part.shape[-1] for part in parts)
        fan_in = cin * kh * kw
        shape = (kh, kw, cin, self.features)
        if self.init_mode == "torch":
            kinit = torch_uniform_init(fan_in)
        elif self.init_mode == "kaiming":
            kinit = kaiming_normal_fan_out
        else:
            raise ValueError(f"Conv2d.init_mode must be 'torch' or 'kaiming', got "
                             f"{self.init_mode!r}")
        if self.wnorm:
            kernel = weight_normed_kernel(self, shape, kinit)
        else:
            kernel = self.param("kernel", kinit, shape, jnp.float32)
        dtype = self.dtype or jnp.result_type(*parts)
        extra = -self.features % self.pad_features
        if extra:
            kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, 0), (0, extra)))
        ph, pw = _pair(self.padding)
        y, start = 0, 0
        for part in parts:
            c = part.shape[-1]
            k = kernel if len(parts) == 1 else kernel[:, :, start:start + c]
            y = y + _conv(part.astype(dtype), k.astype(dtype), _pair(self.stride), (ph, pw),
                          _pair(self.dilation), self.stack_rows)
            start += c
        if extra:
            y = y[..., :self.features]
        if self.use_bias:
            bias = self.param("bias", torch_uniform_init(fan_in), (self.features,), jnp.float32)
            y = y + bias.astype(dtype)
        return y


def _conv(x: Array, k: Array, stride: tuple[int, int], pad: tuple[int, int],
          dilation: tuple[int, int], stack_rows: bool) -> Array:
    dn = ("NHWC", "HWIO", "NHWC")
    (sy, sx), (ph, pw), (dy, dx) = stride, pad, dilation
    kh, kw, cin, cout = k.shape
    if not stack_rows or kh == 1:
        return jax.lax.conv_general_dilated(x, k, (sy, sx), ((ph, ph), (pw, pw)),
                                            rhs_dilation=(dy, dx), dimension_numbers=dn)
    xp = jnp.pad(x, ((0, 0), (ph, ph), (0, 0), (0, 0)))
    ho = (xp.shape[1] - dy * (kh - 1) - 1) // sy + 1
    rows = jnp.concatenate([jax.lax.slice_in_dim(xp, t * dy, t * dy + sy * (ho - 1) + 1, sy, axis=1)
                            for t in range(kh)], axis=-1)  # channel t * cin + c
    k = jnp.moveaxis(k, 0, 1).reshape(1, kw, kh * cin, cout)
    return jax.lax.conv_general_dilated(rows, k, (1, sx), ((0, 0), (pw, pw)),
                                        rhs_dilation=(1, dx), dimension_numbers=dn)


def instance_norm(x: Array, eps: float = 1e-5) -> Array:
    """``nn.InstanceNorm2d`` without affine params: per sample and channel over H, W (float32)."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=(1, 2), keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


# Whether ``Conv2d(stack_rows=True)`` pays for a few-channel (RGB) 7x7 convolution with this jax's
# XLA:CPU: it does on jax 0.10, not on jax >= 0.12 (LiteFlowNet2's stem; figures in
# experiments/README.md, "LiteFlowNet2's RGB stem").
ROW_STACKING_HELPS = jax.__version_info__[:2] < (0, 12)

NORMS = ("batch", "instance", "group", "none")


def make_norm(norm_fn: str, name: str, channels: int, *, train: bool, freeze_bn: bool,
              num_groups: int | None = None) -> Callable[[Array], Array]:
    """A normalisation callable for the current compact scope, named like the PyTorch attribute.

    ``batch``: BatchNorm (params ``scale``/``bias``, batch_stats ``mean``/``var``; torch momentum
    0.1, eps 1e-5), batch statistics only when ``train and not freeze_bn``. ``instance``: no
    params. ``group``: GroupNorm(``num_groups``, default channels // 8). ``none``: identity.
    """
    if norm_fn == "batch":
        return nn.BatchNorm(use_running_average=not train or freeze_bn, momentum=0.9,
                            epsilon=1e-5, name=name)
    if norm_fn == "instance":
        return instance_norm
    if norm_fn == "group":
        return nn.GroupNorm(num_groups=num_groups or channels // 8, epsilon=1e-5,
                            use_fast_variance=False, name=name)
    if norm_fn == "none":
        return lambda x: x
    raise ValueError(f"norm_fn must be one of {NORMS}, got {norm_fn!r}")
