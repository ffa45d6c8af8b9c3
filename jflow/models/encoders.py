"""RAFT's feature/context encoders (stride 8): the basic (residual) and small (bottleneck) ones.

Submodule names follow the PyTorch attributes: ``conv1``, ``norm1``, ``layer{1,2,3}_{0,1}``
(``nn.Sequential`` index joined with ``_``), ``conv2``; inside blocks ``conv*``, ``norm*`` and
``downsample_0`` (the strided 1x1 shortcut conv). PyTorch's ``downsample.1`` is the same module as
``norm3`` (``norm4`` in bottleneck blocks) and has no separate Flax entry.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jflow.deq.ordered import Chain
from jflow.models.layers import Conv2d, make_norm

Array = Any


class ResidualBlock(nn.Module):
    """``relu(shortcut(x) + relu(n2(conv2(relu(n1(conv1(x)))))))`` with 3x3 convs."""

    planes: int
    norm_fn: str
    stride: int = 1
    freeze_bn: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        def norm(name):
            return make_norm(self.norm_fn, name, self.planes, train=train, freeze_bn=self.freeze_bn)

        conv = dict(init_mode="kaiming", dtype=self.dtype)
        y = Conv2d(self.planes, 3, self.stride, 1, name="conv1", **conv)(x)
        y = nn.relu(norm("norm1")(y))
        y = Conv2d(self.planes, 3, 1, 1, name="conv2", **conv)(y)
        y = nn.relu(norm("norm2")(y))
        if self.stride != 1:
            x = Conv2d(self.planes, 1, self.stride, 0, name="downsample_0", **conv)(x)
            x = norm("norm3")(x)
        return nn.relu(x + y)


class BottleneckBlock(nn.Module):
    """RAFT-small's block: 1x1 (planes/4), 3x3 (stride), 1x1 (planes), each normed + ReLU."""

    planes: int
    norm_fn: str
    stride: int = 1
    freeze_bn: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        def norm(name, ch):
            return make_norm(self.norm_fn, name, ch, train=train, freeze_bn=self.freeze_bn,
                             num_groups=self.planes // 8)

        conv = dict(init_mode="kaiming", dtype=self.dtype)
        q = self.planes // 4
        y = nn.relu(norm("norm1", q)(Conv2d(q, 1, 1, 0, name="conv1", **conv)(x)))
        y = nn.relu(norm("norm2", q)(Conv2d(q, 3, self.stride, 1, name="conv2", **conv)(y)))
        y = nn.relu(norm("norm3", self.planes)(
            Conv2d(self.planes, 1, 1, 0, name="conv3", **conv)(y)))
        if self.stride != 1:
            x = Conv2d(self.planes, 1, self.stride, 0, name="downsample_0", **conv)(x)
            x = norm("norm4", self.planes)(x)
        return nn.relu(x + y)


class Encoder(nn.Module):
    """RAFT ``BasicEncoder`` (widths 64/96/128) or ``SmallEncoder`` (``small``: 32/64/96).

    Input (B, H, W, 3) normalised to [-1, 1]; output (B, H/8, W/8, ``output_dim``).
    ``remat``: the stem and each residual block are recomputed in the backward pass from their
    input (only those inputs are kept); in training they are ``jflow.deq.ordered.Chain``
    segments (one segment's recomputation live at a time), applied as pure functions whose
    updated batch statistics are written back. See :func:`remat_encoder` to recompute the
    whole encoder as well.
    """

    output_dim: int
    norm_fn: str = "batch"
    small: bool = False
    freeze_bn: bool = False
    dtype: Any = None
    remat: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        widths = (32, 64, 96) if self.small else (64, 96, 128)
        block = BottleneckBlock if self.small else ResidualBlock
        if self.remat and train and not self.is_initializing():
            chain = Chain()  # segments applied purely, in order
            stem = Stem(widths[0], self.norm_fn, self.freeze_bn, self.dtype, parent=None)
            x = chained(self, chain, stem, STEM_NAMES, x, train=train)
        else:
            chain = None
            if self.remat:
                block = nn.remat(block, static_argnums=(2,))  # (self, x, train): train is static
            x = stem_layers(x, widths[0], self.norm_fn, self.freeze_bn, self.dtype, train)
        for i, (width, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            for j, s in enumerate((stride, 1)):
                name = f"layer{i}_{j}"
                if chain is None:
                    x = block(width, self.norm_fn, s, self.freeze_bn, self.dtype, name=name)(
                        x, train)
                else:
                    pure = block(width, self.norm_fn, s, self.freeze_bn, self.dtype, parent=None)
                    x = chained(self, chain, pure, name, x, train=train)
        return Conv2d(self.output_dim, 1, 1, 0, init_mode="kaiming", dtype=self.dtype,
                      name="conv2")(x)


STEM_NAMES = ("conv1", "norm1")


def stem_layers(x: Array, width: int, norm_fn: str, freeze_bn: bool, dtype: Any,
                train: bool) -> Array:
    """The encoders' stem, ``relu(norm1(conv1(x)))`` (7x7, stride 2), as submodules of the
    module whose compact method calls it."""
    x = Conv2d(width, 7, 2, 3, init_mode="kaiming", dtype=dtype, name="conv1")(x)
    x = make_norm(norm_fn, "norm1", width, train=train, freeze_bn=freeze_bn, num_groups=8)(x)
    return nn.relu(x)


class Stem(nn.Module):
    """:func:`stem_layers` as a module of its own (``conv1``, ``norm1`` at its root)."""

    width: int
    norm_fn: str
    freeze_bn: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        return stem_layers(x, self.width, self.norm_fn, self.freeze_bn, self.dtype, train)


def chained(parent: nn.Module, chain: Chain, module: nn.Module, names: str | tuple[str, ...],
            *args: Array, **kwargs: Any) -> Any:
    """``module`` (built with ``parent=None``) applied as a segment of ``chain`` with the
    variables of ``parent``'s submodule ``names`` (a name: the submodule's variables are the
    module's; a tuple: the module's root holds those submodules). In training with batch
    statistics to update (``parent``'s ``batch_stats`` mutable), the module's updated
    statistics are written back to ``parent``'s."""
    def select(tree):
        if isinstance(names, str):
            return tree.get(names)
        return {n: tree[n] for n in names if n in tree} or None

    variables = {col: v for col, tree in parent.variables.items()
                 if (v := select(tree)) is not None}
    if not variables.get("batch_stats") or not parent.is_mutable_collection("batch_stats"):
        return chain(lambda *a: module.apply(variables, *a, **kwargs), *args)
    out, new = chain(lambda *a: module.apply(variables, *a, mutable=["batch_stats"], **kwargs),
                     *args)
    stats = new["batch_stats"]
    for name, value in ({names: stats} if isinstance(names, str) else stats).items():
        parent.put_variable("batch_stats", name, value)
    return out


def remat_encoder(enabled: bool) -> type[Encoder]:
    """``Encoder`` (``enabled=False``) or an Encoder whose training backward pass recomputes it
    from the image: the forward keeps only the output, the recomputation keeps block inputs
    (``remat=True`` inside) and each block is recomputed once more for its own backward.
    Parameter and batch-statistics paths are unchanged. Costs about two extra encoder forwards.
    """
    return nn.remat(Encoder, static_argnums=(2,)) if enabled else Encoder


def normalize_image(image: Array) -> Array:
    """RGB 0..255 -> ``2 * (x / 255) - 1`` in float32, as every RAFT-family model does first."""
    return 2.0 * (jnp.asarray(image, jnp.float32) / 255.0) - 1.0
