"""Errors that separate the user's mistakes (exit 2, one line) from ours (exit 1)."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a file, node, option or target that cannot be used.

    The message is printed as one line on stderr, without a traceback, and the CLI exits 2.
    It should name the file, node or option at fault.
    """

    exit_code = 2


class PassError(Exception):
    """A pass produced a model that fails its own checks: a bug in edgeprune, not the user's."""

    exit_code = 1
