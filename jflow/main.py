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

from jflow.cli import friendly_errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (with :variants).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, pictures and results.")
flags.DEFINE_bool("multihost", False, "Initialise jax.distributed before anything else.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
    """Drops orbax's per-save INFO chatter (warnings and errors still pass)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


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
    app.run(friendly_errors(main))


if __name__ == "__main__":
    run()
