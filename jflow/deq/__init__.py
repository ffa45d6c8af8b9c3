"""jflow.deq: deep-equilibrium fixed points in JAX (solvers, gradients, correction, regularisers).

Knows nothing about optical flow and imports nothing else from jflow. Entry points:
``DEQConfig``, ``from_config``, ``deq_fixed_point``; lower level ``solve``, ``get_solver``,
``register_solver``, ``phantom_steps``, ``implicit_step``, ``jacobian_penalty``,
``spectral_radius``; see each module's docstring.
"""
from jflow.deq.adjoint import BackwardSolve, implicit_step, phantom_steps
from jflow.deq.api import deq_fixed_point
from jflow.deq.config import DEQConfig, from_config, parse_solver_spec
from jflow.deq.correction import correction_weights, indexing_positions, segment_lengths
from jflow.deq.flat import flatten_batched
from jflow.deq.regularize import jacobian_penalty, spectral_radius
from jflow.deq.solve import RETURN_RULES, solve, solve_flat
from jflow.deq.solvers import Anderson, Broyden, Naive, Solver, available_solvers, get_solver, register_solver
from jflow.deq.stats import summarize
from jflow.deq.weight_norm import WeightNormConv, fold_weight_norm, weight_norm_kernel

__all__ = [
    "Anderson", "BackwardSolve", "Broyden", "DEQConfig", "Naive", "RETURN_RULES", "Solver",
    "WeightNormConv", "available_solvers", "correction_weights", "deq_fixed_point",
    "flatten_batched", "fold_weight_norm", "from_config", "get_solver", "implicit_step",
    "indexing_positions", "jacobian_penalty", "parse_solver_spec", "phantom_steps",
    "register_solver",
    "segment_lengths", "solve", "solve_flat", "spectral_radius", "summarize", "weight_norm_kernel",
]
