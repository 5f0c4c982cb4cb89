"""The error types command-line entry points turn into a one-line message and exit code 2."""


class UsageError(ValueError):
    """Bad input the user can fix: the message names the field or file and what would fix it."""


class NonFiniteError(RuntimeError):
    """A NaN or Inf stopped the run: its outcome, reported in one line with exit code 1."""


class RunFailure(RuntimeError):
    """The run stopped on a fault it reports in one line (a failed checkpoint save, a barrier
    that timed out, a lost workdir lease); `exit_code` says whether restarting helps."""

    exit_code = 1


class ConfigError(UsageError):
    """A config problem the user can fix; the message is one line naming field, value and fix."""
