"""The update operator shared by RAFT, GMA, DEQ-RAFT and DEQ-GMA.

``UpdateBlock(net, inp, corr, flow, attn) -> (net', delta_flow, mask)``: motion encoder, optional
GMA aggregation, ConvGRU cell(s) (layouts in ``GRU_LAYOUTS``), flow head, and (RAFT/GMA only) the
mask head. Submodules are named like PyTorch: ``encoder/convc1``..., ``gru/convz1``... (a second
cell: ``gru2/...``), ``flow_head/conv1``, ``mask_0``/``mask_2`` (torch ``mask.0``/``mask.2``),
``aggregator`` (GMA) or ``gma`` (DEQ-GMA).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jflow.models.attention import Aggregate
from jflow.models.layers import Conv2d

Array = Any


class MotionEncoder(nn.Module):
    """RAFT's BasicMotionEncoder with DEQ-Flow's size knobs; ``small`` = RAFT-small's variant.

    ``dims = (convc1, convc2, convf1, convf2, cat_dim)``; output ``cat_dim`` channels = ``conv``
    output (``cat_dim - 2``) followed by the flow.
    """

    dims: Sequence[int] = (256, 192, 128, 64, 128)
    small: bool = False
    wnorm: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, flow: Array, corr: Array) -> Array:
        c1, c2, f1, f2, cat = self.dims
        conv = dict(wnorm=self.wnorm, dtype=self.dtype)
        cor = nn.relu(Conv2d(c1, 1, 1, 0, name="convc1", **conv)(corr))
        if not self.small:
            cor = nn.relu(Conv2d(c2, 3, 1, 1, name="convc2", **conv)(cor))
        flo = nn.relu(Conv2d(f1, 7, 1, 3, name="convf1", **conv)(flow))
        flo = nn.relu(Conv2d(f2, 3, 1, 1, name="convf2", **conv)(flo))
        out = nn.relu(Conv2d(cat - 2, 3, 1, 1, name="conv", pad_features=16, **conv)(
            jnp.concatenate([cor, flo.astype(cor.dtype)], axis=-1)))
        return jnp.concatenate([out, flow.astype(out.dtype)], axis=-1)


def _gru_step(h: Array, x: Array | tuple, convs: Sequence[Callable[[Array], Array]]) -> Array:
    """One ConvGRU step; ``x`` an array, or a tuple of parts (its channel concatenation) that the
    convs take part by part (``Conv2d``)."""
    convz, convr, convq = convs
    if isinstance(x, tuple):
        def cat(a):
            return (a.astype(x[0].dtype),) + x
    else:
        def cat(a):
            return jnp.concatenate([a.astype(x.dtype), x], axis=-1)
    hx = cat(h)
    z = nn.sigmoid(convz(hx))
    r = nn.sigmoid(convr(hx))
    q = jnp.tanh(convq(cat(r * h)))
    return (1 - z) * h + z * q


def _summed(convs: Sequence[nn.Module]) -> Callable[[Array], Array]:
    """Parallel convs over one input, outputs added (``0 + y`` is exact, dtype-preserving)."""
    return lambda t: sum(conv(t) for conv in convs)


# GRU layouts: a sequence of passes, each one GRU step. A pass's gate projections (convz, convr,
# convq) are each the SUM of parallel convs over the same input, one per branch
# ``(name suffix, kernel, padding, dilation)``; conv names are ``convz<suffix>`` etc.
GRU_LAYOUTS = {
    # RAFT-small's 3x3 ConvGRU: convz, convr, convq.
    "conv": ((("", 3, 1, 1),),),
    # RAFT / DEQ-Flow SepConvGRU: a 1x5 pass (convz1/convr1/convq1), then a 5x1 pass (*2).
    "sep": ((("1", (1, 5), (0, 2), 1),), (("2", (5, 1), (2, 0), 1),)),
    # DEQ-Flow size D (jflow's interpretation of the paper's one-line description; no official
    # code): ONE pass whose projections are 1x5 (*1) + 5x1 (*2) + 3x3 dilation 4 (*3), each
    # with its own bias.
    "dilated": ((("1", (1, 5), (0, 2), 1), ("2", (5, 1), (2, 0), 1), ("3", 3, 4, 4)),),
}


class ConvGRU(nn.Module):
    """ConvGRU with a layout from ``GRU_LAYOUTS`` (``conv``, ``sep`` or ``dilated``)."""

    hidden_dim: int
    layout: str = "sep"
    wnorm: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, h: Array, x: Array) -> Array:
        if self.layout not in GRU_LAYOUTS:
            raise ValueError(f"ConvGRU.layout must be one of {sorted(GRU_LAYOUTS)}, got "
                             f"{self.layout!r}")
        for branches in GRU_LAYOUTS[self.layout]:
            gates = [_summed([Conv2d(self.hidden_dim, k, 1, p, dilation=d, wnorm=self.wnorm,
                                     dtype=self.dtype, name=f"{n}{suffix}")
                              for suffix, k, p, d in branches])
                     for n in ("convz", "convr", "convq")]
            h = _gru_step(h, x, gates)
        return h


class FlowHead(nn.Module):
    """3x3 conv -> ReLU -> 3x3 conv to 2 channels (``conv1``, ``conv2``)."""

    hidden_dim: int = 256
    wnorm: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = dict(wnorm=self.wnorm, dtype=self.dtype)
        y = nn.relu(Conv2d(self.hidden_dim, 3, 1, 1, name="conv1", **conv)(x))
        return Conv2d(2, 3, 1, 1, name="conv2", **conv)(y)


def mask_head(*, dtype: Any = None, rate: int = 8) -> Callable[[Array], Array]:
    """``net -> 0.25 * mask(net)``: 3x3 -> 256, ReLU, 1x1 -> 9*rate^2, float32.

    Call inside a compact method: creates ``mask_0`` and ``mask_2`` in the calling module (once;
    the returned function can be applied to several states).
    """
    conv0 = Conv2d(256, 3, 1, 1, dtype=dtype, name="mask_0")
    conv2 = Conv2d(9 * rate * rate, 1, 1, 0, dtype=dtype, name="mask_2")
    return lambda net: 0.25 * conv2(nn.relu(conv0(net))).astype(jnp.float32)


class UpdateBlock(nn.Module):
    """One refinement step; see the module docstring.

    Attributes:
      hidden_dim: GRU state channels.
      motion_dims: (convc1, convc2, convf1, convf2, cat_dim) of the motion encoder.
      small: RAFT-small variant (no convc2, 3x3 ConvGRU).
      gru_layout: a ``GRU_LAYOUTS`` key; None: ``conv`` if ``small`` else ``sep``.
      num_grus: GRU cells applied in sequence (``gru``, ``gru2``, ...), each with its own weights,
        each taking the previous cell's state and the same input (2 for DEQ-Flow size D).
      flow_head_dim: FlowHead hidden channels.
      gma: aggregate motion features with the attention (``attn`` argument).
      gma_name: ``aggregator`` (GMA) or ``gma`` (DEQ-GMA).
      mask: include the mask head (RAFT/GMA; DEQ models apply it outside).
      wnorm: weight-normalise every conv (DEQ ``--wnorm``).
      split_context: the GRU convolves the context ``inp`` apart from the rest of its input
        (same result up to rounding): in an unrolled loop (RAFT) XLA computes that part once.
    """

    hidden_dim: int = 128
    motion_dims: Sequence[int] = (256, 192, 128, 64, 128)
    small: bool = False
    gru_layout: str | None = None
    num_grus: int = 1
    flow_head_dim: int = 256
    gma: bool = False
    gma_name: str = "aggregator"
    mask: bool = False
    wnorm: bool = False
    split_context: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, net: Array, inp: Array, corr: Array, flow: Array,
                 attn: Array | None = None) -> tuple[Array, Array, Array | None]:
        opts = dict(wnorm=self.wnorm, dtype=self.dtype)
        motion = MotionEncoder(tuple(self.motion_dims), self.small, name="encoder", **opts)(
            flow, corr)
        inp = inp.astype(motion.dtype)
        if self.gma:
            if attn is None:
                raise ValueError("UpdateBlock(gma=True) needs the attention weights `attn`")
            cat = self.motion_dims[-1]
            glob = Aggregate(cat, 1, name=self.gma_name, **opts)(attn, motion)
            x = (inp, motion, glob.astype(motion.dtype))
        else:
            x = (inp, motion)
        if not self.split_context:
            x = jnp.concatenate(x, axis=-1)
        layout = self.gru_layout or ("conv" if self.small else "sep")
        for i in range(self.num_grus):
            net = ConvGRU(self.hidden_dim, layout, name="gru" if i == 0 else f"gru{i + 1}",
                          **opts)(net, x)
        delta = FlowHead(self.flow_head_dim, name="flow_head", **opts)(net)
        mask = mask_head(dtype=self.dtype)(net) if self.mask else None
        return net, delta.astype(jnp.float32), mask
