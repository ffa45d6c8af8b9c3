"""User-facing error types: the CLIs print these as one ``error:`` line and exit 1.

Every error that describes a problem with the user's input (a file, a flag, a config field, a
checkpoint that does not fit) derives from :class:`UserError`; modules raise their own subclasses
(``FlowFileError``, ``DatasetError``, ``ConversionError``...), ``jflow.cli`` catches them here.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A problem with what the user gave jflow; the message names the file or field."""


class InputError(UserError):
    """Bad command-line input: images, frame folders, output paths, iteration counts."""
