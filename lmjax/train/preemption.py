"""SIGTERM / SIGINT: finish the current step, checkpoint it, and stop, all hosts at the same step.

One process: a Python handler notes the signal and the loop asks `should_stop(step)` after
every step. Several processes: JAX's preemption service (started by jax.distributed.initialize)
owns SIGTERM, spreads the notice to every host and names one step at which all of them stop;
`should_stop` asks it through `multihost_utils.reached_preemption_sync_point`. SIGINT is turned
into a SIGTERM to this process so that Ctrl-C on one host goes through the same agreement.
A second signal of the same kind is not caught: it ends the process at once.
"""
import os
import signal

import jax

EXIT_CODES = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; the message says how to resume."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class PreemptionWatch:
    def __init__(self):
        self.signal_name = None
        self._previous = {}
        self._sync_service = jax.process_count() > 1 and _preemption_service_running()

    def __enter__(self):
        self._install(signal.SIGINT)
        if not self._sync_service:
            self._install(signal.SIGTERM)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _install(self, signum):
        try:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        except ValueError:  # not the main thread: leave signals to whoever owns them
            pass

    def _on_signal(self, signum, frame):
        self.signal_name = signal.Signals(signum).name
        # The next signal of this kind takes the default action: a way out if saving hangs.
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        if self._sync_service and signum == signal.SIGINT:
            os.kill(os.getpid(), signal.SIGTERM)

    def should_stop(self, step: int) -> bool:
        """True at the step where every process stops; call it after every step."""
        if self._sync_service:
            from jax.experimental import multihost_utils
            if multihost_utils.reached_preemption_sync_point(step):
                self.signal_name = self.signal_name or "SIGTERM"
                return True
            return False
        return self.signal_name is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal_name, 128 + signal.SIGTERM)


def _preemption_service_running() -> bool:
    try:
        from jax._src import distributed
        return distributed.global_state.preemption_sync_manager is not None
    except (ImportError, AttributeError):
        return False
