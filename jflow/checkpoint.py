"""Checkpoints: orbax save, restore and resume.

Layout: ``<directory>/<step>/{params,batch_stats,opt_state,meta}``, one orbax ``CheckpointManager``
step per directory (``<workdir>/checkpoints`` during training). ``batch_stats`` and ``opt_state``
are optional (``jflow.convert`` writes no optimiser state; models without BatchNorm have no batch
statistics); ``meta`` is JSON (step, config, model name, ...). A state with a NaN or inf is never
written.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jflow.errors import UserError

PyTree = Any
ARRAY_ITEMS = ("params", "batch_stats", "opt_state")


class CheckpointError(UserError):
    """A checkpoint directory that cannot be read or a state that must not be written."""


def tree_is_finite(tree: PyTree) -> bool:
    """True when every floating-point leaf of ``tree`` is finite (checked on the host)."""
    leaves = [x for x in jax.tree.leaves(tree)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    return all(bool(np.isfinite(_local_copy(x)).all()) for x in leaves)


def _local_copy(x) -> np.ndarray:
    """Host copy of a replicated leaf (its first local shard on multi-host arrays)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return np.asarray(jax.device_get(x), np.float32)


def _nonempty(tree: PyTree) -> bool:
    return tree is not None and len(jax.tree.leaves(tree)) > 0


def _save_args(params, batch_stats, opt_state, meta) -> ocp.args.Composite:
    items = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}
    args = {k: ocp.args.StandardSave(v) for k, v in items.items() if _nonempty(v)}
    args["meta"] = ocp.args.JsonSave(dict(meta or {}))
    return ocp.args.Composite(**args)


class Checkpointer:
    """Periodic saves into ``directory`` (keep the last ``max_to_keep``) and resume."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3,
                 save_interval_steps: int = 1, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, params: PyTree, batch_stats: PyTree = None,
             opt_state: PyTree = None, meta: Mapping[str, Any] | None = None, *,
             force: bool = False) -> bool:
        """Saves when ``step`` is due (or ``force``); refuses a state with NaN or inf."""
        state = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}
        if not tree_is_finite(state):
            raise CheckpointError(f"refusing to save step {step} to {self.directory}: the state "
                                  "contains NaN or inf")
        self._check_previous_save()
        if not force and not self._manager.should_save(int(step)):
            return False
        need = 2 * sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state)
                       if hasattr(x, "dtype"))
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise CheckpointError(f"{self.directory}: {_human(free)} free, a checkpoint of step "
                                  f"{step} needs about {_human(need)}: free some space (training "
                                  "stopped; earlier checkpoints are intact)")
        meta = {"step": int(step), **dict(meta or {})}
        try:
            return self._manager.save(int(step), force=force,
                                      args=_save_args(params, batch_stats, opt_state, meta))
        except OSError as e:
            raise CheckpointError(f"{self.directory}: could not write step {step} ({e}); "
                                  "earlier checkpoints are intact") from None

    def _check_previous_save(self) -> None:
        """An asynchronous save that failed (e.g. the disk filled up) stops the run at once, with
        one line, instead of failing again at every later save."""
        try:
            self._manager.check_for_errors()
        except Exception as e:  # noqa: BLE001  (orbax re-raises the background thread's error)
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise CheckpointError(f"{self.directory}: an earlier checkpoint could not be written "
                                  f"({first[:300]}); earlier checkpoints are intact") from None

    def restore(self, step: int | None = None, abstract: Mapping[str, PyTree] | None = None
                ) -> dict[str, PyTree]:
        """Restores ``step`` (default: latest) as a dict of the items present.

        ``abstract`` maps item names to target trees (arrays or ``jax.ShapeDtypeStruct`` with
        shardings) for an exact restore (optax states included); items without a target are
        restored as saved.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        return _restore(self._manager, self.directory, step, abstract or {})

    def restore_latest(self, abstract: Mapping[str, PyTree]) -> dict[str, PyTree] | None:
        """The latest checkpoint restored onto ``abstract``, or None when there is none."""
        step = self.latest_step()
        return None if step is None else self.restore(step, abstract)

    def restore_newest_intact(self, abstract: Mapping[str, PyTree]
                              ) -> tuple[dict[str, PyTree] | None, list[str]]:
        """The newest checkpoint that restores, and one line per newer one that did not (damaged:
        a truncated or missing file). Damaged steps are moved aside to ``<step>.damaged`` (kept,
        not deleted) so that training can write that step again. ``(None, skipped)`` when none
        restores."""
        skipped = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored = self.restore(step, abstract)
            except Exception as e:  # noqa: BLE001  (orbax / tensorstore raise many types)
                src = os.path.join(self.directory, str(step))
                dst = f"{src}.damaged"
                n = 1
                while os.path.exists(dst):
                    n += 1
                    dst = f"{src}.damaged{n}"
                os.rename(src, dst)
                skipped.append(f"{src}: {_cause(e)}; moved to {dst}")
                continue
            if skipped:
                self._manager.reload()
            return restored, skipped
        if skipped:
            self._manager.reload()
        return None, skipped

    def wait(self) -> None:
        self._manager.wait_until_finished()
        self._check_previous_save()

    def close(self) -> None:
        self._manager.close()


def _restore(manager: ocp.CheckpointManager, directory: str, step: int,
             abstract: Mapping[str, PyTree], items: tuple[str, ...] = ARRAY_ITEMS
             ) -> dict[str, PyTree]:
    step_dir = os.path.join(directory, str(step))
    if not os.path.isdir(step_dir):
        raise CheckpointError(f"{step_dir}: no such checkpoint step")
    present = [k for k in items if os.path.isdir(os.path.join(step_dir, k))]
    if "params" not in present:
        raise CheckpointError(f"{step_dir}: no 'params' item (found {sorted(os.listdir(step_dir))})")
    args = {}
    for k in present:
        target = abstract.get(k)
        if target is not None:
            target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args[k] = ocp.args.StandardRestore(target)
    if os.path.isdir(os.path.join(step_dir, "meta")):
        args["meta"] = ocp.args.JsonRestore()
    out = dict(manager.restore(step, args=ocp.args.Composite(**args)))
    out.setdefault("batch_stats", {})
    out.setdefault("opt_state", None)
    out.setdefault("meta", {})
    return out


def _human(n: float) -> str:
    """Bytes as ``1.5 GiB`` / ``320.0 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def _cause(error: BaseException) -> str:
    """A one-line description of why a checkpoint did not restore."""
    first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")
    return f"unreadable or damaged ({type(error).__name__}: {first[:300]})"


def read_meta(step_dir: str) -> dict[str, Any]:
    """The JSON ``meta`` item of a step directory (``{}`` when absent or unreadable)."""
    import glob
    import json

    for path in sorted(glob.glob(os.path.join(step_dir, "meta", "*"))):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    return {}


def save_checkpoint(directory: str | os.PathLike, step: int, params: PyTree,
                    batch_stats: PyTree = None, opt_state: PyTree = None,
                    meta: Mapping[str, Any] | None = None) -> str:
    """Writes one checkpoint ``<directory>/<step>`` synchronously and returns its path."""
    ckpt = Checkpointer(directory, max_to_keep=None, async_save=False)
    ckpt.save(step, params, batch_stats, opt_state, meta, force=True)
    ckpt.wait()
    ckpt.close()
    return os.path.join(ckpt.directory, str(step))


def _resolve(path: str | os.PathLike) -> tuple[str, int]:
    """(checkpoints directory, step) for a workdir, a checkpoints directory or a step directory."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path} does not exist")
    if os.path.isdir(os.path.join(path, "params")):
        parent, name = os.path.split(path)
        if name.isdigit():
            return parent, int(name)
        raise CheckpointError(f"{path}: step directories must be named by their step number")
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    steps = _steps(path)
    if not steps:
        raise CheckpointError(f"{path}: no checkpoint found (expected <step>/params from "
                              "jflow training or jflow.convert)")
    return path, steps[-1]


def load_params(path: str | os.PathLike, step: int | None = None) -> dict[str, PyTree]:
    """Loads ``{'params', 'batch_stats', 'meta'}`` for prediction or evaluation.

    ``path`` may be a workdir, its ``checkpoints`` directory or one step directory; the latest
    step is used unless ``step`` is given. Works with or without an optimiser state.
    """
    directory, latest = _resolve(path)
    explicit = step is not None or os.path.isdir(os.path.join(os.path.abspath(path), "params"))
    candidates = [latest if step is None else step]
    if not explicit:  # a workdir or checkpoints folder: fall back to older intact steps
        candidates += sorted((s for s in _steps(directory) if s < latest), reverse=True)
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    skipped = []
    try:
        for s in candidates:
            try:
                out = _restore(manager, directory, s, {}, items=("params", "batch_stats"))
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001  (orbax / tensorstore raise many types)
                skipped.append(f"{os.path.join(directory, str(s))}: {_cause(e)}")
                continue
            for line in skipped:
                print(f"WARNING: skipped checkpoint {line}; using step {s}", flush=True)
            return {"params": out["params"], "batch_stats": out["batch_stats"],
                    "meta": out["meta"]}
    finally:
        manager.close()
    raise CheckpointError("no intact checkpoint: " + "; ".join(skipped))


def _steps(directory: str) -> list[int]:
    return sorted(int(d) for d in os.listdir(directory)
                  if d.isdigit() and os.path.isdir(os.path.join(directory, d, "params")))


def _flat_shapes(tree: PyTree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat}


def load_checked(path: str | os.PathLike, model, model_name: str | None = None
                 ) -> dict[str, PyTree]:
    """:func:`load_params`, then checked against ``model`` (a Flax module): a checkpoint of another
    model (``meta`` names it) or of another size is one :class:`CheckpointError` listing the
    missing, unexpected and misshapen variables. Returns ``{'params', 'batch_stats'?, 'meta'}``."""
    from jflow.models import variable_shapes

    loaded = load_params(path)
    name = (loaded.get("meta") or {}).get("model")
    if model_name and name and name != model_name:
        raise CheckpointError(f"checkpoint {path} holds a '{name}' model but the config builds "
                              f"'{model_name}'")
    variables = {"params": loaded["params"]}
    if loaded.get("batch_stats"):
        variables["batch_stats"] = loaded["batch_stats"]
    expected = {k: v for k, v in variable_shapes(model).items() if k in ("params", "batch_stats")}
    want, got = _flat_shapes(expected), _flat_shapes(variables)
    problems = [f"missing {k}" for k in sorted(set(want) - set(got))]
    problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
    problems += [f"{k}: checkpoint {got[k]}, model {want[k]}" for k in sorted(set(want) & set(got))
                 if want[k] != got[k]]
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit the configured model "
                              f"({len(problems)} problems): " + "; ".join(problems[:20])
                              + ("; ..." if len(problems) > 20 else ""))
    return dict(variables, meta=loaded.get("meta") or {})
