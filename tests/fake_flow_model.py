"""A tiny flax module obeying the jflow model call contract (for trainer tests only).

Two 3x3 convs at 1/8 resolution refine a flow for ``iters`` steps; BatchNorm gives it batch
statistics so the trainer's ``batch_stats`` path is exercised.
"""
import flax.linen as nn
import jax.numpy as jnp

from jflow import geometry


class TinyFlowModel(nn.Module):
    iters: int = 3
    eval_iters: int = 3
    freeze_bn: bool = False

    @nn.compact
    def __call__(self, image1, image2, *, train=False, iters=None, flow_init=None,
                 state_init=None):
        n = iters if iters is not None else (self.iters if train else self.eval_iters)
        x = jnp.concatenate([image1, image2], axis=-1) / 255.0 - 0.5
        x = nn.Conv(8, (8, 8), strides=(8, 8), padding="VALID")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train or self.freeze_bn, momentum=0.9)(x))
        b, h, w = x.shape[:3]
        flow = jnp.zeros((b, h, w, 2)) if flow_init is None else flow_init
        if state_init is not None:
            flow = flow + state_init
        step = nn.Conv(2, (3, 3))
        preds = []
        for _ in range(n):
            flow = flow + step(jnp.concatenate([x, flow], axis=-1))
            preds.append(geometry.upflow(flow, 8))
        out = {"flow": preds[-1], "flow_low": flow, "state": flow, "stats": {}}
        if train:
            out["predictions"] = jnp.stack(preds)
        return out
