"""Command-line plumbing shared by ``jflow.main``, ``predict``, ``convert`` and ``benchmark``."""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what is wrong with the user's input or run."""
    from jflow.checkpoint import CheckpointError
    from jflow.convert import ConversionError
    from jflow.data.errors import DatasetError
    from jflow.io import FlowFileError
    from jflow.torch_pickle import CheckpointFileError
    from jflow.errors import UserError
    from jflow.train import NonFiniteLossError

    return (UserError, CheckpointError, CheckpointFileError, ConversionError, DatasetError,
            FlowFileError, NonFiniteLossError)


def friendly_errors(main: Callable) -> Callable:
    """Wraps an absl ``main``: a user error prints ``error: <message>`` and exits 1, no traceback.

    ``JFLOW_DEBUG=1`` in the environment re-raises instead (full traceback, for bug reports).
    """

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except user_errors() as e:
            if os.environ.get("JFLOW_DEBUG", "") not in ("", "0"):
                raise
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapped


def run_app(main: Callable, define_flags: Callable[[], None] | None = None) -> None:
    """Defines the flags (if given) and runs ``main`` under absl with :func:`friendly_errors`."""
    from absl import app

    if define_flags is not None:
        define_flags()
    app.run(friendly_errors(main))
