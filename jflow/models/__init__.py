"""Networks (Flax linen): RAFT, RAFT-small, GMA, DEQ-RAFT, DEQ-GMA, DIP, LiteFlowNet2, SEA-RAFT and
DEQ SEA-RAFT. No optimiser, data or files.

``build_model(config.model, config.deq)`` returns a module called as
``model.apply(variables, image1, image2, *, train=False, iters=None, flow_init=None,
state_init=None)`` (LiteFlowNet2 ignores the last three: not iterative);
see each network's module (:mod:`jflow.models.raft`, :mod:`jflow.models.deq_raft`, ...) for its
outputs and :mod:`jflow.models.registry` for the PyTorch -> Flax parameter naming.
"""
from jflow.models.deq_raft import DEQ_SIZES, DEQRAFT
from jflow.models.raft import RAFT
from jflow.models.registry import (MODEL_NAMES, build_model, count_params, init_variables,
                                   input_padding, is_deq, model_from_config, random_variables,
                                   variable_shapes)

__all__ = ["DEQ_SIZES", "DEQRAFT", "MODEL_NAMES", "RAFT", "build_model", "count_params",
           "init_variables", "input_padding", "is_deq", "model_from_config", "random_variables", "variable_shapes"]
