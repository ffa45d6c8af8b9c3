"""DEQ SEA-RAFT: SEA-RAFT's update operator solved for its fixed point (jflow's model; no paper).

SEA-RAFT (:mod:`jflow.models.sea_raft`) iterates ``net <- update(net, ctx, corr(grid + flow),
flow)``, ``flow <- flow + flow_head(net)`` a fixed number of times. Here that map is the DEQ
operator ``f(params, z, x)`` on ``z = {"h": net (B, h, w, 128), "flow": (B, h, w, 2)}`` (1/8
resolution), solved by :func:`jflow.deq.deq_fixed_point` with every solver, gradient and
correction option of ``deq`` (a :class:`jflow.deq.DEQConfig`, the Jacobian penalty included),
as DEQ-RAFT does. ``flow`` is
detached inside ``f`` (SEA-RAFT detaches it every iteration) unless ``all_grad``. The solve
starts from SEA-RAFT's own start: ``h0`` = the hidden half of ``init_conv``, ``flow0`` = the
regressed initial flow.

Parameters are SEA-RAFT's, under the same names (``cnet``, ``fnet``, ``init_conv``, heads,
``update_block``), so SEA-RAFT weights (``jflow.convert`` output, a training run) load as they
are. Outputs as SEA-RAFT (``flow``, ``info``, ``uncertainty`` from the fixed point's heads,
``flow_low``), plus ``state = {"h", "flow"}`` (the fixed point; ``state_init`` takes it, and
``flow_init`` is added to its flow) and ``stats`` (solver statistics). When ``train``:
``predictions`` / ``info_predictions`` = the regressed initial flow, then the ``n_states``
correction states (for :func:`jflow.losses.mixture_laplace_loss` with the DEQ correction
weights). Evaluation runs ``iters``, else ``eval_iters``, else ``deq.f_max_steps`` solver steps.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflow import geometry
from jflow.deq import DEQConfig, deq_fixed_point
from jflow.models.corr import lookup
from jflow.models.deq_raft import jac_probe_key
from jflow.models.raft import check_low_res, check_state
from jflow.models.sea_raft import (DIM, Heads, SEARAFTFields, UpdateBlock, check_inputs,
                                   context, correlation, finish, flow_head, prepare_pair,
                                   upsample_outputs)

Array = Any
NAME = "DEQ-SEA-RAFT"


class DEQSEARAFT(SEARAFTFields):
    """DEQ SEA-RAFT; see the module docstring and :class:`SEARAFTFields`.

    Attributes:
      deq: solver, gradient and correction options.
      eval_iters: solver steps at evaluation (None: ``deq.f_max_steps``).
      all_grad: keep the gradient through ``flow`` inside ``f``.
    """

    deq: DEQConfig = DEQConfig()
    all_grad: bool = False

    def _step(self, params: Any, z: dict, x: dict, detach: bool = True) -> dict:
        """The pure update operator handed to ``deq_fixed_point`` (``detach=False``: the
        gradient through ``flow`` kept, as the Jacobian penalty needs)."""
        flow = z["flow"] if self.all_grad or not detach else jax.lax.stop_gradient(z["flow"])
        corr = lookup(x["corr"], x["grid"] + flow, self.corr_radius)
        h = UpdateBlock(self.num_blocks, parent=None).apply(
            {"params": params["update_block"]}, z["h"], x["ctx"], corr, flow)
        delta = flow_head(params, h)
        return {"h": h.astype(z["h"].dtype), "flow": (flow + delta).astype(z["flow"].dtype)}

    @nn.compact
    def __call__(self, image1: Array, image2: Array, *, train: bool = False,
                 iters: int | None = None, flow_init: Array | None = None,
                 state_init: dict | None = None) -> dict:
        blocks, _ = check_inputs(image1, image2, self.size, NAME)
        scale = 0 if train else int(self.scale)
        im1, im2, padder = prepare_pair(image1, image2, scale)
        b, h, w = im1.shape[0], im1.shape[1] // 8, im1.shape[2] // 8
        net, ctx = context(blocks, self.freeze_bn, im1, im2, train)
        heads = Heads()
        flow0, info0, mask0 = heads(net)

        corr_state = correlation(blocks, self.freeze_bn, im1, im2, train, self.corr,
                                 self.corr_levels)
        grid = geometry.coords_grid(b, h, w)
        x = {"ctx": ctx, "corr": corr_state, "grid": grid}
        z0 = {"h": net, "flow": flow0}
        if state_init is not None:
            check_state(state_init, {"h": (b, h, w, DIM), "flow": (b, h, w, 2)}, NAME)
            z0 = {"h": jnp.asarray(state_init["h"], jnp.float32),
                  "flow": jnp.asarray(state_init["flow"], jnp.float32)}
        check_low_res("flow_init", flow_init, (b, h, w, 2), NAME)
        if flow_init is not None:
            z0["flow"] = z0["flow"] + flow_init

        update = UpdateBlock(self.num_blocks, name="update_block")
        if self.is_initializing():
            update(net, ctx, lookup(corr_state, grid, self.corr_radius), flow0)
        params = {k: self.variables["params"][k]
                  for k in ("update_block", "flow_head_0", "flow_head_2")}
        steps = iters if iters is not None else (None if train else self.eval_iters)
        key = jac_probe_key(self, self.deq, train)
        states, stats = deq_fixed_point(self._step, params, x, z0, self.deq, train=train,
                                        max_steps=steps, key=key,
                                        jac_f=partial(self._step, detach=False))

        def decode(z):
            _, info, mask = heads(z["h"])
            return upsample_outputs(padder, z["flow"], info, mask)

        decoded = [decode(z) for z in states]
        out = finish(*decoded[-1], image1.shape[1:3], scale, self.var_min, self.var_max)
        out.update(flow_low=states[-1]["flow"], stats=stats,
                   state={"h": states[-1]["h"], "flow": states[-1]["flow"]})
        if train:
            decoded.insert(0, upsample_outputs(padder, flow0, info0, mask0))
            out["predictions"] = jnp.stack([f for f, _ in decoded])
            out["info_predictions"] = jnp.stack([i for _, i in decoded])
        return out
