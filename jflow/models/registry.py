"""Build a model from ``config.model`` (+ ``config.deq``); count and initialise its variables.

Parameter naming (what ``jflow.convert`` relies on): a PyTorch state-dict key maps to a Flax path
by these rules, applied in order.

1. Drop the ``module.`` prefix (DataParallel).
2. ``nn.Sequential`` indices join their parent with ``_``: ``fnet.layer1.0.conv1`` ->
   ``fnet/layer1_0/conv1``; ``update_block.mask.0`` -> ``update_block/mask_0``; ``mask.2`` ->
   ``mask_2``; ``downsample.0`` -> ``downsample_0``. Every other ``.`` becomes ``/``.
3. Leaf names: conv ``weight`` -> ``kernel`` (OIHW -> HWIO, ``transpose(2, 3, 1, 0)``); weight norm
   ``weight_v`` -> ``kernel_v`` (same transpose), ``weight_g`` (O, 1, 1, 1) -> ``kernel_g`` (O,);
   ``bias`` -> ``bias``; BatchNorm/GroupNorm ``weight`` -> ``scale``; GMA ``gamma`` -> ``gamma``;
   ``nn.Embedding`` ``weight`` -> ``embedding`` (GMA ``att/pos_emb/rel_height``, ``rel_width``).
   All of these live in the ``params`` collection.
4. BatchNorm ``running_mean`` / ``running_var`` -> ``batch_stats`` collection, leaves ``mean`` /
   ``var`` (same module path); ``num_batches_tracked`` is dropped.
5. Dropped keys: ``*.downsample.1.*`` in strided encoder blocks (the same module as ``norm3``,
   ``norm4`` in RAFT-small bottlenecks: check equality, map ``norm3``/``norm4``); GMA
   ``att.pos_emb.rel_ind`` (a constant buffer).

Module paths per model: RAFT/GMA ``fnet``, ``cnet``, ``update_block/{encoder,gru,flow_head,
mask_0,mask_2,aggregator}``, GMA ``att/{to_qk,pos_emb}``; DEQ-RAFT/GMA (deq-flow v2)
``fnet``, ``cnet``, ``update_block/{encoder,gru,flow_head,gma}``, top-level ``mask_0``/``mask_2``,
DEQ-GMA ``attn/to_qk``. deq-flow v1 checkpoints keep the mask in ``update_block.mask.*``: rename
to the top-level ``mask_*`` (and build with ``old_version=True`` for v1 H).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflow.deq import DEQConfig, from_config
from jflow.models.corr import CORR_KINDS
from jflow.models.deq_raft import DEQ_SIZES, DEQRAFT
from jflow.models.raft import RAFT

MODEL_NAMES = ("raft", "raft_small", "gma", "deq_raft", "deq_gma", "dip", "liteflownet2",
               "sea_raft", "deq_sea_raft")
SIZE_ALIASES = {"tiny": "T", "base": "B", "large": "L", "huge": "H", "gigantic": "G"}


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def build_model(model_cfg: Any, deq_cfg: Any = None) -> nn.Module:
    """A Flax module from ``config.model`` (ConfigDict or dict) and, for DEQ models, ``config.deq``.

    Keys: ``name`` (one of ``MODEL_NAMES``); ``size`` (DEQ-RAFT/GMA: T, B, L, H, G, D, aliases;
    (DEQ) SEA-RAFT: S, M, L); ``iters``, ``eval_iters`` (DEQ: None -> ``int(eval_factor *
    deq.f_max_steps)``, ``eval_factor`` 1.5 as deq-flow); ``corr`` (all_pairs | on_the_fly),
    ``corr_levels``, ``corr_radius``; ``mixed_precision``; ``freeze_bn``; ``wnorm`` (DEQ, default
    True); ``all_grad`` (DEQ); ``old_version`` (DEQ v1 flow head); ``remat_encoder``,
    ``remat_states``, ``corr_feature_grad`` (DEQ training memory, default False); ``gma_mode``
    (GMA); ``inference_loop`` (RAFT / GMA: auto | loop | unrolled).
    """
    name = _get(model_cfg, "name")
    if name not in MODEL_NAMES:
        raise ValueError(f"config.model.name must be one of {MODEL_NAMES}, got {name!r}")
    corr = _get(model_cfg, "corr", "all_pairs")
    if corr not in CORR_KINDS:
        raise ValueError(f"config.model.corr must be one of {CORR_KINDS}, got {corr!r}")
    common = dict(corr=corr, corr_levels=int(_get(model_cfg, "corr_levels", 4)),
                  mixed_precision=bool(_get(model_cfg, "mixed_precision", False)),
                  freeze_bn=bool(_get(model_cfg, "freeze_bn", False)))
    radius = _get(model_cfg, "corr_radius")
    if name == "liteflownet2":
        from jflow.models.liteflownet2 import LiteFlowNet2
        return LiteFlowNet2(variant=str(_get(model_cfg, "variant", "sintel")))
    if name in ("sea_raft", "deq_sea_raft"):
        from jflow.models.sea_raft import SEA_RAFT_SIZES, SEARAFT
        size = str(_get(model_cfg, "size", "S")).upper()
        if size not in SEA_RAFT_SIZES:
            raise ValueError(f"config.model.size must be one of {sorted(SEA_RAFT_SIZES)} for "
                             f"{name}, got {size!r}")
        if common["mixed_precision"]:
            raise ValueError("config.model.mixed_precision: SEA-RAFT runs in float32 (the "
                             "official code has no mixed precision)")
        eval_iters = _get(model_cfg, "eval_iters")
        if name == "deq_sea_raft":
            from jflow.models.deq_sea_raft import DEQSEARAFT
            return DEQSEARAFT(size=size, deq=_deq(deq_cfg),
                              eval_iters=None if eval_iters is None else int(eval_iters),
                              all_grad=bool(_get(model_cfg, "all_grad", False)), corr=corr,
                              corr_levels=common["corr_levels"],
                              corr_radius=int(4 if radius is None else radius),
                              freeze_bn=common["freeze_bn"],
                              scale=int(_get(model_cfg, "scale", 0)))
        return SEARAFT(size=size, iters=int(_get(model_cfg, "iters", 4)),
                       eval_iters=None if eval_iters is None else int(eval_iters),
                       corr=corr, corr_levels=common["corr_levels"],
                       corr_radius=int(4 if radius is None else radius),
                       freeze_bn=common["freeze_bn"], scale=int(_get(model_cfg, "scale", 0)))
    if name == "dip":
        from jflow.models.dip import DIP
        return DIP(iters=int(_get(model_cfg, "iters", 6)),
                   eval_iters=int(_get(model_cfg, "eval_iters", 20)),
                   warm_iters=int(_get(model_cfg, "warm_iters", 12)),
                   max_offset=int(_get(model_cfg, "max_offset", 256)),
                   noise=str(_get(model_cfg, "noise", "torch")),
                   channel_order=str(_get(model_cfg, "channel_order", "bgr")),
                   mixed_precision=common["mixed_precision"])
    if name in ("raft", "raft_small", "gma"):
        return RAFT(small=name == "raft_small", gma=name == "gma",
                    gma_mode=_get(model_cfg, "gma_mode", "content"),
                    iters=int(_get(model_cfg, "iters", 12)),
                    eval_iters=int(_get(model_cfg, "eval_iters", 24)),
                    corr_radius=None if radius is None else int(radius),
                    inference_loop=str(_get(model_cfg, "inference_loop", "auto")), **common)
    size = str(_get(model_cfg, "size", "B"))
    size = SIZE_ALIASES.get(size.lower(), size)
    if size not in DEQ_SIZES:
        raise ValueError(f"config.model.size must be one of {sorted(DEQ_SIZES)} (or "
                         f"{sorted(SIZE_ALIASES)}), got {size!r}")
    deq = _deq(deq_cfg)
    eval_iters = _get(model_cfg, "eval_iters")
    if eval_iters is None:
        eval_iters = int(float(_get(model_cfg, "eval_factor", 1.5)) * deq.f_max_steps)
    return DEQRAFT(size=size, gma=name == "deq_gma",
                   old_version=bool(_get(model_cfg, "old_version", False)), deq=deq,
                   eval_iters=int(eval_iters), all_grad=bool(_get(model_cfg, "all_grad", False)),
                   corr_radius=int(4 if radius is None else radius),
                   wnorm=bool(_get(model_cfg, "wnorm", True)),
                   remat_encoder=bool(_get(model_cfg, "remat_encoder", False)),
                   remat_states=bool(_get(model_cfg, "remat_states", False)),
                   corr_feature_grad=bool(_get(model_cfg, "corr_feature_grad", False)), **common)


def _deq(deq_cfg: Any) -> DEQConfig:
    return deq_cfg if isinstance(deq_cfg, DEQConfig) else from_config(deq_cfg)


DEQ_MODELS = ("deq_raft", "deq_gma", "deq_sea_raft")


def is_deq(config: Any) -> bool:
    """True for deep-equilibrium models; ``config`` is a full config, its ``model`` section or a
    model name."""
    if isinstance(config, str):
        return config in DEQ_MODELS
    return str(_get(getattr(config, "model", config), "name")) in DEQ_MODELS


def model_from_config(config: Any) -> nn.Module:
    """The network of a full config: ``build_model(config.model, config.deq)`` (the DEQ section
    only for DEQ models)."""
    return build_model(config.model, config.deq if is_deq(config) else None)


def input_padding(model: nn.Module) -> tuple[int, str]:
    """``(multiple, fill)``: how callers pad images for ``model`` (``InputPadder(multiple=...,
    fill=...)``), from the module class's ``pad_multiple`` / ``pad_fill`` (default 8, replicate).
    A model that resizes internally (any input size) says ``pad_multiple = 1``."""
    cls = type(model)
    return int(getattr(cls, "pad_multiple", 8)), str(getattr(cls, "pad_fill", "replicate"))


def count_params(variables: Any) -> int:
    """Number of scalars in ``variables["params"]`` (arrays or ShapeDtypeStructs)."""
    params = variables.get("params", variables) if hasattr(variables, "get") else variables
    return int(sum(np.prod(leaf.shape, dtype=np.int64)
                   for leaf in jax.tree_util.tree_leaves(params)))


def _dummy(image_hw: tuple[int, int], batch: int) -> jax.ShapeDtypeStruct:
    h, w = image_hw
    return jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32)


def variable_shapes(model: nn.Module, image_hw: tuple[int, int] = (64, 64)) -> Any:
    """The variables' ShapeDtypeStructs, without computing anything (for counts and restores)."""
    img = _dummy(image_hw, 1)
    return jax.eval_shape(lambda a, b: model.init(jax.random.PRNGKey(0), a, b, iters=1), img, img)


def init_variables(model: nn.Module, rng: jax.Array | int = 0,
                   image_hw: tuple[int, int] = (64, 64)) -> dict:
    """Initialised ``{"params", "batch_stats"?}`` (official-style init), jit-compiled.

    Parameter shapes do not depend on ``image_hw`` (H, W >= 64 keeps every pyramid level).
    Compiling the initialisers is slow on CPU (tens of seconds); cache the result.
    """
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    img = _dummy(image_hw, 1)
    init = jax.jit(lambda key: model.lazy_init(key, img, img, iters=1))
    return dict(init(rng))


def random_variables(model: nn.Module, seed: int = 0, image_hw: tuple[int, int] = (64, 64),
                     scale: float = 1.0) -> dict:
    """Variables with the right structure filled on the host, without compiling initialisers.

    For tests, benchmarks and memory measurements (initialising for real compiles for tens of
    seconds on CPU): kernels, biases and embeddings ~ U(+-scale/sqrt(fan_in)), norm scales and
    running variances 1, running means 0, weight-norm gains ``||kernel_v||``, GMA ``gamma`` 0.1
    (so the aggregation is exercised). Not the training initialisation: use ``init_variables``.
    """
    rng = np.random.default_rng(seed)
    shapes = variable_shapes(model, image_hw)

    def fill(path, leaf):
        name = path[-1].key
        shape, dtype = leaf.shape, leaf.dtype
        if name in ("scale", "var"):
            return jnp.ones(shape, dtype)
        if name == "mean":
            return jnp.zeros(shape, dtype)
        if name == "gamma":
            return jnp.full(shape, 0.1, dtype)
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 64
        return jnp.asarray(rng.uniform(-scale, scale, shape) / np.sqrt(fan_in), dtype)

    variables = jax.tree_util.tree_map_with_path(fill, shapes)

    def gains(tree):
        if not isinstance(tree, dict):
            return tree
        out = {k: gains(v) for k, v in tree.items()}
        if "kernel_v" in out and "kernel_g" in out:
            v = out["kernel_v"]
            out["kernel_g"] = jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 1, 2))).astype(v.dtype)
        return out

    variables = gains(dict(variables))
    fix = getattr(type(model), "constant_variables", None)  # frozen constants (LiteFlowNet2)
    return fix(variables) if fix else variables
