"""``DEQConfig``: every option of a deep-equilibrium layer, frozen and hashable.

Defaults are jflow's best-behaved measured settings, not deq-flow's: Anderson (m=6, beta=1) with
the *relative* ridge (lambda = 1e-4 times the mean squared residual of the history) forward and
backward, 40 steps, tolerance 1e-3 on the *relative* residual ``||f(z) - z|| / ||f(z)||``, 1-step
phantom gradient (tau=1), sliced core with one correction term. Both choices make the solve
independent of the units of the state (an absolute tolerance or ridge means something different
for a flow in pixels at 1/8 resolution, a hidden state in [-1, 1], or the same model at another
image size). The IFT backward solve is always relative to the cotangent ``||v||`` (see
``jflow.deq.adjoint``), so its gradient does not depend on the loss scale.

deq-flow v2's settings (absolute residual, absolute ridge, ``solver="naive"`` in every training
script) live in the published recipes (``jflow.recipes.deq_config`` sets every solver field
explicitly); converted checkpoints reproduce published numbers with ``solver="naive",
f_stop_mode="abs", return_rule="official_naive"``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

GRADS = ("ift", "phantom", "unrolled", "optimistix_ift")
CORES = ("sliced", "indexing")


def _freeze_kwargs(value: Any, name: str) -> tuple:
    if value is None:
        return ()
    if hasattr(value, "to_dict"):  # ml_collections.ConfigDict
        value = value.to_dict()
    items = value.items() if isinstance(value, Mapping) else value
    try:
        out = tuple(sorted((str(k), v) for k, v in items))
    except (TypeError, ValueError) as e:
        raise ValueError(f"DEQConfig.{name}: expected a mapping or (key, value) pairs, got {value!r}") from e
    for k, v in out:
        try:
            hash(v)
        except TypeError as e:
            raise ValueError(f"DEQConfig.{name}: value of {k!r} must be hashable, got {v!r}") from e
    return out


def parse_solver_spec(spec: str) -> tuple[str, dict]:
    """``"anderson:beta=3.0,memory=8"`` -> ``("anderson", {"beta": 3.0, "memory": 8})``: a solver
    name and its options in one string (bare words are True; values are bools, ints, floats or
    strings), so ``--config.deq.solver=anderson:beta=3.0`` sets options from the command line."""
    name, _, opts = str(spec).partition(":")
    kwargs: dict = {}
    for tok in filter(None, (t.strip() for t in opts.split(","))):
        key, sep, value = (t.strip() for t in tok.partition("="))
        if not key or (sep and not value):
            raise ValueError(f"solver spec {spec!r}: expected name:key=value,..., got {tok!r}")
        if not sep:
            kwargs[key] = True
        elif value.lower() in ("true", "false"):
            kwargs[key] = value.lower() == "true"
        else:
            kwargs[key] = _number_or_string(value)
    return name.strip(), kwargs


def _number_or_string(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _check_native_solver(name: str, kwargs: dict) -> None:
    """A native solver is built once here, so a bad option is one error at configuration time
    (backend and not-yet-registered solvers are checked when the solve builds them)."""
    from jflow.deq.solvers import available_solvers, get_solver

    if name in available_solvers() and not name.startswith(("jaxopt_", "optimistix_")):
        get_solver(name, **kwargs)


@dataclasses.dataclass(frozen=True)
class DEQConfig:
    """Options of ``deq_fixed_point``; ``*_solver_kwargs`` accept a dict (stored as sorted pairs).

    solver / solver_kwargs / f_max_steps / f_tol / f_stop_mode / return_rule: the forward solve
        (see ``jflow.deq.solve`` for return rules and ``jflow.deq.solvers`` for the kwargs).
        ``solver`` (and ``b_solver``) may carry options, ``"anderson:beta=3.0,memory=8"``
        (:func:`parse_solver_spec`); they are moved into ``solver_kwargs``, overriding its keys.
    grad: "phantom" (k steps ``z <- (1-tau) z + tau f(z)`` from the stopped fixed point),
        "ift" (implicit gradient for the last correction term, phantom for the others) or
        "unrolled" (backprop through every solver step; memory grows with the steps) or
        "optimistix_ift" (the implicit gradient by ``optx.ImplicitAdjoint`` with lineax GMRES,
        rtol ``b_tol``, ``b_max_steps`` iterations; needs optimistix, ``jflow[optimistix]``).
    phantom_steps, tau: k and tau of the phantom steps.
    b_solver / b_solver_kwargs / b_max_steps / b_tol / b_stop_mode: the IFT backward solve of
        ``g = J^T g + v``, run on ``v / ||v||`` per sample and started at ``g = v``: "abs" stops
        at ``||J^T g + v - g|| < b_tol * ||v||``, "rel" at ``< b_tol * ||J^T g + v||``.
    unroll_impl: "scan" or "python", how ``grad="unrolled"`` unrolls (see ``jflow.deq.solve``).
    core, n_states: fixed-point correction ("sliced" or "indexing", see ``jflow.deq.correction``)
        and the number of supervised states.
    jac_loss_weight, jac_loss_samples: Jacobian regularisation (Bai, Koltun & Kolter, ICML 2021;
        deq-flow's ``--jac_loss_weight``). When the weight is > 0, a training solve adds
        ``stats["jac_loss"]``, the differentiable Hutchinson estimate of ``||J||_F^2 / D`` at the
        fixed point with ``jac_loss_samples`` probes; the trainer adds ``weight * jac_loss`` to
        the loss. It keeps ``f`` contractive, so solves need fewer steps.
    """

    solver: str = "anderson"
    solver_kwargs: tuple = ()
    f_max_steps: int = 40
    f_tol: float = 1e-3
    f_stop_mode: str = "rel"
    return_rule: str = "lowest"
    grad: str = "phantom"
    unroll_impl: str = "scan"
    phantom_steps: int = 1
    tau: float = 1.0
    b_solver: str = "anderson"
    b_solver_kwargs: tuple = ()
    b_max_steps: int = 40
    b_tol: float = 1e-3
    b_stop_mode: str = "abs"
    core: str = "sliced"
    n_states: int = 1
    jac_loss_weight: float = 0.0
    jac_loss_samples: int = 1

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for key in ("solver", "b_solver"):  # "name:key=value,..." specs: options into *_kwargs
            name, opts = parse_solver_spec(getattr(self, key))
            kwargs = {**dict(_freeze_kwargs(getattr(self, key + "_kwargs"), key + "_kwargs")),
                      **opts}
            set_(key, name)
            set_(key + "_kwargs", _freeze_kwargs(kwargs, key + "_kwargs"))
            _check_native_solver(name, kwargs)
        from jflow.deq.solve import RETURN_RULES, STOP_MODES

        checks = [
            ("grad", self.grad in GRADS, GRADS),
            ("core", self.core in CORES, CORES),
            ("unroll_impl", self.unroll_impl in ("scan", "python"), ("scan", "python")),
            ("f_stop_mode", self.f_stop_mode in STOP_MODES, STOP_MODES),
            ("b_stop_mode", self.b_stop_mode in STOP_MODES, STOP_MODES),
            ("return_rule", self.return_rule in RETURN_RULES, RETURN_RULES),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"DEQConfig.{name}: {getattr(self, name)!r} not in {allowed}")
        if self.jac_loss_weight < 0:
            raise ValueError(f"DEQConfig.jac_loss_weight: must be >= 0, got {self.jac_loss_weight}")
        for name in ("f_max_steps", "b_max_steps", "n_states", "jac_loss_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DEQConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.phantom_steps < 0:
            raise ValueError(f"DEQConfig.phantom_steps: must be >= 0, got {self.phantom_steps}")
        if self.n_states > self.f_max_steps:
            raise ValueError(
                f"DEQConfig.n_states: {self.n_states} correction terms need at least as many "
                f"solver steps, f_max_steps is {self.f_max_steps}"
            )

    def replace(self, **changes: Any) -> "DEQConfig":
        """A copy with ``changes`` (e.g. ``cfg.replace(f_max_steps=60)`` for evaluation)."""
        return dataclasses.replace(self, **changes)


def from_config(config: Any) -> DEQConfig:
    """Builds a ``DEQConfig`` from a dict / ``ml_collections.ConfigDict`` (``config.deq``).

    Missing keys keep their defaults; unknown keys raise ValueError naming them.
    """
    if config is None:
        return DEQConfig()
    if isinstance(config, DEQConfig):
        return config
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    known = {f.name for f in dataclasses.fields(DEQConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"jflow.deq.from_config: unknown keys {unknown}; known: {sorted(known)}")
    return DEQConfig(**d)
