"""Command-line plumbing shared by ``jflow.main``, ``predict``, ``convert`` and ``benchmark``."""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what is wrong with the user's input or run: every
    :class:`jflow.errors.UserError` (bad files, datasets, checkpoints, conversions, flags, a
    non-finite loss)."""
    from jflow.errors import UserError

    return (UserError,)


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


def _flag_error_line(error: BaseException, argv: list[str]) -> str:
    """One line for a flag / config-file problem (ml_collections raises multi-line errors)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if isinstance(error, (KeyError, AttributeError)):
        key = str(error).strip("\"'")
        overrides = [a for a in argv if a.startswith("--config.") and key.strip("'\"") in a]
        where = overrides[0].split("=")[0] if overrides else "a --config override"
        return f"{where}: no such config field ({lines[-1] if lines else key})"
    if isinstance(error, OSError) and lines:
        return f"--config: {lines[-1]}"
    return " ".join(lines) or type(error).__name__


def _check_deq_options(config) -> None:
    """Every ``config.deq`` option (solver and its options, gradient, correction) checked before
    anything is built: a bad one is a ValueError naming ``--config.deq``."""
    deq = config.get("deq") if hasattr(config, "get") else None
    if not deq:
        return
    from jflow.deq import from_config

    try:
        from_config(deq)
    except ValueError as e:
        raise ValueError(f"--config.deq: {e}") from e


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing where a bad flag, an unknown config field or a missing or broken config
    file is one ``error:`` line and exit 1 (``JFLOW_DEBUG=1``: the traceback)."""
    from absl import flags

    debug = os.environ.get("JFLOW_DEBUG", "") not in ("", "0")
    try:
        rest = flags.FLAGS(argv)
        config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
        if type(config).__name__ == "_ErrorConfig":  # ml_collections defers load errors
            config.to_dict()  # raises the deferred OSError
        _check_deq_options(config)
        return rest
    except flags.Error as e:
        if debug:
            raise
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # A config file's get_config() error arrives wrapped with its traceback: keep the cause.
        msg = f"--config: {lines[-1]}" if len(lines) > 1 else (lines[0] if lines else repr(e))
        print(f"error: {msg}", file=sys.stderr, flush=True)
    except (OSError, KeyError, AttributeError, ValueError, TypeError, SyntaxError) as e:
        if debug:
            raise
        print(f"error: {_flag_error_line(e, argv)}", file=sys.stderr, flush=True)
    sys.exit(1)


def run_app(main: Callable, define_flags: Callable[[], None] | None = None) -> None:
    """Defines the flags (if given) and runs ``main`` under absl with :func:`friendly_errors`."""
    from absl import app

    if define_flags is not None:
        define_flags()
    app.run(friendly_errors(main), flags_parser=parse_flags)


def cli_logging() -> None:
    """For the CLIs: jflow's INFO notes on stderr; other libraries' (orbax) absl logs only at
    ERROR."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    jlog = logging.getLogger("jflow")
    if not jlog.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        jlog.addHandler(handler)
    jlog.setLevel(logging.INFO)
    jlog.propagate = False
