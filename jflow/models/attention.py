"""GMA global motion aggregation: attention over context features and aggregation of motion.

Names follow PyTorch (zacjiang/GMA ``core/gma.py``): ``to_qk``, ``pos_emb/rel_height``,
``pos_emb/rel_width`` (``nn.Embed`` tables, torch ``.weight`` -> ``embedding``), ``to_v``,
``gamma``, ``project``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflow.models.layers import Conv2d

Array = Any
ATTENTION_MODES = ("content", "position", "position_and_content")
_HI = jax.lax.Precision.HIGHEST


class RelPosEmb(nn.Module):
    """Relative position scores: ``q . rel_height[u - x] + q . rel_width[v - y]``."""

    max_pos_size: int
    dim_head: int

    @nn.compact
    def __call__(self, q: Array) -> Array:
        """``q`` (B, heads, H, W, D) -> scores (B, heads, H, W, H, W)."""
        n = 2 * self.max_pos_size - 1
        init = nn.initializers.normal(1.0)  # torch nn.Embedding: N(0, 1)
        rel_h = nn.Embed(n, self.dim_head, embedding_init=init, name="rel_height")
        rel_w = nn.Embed(n, self.dim_head, embedding_init=init, name="rel_width")
        h, w = q.shape[2], q.shape[3]
        if max(h, w) > self.max_pos_size:
            raise ValueError(f"RelPosEmb: feature map {h}x{w} exceeds max_pos_size "
                             f"{self.max_pos_size}")

        def rel(n_pos):
            i = jnp.arange(n_pos)
            return i[None, :] - i[:, None] + self.max_pos_size - 1  # [x, u] -> u - x + P - 1

        eh = rel_h(rel(h)).astype(jnp.float32)  # (H, H, D)
        ew = rel_w(rel(w)).astype(jnp.float32)  # (W, W, D)
        hs = jnp.einsum("bnxyd,xud->bnxyu", q, eh, precision=_HI)
        ws = jnp.einsum("bnxyd,yvd->bnxyv", q, ew, precision=_HI)
        return hs[..., :, None] + ws[..., None, :]


class Attention(nn.Module):
    """Self-attention weights over all H*W positions of ``fmap``: (B, heads, HW, HW), float32.

    ``mode``: ``content`` (published GMA), ``position`` or ``position_and_content``; ``pos_emb``
    creates the relative-position tables (present in GMA checkpoints even in content mode, absent
    in DEQ-GMA).
    """

    dim_head: int
    heads: int = 1
    max_pos_size: int = 160
    pos_emb: bool = True
    mode: str = "content"
    dtype: Any = None

    @nn.compact
    def __call__(self, fmap: Array) -> Array:
        if self.mode not in ATTENTION_MODES:
            raise ValueError(f"Attention.mode must be one of {ATTENTION_MODES}, got {self.mode!r}")
        if self.mode != "content" and not self.pos_emb:
            raise ValueError(f"Attention.mode={self.mode!r} needs pos_emb=True")
        b, h, w, _ = fmap.shape
        inner = self.heads * self.dim_head
        qk = Conv2d(2 * inner, 1, use_bias=False, dtype=self.dtype, name="to_qk")(fmap)
        qk = qk.astype(jnp.float32).reshape(b, h, w, 2, self.heads, self.dim_head)
        q = jnp.moveaxis(qk[:, :, :, 0], 3, 1) * self.dim_head ** -0.5  # (B, n, H, W, D)
        k = jnp.moveaxis(qk[:, :, :, 1], 3, 1)
        emb = RelPosEmb(self.max_pos_size, self.dim_head, name="pos_emb") if self.pos_emb else None
        if self.mode == "position":
            sim = emb(q)
        else:
            sim = jnp.einsum("bnxyd,bnuvd->bnxyuv", q, k, precision=_HI)
            if self.mode == "position_and_content":
                sim = sim + emb(q)
            elif emb is not None and self.is_initializing():
                emb(q[:, :, :1, :1])  # create the (unused) tables, as GMA checkpoints hold them
        sim = sim.reshape(b, self.heads, h * w, h * w)
        return jax.nn.softmax(sim, axis=-1)


class Aggregate(nn.Module):
    """``fmap + gamma * project(attn @ to_v(fmap))``; ``gamma`` starts at 0."""

    dim_head: int
    heads: int = 1
    wnorm: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, attn: Array, fmap: Array) -> Array:
        b, h, w, dim = fmap.shape
        inner = self.heads * self.dim_head
        v = Conv2d(inner, 1, use_bias=False, wnorm=self.wnorm, dtype=self.dtype, name="to_v")(fmap)
        v = v.astype(jnp.float32).reshape(b, h * w, self.heads, self.dim_head)
        out = jnp.einsum("bnij,bjnd->bind", attn, v, precision=_HI).reshape(b, h, w, inner)
        if dim != inner:
            out = Conv2d(dim, 1, use_bias=False, wnorm=self.wnorm, dtype=self.dtype,
                         name="project")(out)
        gamma = self.param("gamma", nn.initializers.zeros, (1,), jnp.float32)
        return fmap + (gamma * out).astype(fmap.dtype)
