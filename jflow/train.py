"""The training loop: ``train_and_evaluate(config, workdir)``.

One readable function in commented sections (mesh, input, model, optimiser, sharding, update,
checkpoint, evals, loop), after google-research/big_vision. Data parallel over all devices with
``jax.jit`` + ``NamedSharding``; orbax checkpoints with automatic resume; NaN guard; TensorBoard
scalars and flow pictures; a tqdm progress bar.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jflow import checkpoint as ckpt_lib
from jflow.errors import UserError
from jflow.models import is_deq, model_from_config
from jflow import losses
from jflow import schedules
from jflow import sharding

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
    """Everything one update reads and writes."""
    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree


class NonFiniteLossError(UserError, FloatingPointError):
    """Training stopped because the loss became NaN or inf."""


class WorkdirBusyError(UserError):
    """Another live training process holds the workdir."""


def lock_workdir(workdir: str):
    """An exclusive lock on ``workdir/.lock`` for this process's lifetime (an OS file lock: a
    killed run leaves nothing stuck). Raises :class:`WorkdirBusyError` when a live run holds it."""
    import fcntl

    fh = open(os.path.join(workdir, ".lock"), "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise WorkdirBusyError(f"--workdir {workdir} is in use by a running training ({holder}); "
                               "wait for it or use another --workdir") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


# ----------------------------------------------------------------------------------------------
# Building blocks (used by the loop below, by evaluation and by the tests)
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OptimSpec:
    """The config fields the optimiser and the loss depend on (hashable: a jit cache key)."""
    lr: float
    num_steps: int
    pct_start: float
    div_factor: float
    final_div_factor: float
    extra_steps: int
    clip: float
    eps: float
    wd: float
    gamma: float
    correction_weights: str
    deq: bool
    # "sequence" (RAFT / DEQ predictions), "mixture_laplace" (SEA-RAFT) or "multilevel_l2" /
    # "multilevel_charbonnier"
    # (LiteFlowNet2's ``pyramid``: per-level weights, full-resolution weight, resize mode).
    loss: str = "sequence"
    level_weights: tuple[float, ...] = ()
    full_res_weight: float = 0.0
    loss_resize: str = "downsample"
    seed: int = 0  # the model's per-step "noise" stream (DIP's random initial flow)
    jac_loss_weight: float = 0.0  # DEQ Jacobian regularisation (config.deq.jac_loss_weight)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "OptimSpec":
        t = config.train
        return cls(float(t.lr), int(t.num_steps), float(t.pct_start), float(t.div_factor),
                   float(t.final_div_factor), int(t.schedule_extra_steps), float(t.clip),
                   float(t.adam_eps), float(t.wd), float(t.gamma), str(t.correction_weights),
                   is_deq(config), str(t.get("loss", "sequence")),
                   tuple(float(x) for x in t.get("level_weights", ())),
                   float(t.get("full_res_weight", 0.0)), str(t.get("loss_resize", "downsample")),
                   int(config.get("seed", 0)),
                   float((config.get("deq") or {}).get("jac_loss_weight", 0.0)))


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Global-norm clipping, then AdamW (decay on all params) with the one-cycle schedule."""
    return _optimizer(OptimSpec.from_config(config))


@functools.lru_cache(maxsize=8)
def _optimizer(spec: OptimSpec) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = schedules.onecycle_schedule(
        spec.lr, spec.num_steps, pct_start=spec.pct_start, div_factor=spec.div_factor,
        final_div_factor=spec.final_div_factor, extra_steps=spec.extra_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(spec.clip),
        optax.adamw(schedule, b1=0.9, b2=0.999, eps=spec.eps, weight_decay=spec.wd))
    return tx, schedule


# Compiled functions are cached on (model, shapes/spec, mesh): a second run in the same process
# (resume in a notebook, the tests) reuses them instead of compiling again.
@functools.lru_cache(maxsize=8)
def _init_fn(model, shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> Callable:
    def init(key):
        dummy = jnp.zeros(shape, jnp.float32)
        return model.init({"params": key}, dummy, dummy)
    return jax.jit(init, out_shardings=sharding.replicated(mesh))


@functools.lru_cache(maxsize=8)
def _opt_init_fn(spec: OptimSpec, mesh: jax.sharding.Mesh) -> Callable:
    return jax.jit(_optimizer(spec)[0].init, out_shardings=sharding.replicated(mesh))


def init_variables(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> PyTree:
    """``model.init`` on a dummy pair of crop size, compiled into replicated device memory."""
    h, w = config.data.crop
    return _init_fn(model, (1, h, w, 3), mesh)(jax.random.key(config.seed))


def create_train_state(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                       ) -> TrainState:
    """Fresh parameters, batch statistics and optimiser state, replicated over ``mesh``."""
    variables = init_variables(model, config, mesh)
    return state_from_weights(variables["params"], variables.get("batch_stats", {}), config, mesh)


def state_from_weights(params: PyTree, batch_stats: PyTree, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh) -> TrainState:
    """Step 0 with the given weights (e.g. a previous stage's) and a fresh optimiser state."""
    params = sharding.replicate(params, mesh)
    opt_state = _opt_init_fn(OptimSpec.from_config(config), mesh)(params)
    return TrainState(step=sharding.replicate(jnp.zeros((), jnp.int32), mesh), params=params,
                      batch_stats=sharding.replicate(batch_stats or {}, mesh),
                      opt_state=opt_state)


def init_encoders(state: TrainState, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  tv_state: dict | None = None) -> TrainState:
    """A fresh state with SEA-RAFT's encoders initialised from the torchvision ImageNet ResNet in
    ``config.model.init_encoder_from`` (:mod:`jflow.torchvision_resnet`), as the official
    training does; ``state`` itself when the field is empty or absent. ``tv_state``: that
    file's state_dict already read (``torchvision_resnet.read_for_config``)."""
    path = config.model.get("init_encoder_from", "")
    if not path:
        return state
    from jflow.torchvision_resnet import init_encoders_from
    variables = init_encoders_from(path, jax.device_get({"params": state.params,
                                                         "batch_stats": state.batch_stats}),
                                   tv_state)
    print(f"Initialised the encoders from {path} (torchvision ResNet)", flush=True)
    return state_from_weights(variables["params"], variables["batch_stats"], config, mesh)


def abstract_train_state(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                         ) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of the train state, without computing it."""
    shapes = jax.eval_shape(lambda: create_train_state(model, config, mesh))
    rep = sharding.replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), shapes)


def loss_weights(spec: OptimSpec, n: int) -> jax.Array:
    """Sequence-loss weights of ``n`` predictions: gamma**(n-1-i), or DEQ correction weights."""
    if spec.deq:
        return losses.correction_weights(n, spec.correction_weights, spec.gamma)
    return losses.exp_weights(n, spec.gamma)


def make_update_fn(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                   ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The jit-compiled update: ``(state, batch) -> (state, metrics)``; the state is donated.

    The batch holds global arrays sharded over ``data`` (uint8 images are cast here); the
    state is replicated. Metrics: ``loss``, ``epe``, ``1px``/``3px``/``5px``, ``grad_norm``,
    ``lr`` and, for DEQ models, the batch means of ``nstep``, ``abs_lowest``, ``rel_lowest`` (and
    ``jac_loss``, weighted into ``loss``, when ``config.deq.jac_loss_weight > 0``).
    """
    return _update_fn(model, OptimSpec.from_config(config), mesh)


@functools.lru_cache(maxsize=8)
def _update_fn(model, spec: OptimSpec, mesh: jax.sharding.Mesh) -> Callable:
    tx, schedule = _optimizer(spec)

    def loss_fn(params, batch_stats, batch, rngs):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        image1 = batch["image1"].astype(jnp.float32)
        image2 = batch["image2"].astype(jnp.float32)
        if batch_stats:
            out, new_vars = model.apply(variables, image1, image2, train=True,
                                        mutable=["batch_stats"], rngs=rngs)
            batch_stats = new_vars["batch_stats"]
        else:
            out = model.apply(variables, image1, image2, train=True, rngs=rngs)
        if spec.loss == "sequence":
            preds = out["predictions"]
            loss, metrics = losses.weighted_sequence_loss(
                preds, batch["flow"], batch["valid"], loss_weights(spec, preds.shape[0]))
        elif spec.loss == "mixture_laplace":  # SEA-RAFT
            preds = out["predictions"]
            loss, metrics = losses.mixture_laplace_loss(
                preds, out["info_predictions"], batch["flow"], batch["valid"],
                loss_weights(spec, preds.shape[0]))
        elif spec.loss in ("multilevel_l2", "multilevel_charbonnier"):
            loss, metrics = losses.multilevel_loss(
                out["pyramid"], out["flow"], batch["flow"], batch["valid"], spec.level_weights,
                spec.full_res_weight, kind=spec.loss.split("_")[1], resize=spec.loss_resize)
        else:
            raise ValueError(f"config.train.loss must be sequence, mixture_laplace, "
                             f"multilevel_l2 or multilevel_charbonnier, got {spec.loss!r}")
        for k, v in (out.get("stats") or {}).items():
            if k in ("nstep", "abs_lowest", "rel_lowest", "jac_loss"):
                metrics[k] = jnp.mean(v.astype(jnp.float32))
        if "jac_loss" in (out.get("stats") or {}):  # DEQ Jacobian regularisation
            loss = loss + spec.jac_loss_weight * out["stats"]["jac_loss"]
        return loss, (metrics, batch_stats)

    def update(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        # per-step randomness of the model (DIP's random initial flow): the "noise" stream
        rngs = {"noise": jax.random.fold_in(jax.random.PRNGKey(spec.seed), state.step)}
        (loss, (metrics, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch,
                                                        rngs)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                       lr=schedule(state.step))
        new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
        return new, metrics

    rep, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    return jax.jit(update, in_shardings=(rep, data), out_shardings=(rep, rep),
                   donate_argnums=(0,))


def build_loader(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, start_step: int
                 ) -> Iterator[dict]:
    """This process's share of every global training batch, from batch ``start_step`` on."""
    from jflow.data import build_source
    from jflow.data.loader import Loader
    h, w = config.data.synthetic_size
    source = build_source(config.data.train, config.data.root or None, "train", config.seed,
                          num_samples=config.data.synthetic_train_size, height=h, width=w)
    local = sharding.local_batch_size(config.train.batch_size, mesh)
    return iter(Loader(source, local, seed=config.seed, augment=config.data.augment,
                       crop=tuple(config.data.crop), shuffle=True,
                       num_workers=config.data.num_workers, process_index=jax.process_index(),
                       process_count=jax.process_count(), start_step=start_step,
                       num_steps=config.train.num_steps, drop_meta=True))


def _host(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and validates.

    Returns a summary: final step, validation results at the first and the last evaluation, and
    the output locations.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    # One workdir, one trainer: an OS file lock, released when this process ends (even killed).
    lock = lock_workdir(workdir) if jax.process_index() == 0 else None
    try:
        return _train_and_evaluate(config, workdir)
    finally:
        if lock is not None:
            lock.close()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    from tqdm import tqdm

    from jflow import evaluate as eval_lib  # imported late: it pulls in data readers and viz

    t = config.train
    is_main = jax.process_index() == 0

    # --- Mesh: 1-D data parallelism over all (or config.train.num_devices) devices.
    mesh = sharding.make_mesh(t.num_devices or None)
    logging.info("mesh: %d device(s) %s, %d process(es)", mesh.size, jax.devices()[0].platform,
                 jax.process_count())

    # --- Model and state: resume from the workdir's latest checkpoint (restored straight onto
    # the replicated layout, no init), else fresh weights or another run's (config.train.init_from).
    model = model_from_config(config)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    ckpt = ckpt_lib.Checkpointer(ckpt_dir, max_to_keep=t.keep_ckpts,
                                 save_interval_steps=max(t.ckpt_every, 1))
    history: list[dict[str, Any]] = []
    restored = None
    if ckpt.latest_step() is not None:
        check_workdir_model(ckpt_dir, ckpt.latest_step(), config)
        abstract = abstract_train_state(model, config, mesh)
        restored, skipped = ckpt.restore_newest_intact({"params": abstract.params,
                                                        "batch_stats": abstract.batch_stats,
                                                        "opt_state": abstract.opt_state})
        for line in skipped:
            print(f"WARNING: skipped checkpoint {line}", flush=True)
        if restored is None:
            raise ckpt_lib.CheckpointError(f"{ckpt_dir}: no checkpoint restores (all damaged); "
                                           "move the folder away to start over")
    if restored is not None:
        step0 = int(restored["meta"]["step"])
        state = TrainState(step=sharding.replicate(jnp.asarray(step0, jnp.int32), mesh),
                           params=restored["params"], batch_stats=restored["batch_stats"],
                           opt_state=restored["opt_state"])
        history = [h for h in _read_history(workdir) if h["step"] <= step0]
        print(f"Resumed from step {step0} ({os.path.join(ckpt_dir, str(step0))})", flush=True)
    else:
        step0 = 0
        tv_state = None
        if config.model.get("init_encoder_from", ""):  # a bad file fails here, before the init
            from jflow.torchvision_resnet import read_for_config
            tv_state = read_for_config(config.model.init_encoder_from, config)
        state = init_encoders(create_train_state(model, config, mesh), config, mesh, tv_state)
        if t.init_from:
            loaded = ckpt_lib.load_params(t.init_from)
            state = state_from_weights(loaded["params"], loaded["batch_stats"] or state.batch_stats,
                                       config, mesh)
            print(f"Initialised weights from {t.init_from} (step {loaded['meta'].get('step')})",
                  flush=True)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    logging.info("%s: %s parameters", config.model.name, f"{n_params:,}")

    # --- Input: this process's share of each global batch, continuing the data order.
    batches = build_loader(config, mesh, step0)

    # --- Update.
    update = make_update_fn(model, config, mesh)

    # --- Evals and logging.
    writer = _summary_writer(workdir) if is_main else None
    pictures_dir = os.path.join(workdir, "pictures")

    def run_eval(step: int) -> None:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        results = {}
        for spec in config.data.val:
            res = eval_lib.validate_spec(
                model, variables, config, spec, pictures_dir=pictures_dir if is_main else None,
                step=step, num_pictures=t.num_pictures)
            results[spec] = res.metrics
            if writer is not None:
                for k, v in res.metrics.items():
                    writer.add_scalar(f"val/{spec}/{k}", v, step)
                for i, pic in enumerate(res.pictures):
                    writer.add_image(f"val/{spec}/{i}", pic, step, dataformats="HWC")
        history.append({"step": step, **results})
        line = ", ".join(f"{s} EPE {r['epe']:.3f}" for s, r in results.items())
        tqdm.write(f"[step {step}] validation: {line}")  # keeps the progress bar intact
        if is_main:
            with open(os.path.join(workdir, "validation.json"), "w") as f:
                json.dump(history, f, indent=1)

    # A resumed run has validated its resume step already (it is in the history).
    if not history or history[-1]["step"] != step0:
        if step0 == 0 or (t.eval_every and step0 % t.eval_every == 0):
            run_eval(step0)
    train_log = TrainLog(os.path.join(workdir, "train_log.jsonl"), step0, enabled=is_main)

    # --- Loop.
    meta = {"config": json.loads(config.to_json_best_effort()), "model": config.model.name}
    bar = tqdm(total=t.num_steps, initial=step0, disable=not is_main, dynamic_ncols=True,
               unit="step")
    last_saved = ckpt.latest_step()
    t_first = time.time()
    def checked(step: int, device_metrics: dict) -> dict[str, float]:
        """The metrics of ``step`` on the host; stops the run (no checkpoint) if the loss is not
        finite."""
        metrics = _host(device_metrics)
        if not math.isfinite(metrics["loss"]):
            where = (f"the last checkpoint is step {last_saved} in {ckpt_dir}"
                     if last_saved is not None else "no checkpoint was written")
            raise NonFiniteLossError(
                f"training stopped: the loss is {metrics['loss']} at step {step} "
                f"(learning rate {metrics['lr']:.3g}); {where}")
        return metrics

    try:
        pending = None  # (step, metrics on the device) whose finiteness is not checked yet
        for step in range(step0, t.num_steps):
            local = next(batches)
            if step == t.debug_inject_nan_at_step:
                local = dict(local, flow=np.full_like(local["flow"], np.nan))
            state, metrics = update(state, sharding.global_batch(local, mesh))
            # Check the previous step while this one runs: pulling this step's metrics now would
            # serialise data loading, transfer and compute.
            if pending is not None:
                checked(*pending)
            pending = (step, metrics)
            if step == step0:
                jax.block_until_ready(metrics)
                logging.info("first step (compile + run) took %.1f s", time.time() - t_first)
            done = step + 1
            bar.update(1)
            saving = done % max(t.ckpt_every, 1) == 0 or done == t.num_steps
            if done % t.log_every == 0 or done == t.num_steps or saving:
                host = checked(*pending)  # never save or log a non-finite state
                bar.set_postfix(_postfix(host), refresh=False)
                train_log.write(done, host)
                if writer is not None:
                    for k, v in host.items():
                        writer.add_scalar(f"train/{k}", v, done)
            if saving:
                if ckpt.save(done, state.params, state.batch_stats, state.opt_state,
                             dict(meta, step=done), force=done == t.num_steps):
                    last_saved = done
            if done == t.num_steps or (t.eval_every and done % t.eval_every == 0):
                run_eval(done)
        if pending is not None:
            checked(*pending)
    finally:
        bar.close()
        train_log.close()
        ckpt.wait()
        ckpt.close()
        if writer is not None:
            writer.close()

    summary = {
        "step": int(jax.device_get(state.step)),
        "first_validation": history[0] if history else None,
        "last_validation": history[-1] if history else None,
        "workdir": workdir, "checkpoints": ckpt_dir,
        "tensorboard": os.path.join(workdir, "tensorboard"), "pictures": pictures_dir,
        "state": state,
    }
    if is_main:
        print("\nOutputs:\n"
              f"  checkpoints   {ckpt_dir}\n"
              f"  tensorboard   {summary['tensorboard']}  (tensorboard --logdir {workdir})\n"
              f"  pictures      {pictures_dir}\n"
              f"  validation    {os.path.join(workdir, 'validation.json')}", flush=True)
    return summary


class TrainLog:
    """``train_log.jsonl``: one JSON line of training metrics per log step (for curves); a resumed
    run drops the lines after its resume step."""

    def __init__(self, path: str, start_step: int, enabled: bool = True):
        self.file = None
        if not enabled:
            return
        kept = []
        if os.path.exists(path):
            with open(path) as f:
                kept = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= start_step]
        self.file = open(path, "w")
        self.file.writelines(kept)
        self.file.flush()

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"step": step, **metrics}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def read_train_log(workdir: str) -> list[dict[str, float]]:
    """The rows of ``workdir/train_log.jsonl`` (``step``, ``loss``, ``epe``, ``lr``, ...)."""
    path = os.path.join(workdir, "train_log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def check_workdir_model(ckpt_dir: str, step: int, config: ml_collections.ConfigDict) -> None:
    """A workdir's checkpoints must hold the configured model (name and size), else one clear
    error instead of a tree-structure diff from the restore."""
    meta = ckpt_lib.read_meta(os.path.join(ckpt_dir, str(step)))
    saved = (meta.get("config") or {}).get("model") or {}
    want = {"name": str(config.model.name), "size": str(config.model.get("size", ""))}
    got = {k: str(saved.get(k, "")) for k in want}
    if saved and got != want:
        raise ckpt_lib.CheckpointError(
            f"{ckpt_dir} holds a {got['name']}{'-' + got['size'] if got['size'] else ''} model "
            f"but the config builds {want['name']}{'-' + want['size'] if want['size'] else ''}: "
            "use another --workdir (or the matching config)")


def _read_history(workdir: str) -> list[dict[str, Any]]:
    path = os.path.join(workdir, "validation.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def _postfix(m: dict[str, float]) -> dict[str, str]:
    out = {"loss": f"{m['loss']:.3f}", "epe": f"{m['epe']:.3f}", "lr": f"{m['lr']:.2e}"}
    if "nstep" in m:
        out["nstep"] = f"{m['nstep']:.1f}"
        out["res"] = f"{m.get('abs_lowest', float('nan')):.2e}"
    if "jac_loss" in m:
        out["jac"] = f"{m['jac_loss']:.3f}"
    return out


def _summary_writer(workdir: str):
    from tensorboardX import SummaryWriter
    return SummaryWriter(os.path.join(workdir, "tensorboard"))
