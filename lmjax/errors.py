"""The error types command-line entry points turn into a one-line message and exit code 2."""


class UsageError(ValueError):
    """Bad input the user can fix: the message names the field or file and what would fix it."""


class NonFiniteError(RuntimeError):
    """A NaN or Inf stopped the run: its outcome, reported in one line with exit code 1."""


class ConfigError(UsageError):
    """A config problem the user can fix; the message is one line naming field, value and fix."""
