"""The two kinds of failure a user can see, and the exit status each maps to.

`UserError` is bad input (config key, type, range, data file, recipe, checkpoint): the CLI prints its one-line message
and exits 2, never a traceback. `TrainingDiverged` is a run that went non-finite: exit 1, and no result is written as if
the run had succeeded.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input. The message is one line and names the key or file at fault."""


class ConfigError(UserError):
    """An unknown config key, a wrong type or an out-of-range value."""


class DataError(UserError):
    """A missing, corrupt or wrong-shaped data file, or labels out of range."""


class Preempted(Exception):
    """A stop signal (SIGTERM, SIGINT, SIGUSR1) arrived; a checkpoint was written. Resume to continue: exit 75."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite."""
