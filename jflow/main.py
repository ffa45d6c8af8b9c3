"""``python -m jflow.main --config=configs/deq_raft.py --workdir=DIR``: train or evaluate.

Configs are ml_collections files with variants after a colon (``configs/deq_raft.py:H,stage=things``)
and field overrides as flags (``--config.train.num_steps=200``). ``--config.mode=eval`` evaluates
the checkpoint in ``--config.eval.checkpoint`` (default: the workdir's latest). ``--multihost``
calls ``jax.distributed.initialize()`` first (cluster settings from the environment: see
``jflow.sharding.initialize_multihost``).
"""
from __future__ import annotations

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

from jflow.cli import run_app
from jflow.errors import InputError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (with :variants).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, pictures and results.")
flags.DEFINE_bool("multihost", False, "Initialise jax.distributed before anything else.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
    """Drops orbax's per-save INFO chatter (warnings and errors still pass)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def check_run(config, workdir: str) -> None:
    """Cheap checks before anything is built: mode, workdir, data specs, submission kind."""
    import os

    from jflow.data import parse_spec

    if config.mode not in ("train", "eval"):
        raise InputError(f"--config.mode must be 'train' or 'eval', got {config.mode!r}")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise InputError(f"--workdir {workdir}: exists and is not a directory")
    specs = {"config.data.train": [config.data.train] if config.mode == "train" else [],
             "config.data.val": list(config.data.val), "config.eval.datasets":
             list(config.eval.datasets) if config.mode == "eval" else []}
    for field, values in specs.items():
        for spec in values:
            try:
                parse_spec(spec)
            except ValueError as e:
                raise InputError(f"--{field}: {e}") from None
    kind = config.eval.get("submission", "")
    if config.mode == "eval" and kind and kind not in ("sintel", "kitti"):
        raise InputError(f"--config.eval.submission must be 'sintel' or 'kitti', got {kind!r}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    import jax
    if FLAGS.multihost:
        from jflow import sharding
        sharding.initialize_multihost()
    logging.info("JAX %s, process %d/%d, devices: %s", jax.__version__, jax.process_index(),
                 jax.process_count(), jax.devices())
    config = FLAGS.config
    check_run(config, FLAGS.workdir)
    if config.mode == "train":
        from jflow import train
        train.train_and_evaluate(config, FLAGS.workdir)
    elif config.mode == "eval":
        from jflow import evaluate
        evaluate.evaluate_and_report(config, FLAGS.workdir)
    else:
        raise app.UsageError(f"--config.mode must be 'train' or 'eval', got {config.mode!r}")


def run() -> None:
    """Console entry point ``jflow-train`` (same as ``python -m jflow.main``)."""
    run_app(main)


if __name__ == "__main__":
    run()
