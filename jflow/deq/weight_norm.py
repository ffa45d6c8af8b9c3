"""Weight normalisation for convolutions (Salimans & Kingma, 2016), as DEQ update blocks use it.

A weight-normed kernel is ``w = g * v / ||v||`` with the norm taken per output channel over every
other axis (PyTorch's ``weight_norm(dim=0)``). Flax kernels are HWIO, so the output channel is the
last axis. Converted checkpoints can either keep ``g`` and ``v`` (exact) or fold them into a plain
kernel with :func:`fold_weight_norm`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = Any


def weight_norm_kernel(v: Array, g: Array, eps: float = 0.0) -> Array:
    """Returns ``g * v / ||v||`` for an HWIO (or any ``(..., O)``) kernel ``v`` and gains ``g`` (O,)."""
    axes = tuple(range(v.ndim - 1))
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True) + eps)
    return v * (g / norm)


def fold_weight_norm(v: np.ndarray, g: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`weight_norm_kernel`, for checkpoint conversion (float64 inside)."""
    v64 = np.asarray(v, np.float64)
    axes = tuple(range(v64.ndim - 1))
    norm = np.sqrt(np.sum(v64 * v64, axis=axes, keepdims=True))
    return (v64 * (np.asarray(g, np.float64).reshape(-1) / norm)).astype(np.asarray(v).dtype)


def weight_normed_kernel(module: nn.Module, shape: Sequence[int], kernel_init: Callable,
                         param_dtype: Any = jnp.float32) -> Array:
    """Creates ``kernel_v`` (``shape``, HWIO) and ``kernel_g`` (``shape[-1]``,) in ``module`` (inside
    its ``nn.compact`` call) and returns the kernel ``g v / ||v||``. ``kernel_g`` starts at
    ``||kernel_v||``, so the initial kernel is ``kernel_v``, as PyTorch's ``weight_norm``."""
    v = module.param("kernel_v", kernel_init, tuple(shape), param_dtype)
    g = module.param(
        "kernel_g",
        lambda _, s, d: jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(v.ndim - 1)))).astype(d),
        (shape[-1],), param_dtype)
    return weight_norm_kernel(v, g)


class WeightNormConv(nn.Module):
    """``nn.Conv`` with a weight-normed kernel; params ``kernel_v`` (HWIO), ``kernel_g`` (O,), ``bias``.

    ``kernel_g`` is initialised to ``||kernel_v||`` so that at initialisation the effective kernel
    equals ``kernel_v``, as PyTorch's ``weight_norm`` does.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: Any = "SAME"
    kernel_dilation: Sequence[int] = (1, 1)
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        in_features = x.shape[-1]
        shape = (*self.kernel_size, in_features, self.features)
        kernel = weight_normed_kernel(self, shape, self.kernel_init, self.param_dtype)
        dtype = self.dtype or x.dtype
        padding = self.padding
        if not isinstance(padding, str):
            padding = [tuple(p) for p in padding]
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            window_strides=tuple(self.strides),
            padding=padding,
            rhs_dilation=tuple(self.kernel_dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(dtype)
        return y
