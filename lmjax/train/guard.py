"""The training loop's one handle on run reliability: the workdir lock, the hang watchdog,
goodput accounting, bounded barriers and checkpoint saves that fail cleanly.

    with RunGuard(cfg, workdir) as guard:      # takes the lock, starts the watchdog
        trainer = Trainer(cfg, workdir, guard)
        ...
Inside the loop: `guard.phase(name)` around compile / restore / eval / checkpoint work,
`guard.step_start(step)` before and `guard.step_done(step)` after each step,
`guard.metrics(step)` at each log step, `guard.saves` for checkpoints, `guard.summary(step)` at
the end. A RunGuard that is never entered (a Trainer built directly, as tests do) holds no lock
and runs no watchdog thread, but still accounts time.
"""
import contextlib
import sys

import jax

from lmjax.train import barriers, lock as lock_lib
from lmjax.train.goodput import Goodput
from lmjax.train.saves import Saves
from lmjax.train.watchdog import Watchdog

# Watchdog phase -> goodput bucket, where they differ.
_BUCKETS = {"restore": "startup", "data": "startup", "finish": "other"}


def _warn(message: str):
    print(message, file=sys.stderr, flush=True)


class RunGuard:
    def __init__(self, cfg, workdir: str, watchdog_exit=None):
        self.cfg, self.workdir = cfg, workdir
        self.is_main = jax.process_index() == 0
        self.goodput = Goodput(workdir, enabled=self.is_main)
        kwargs = {} if watchdog_exit is None else {"exit_fn": watchdog_exit}
        self.watchdog = Watchdog(cfg.train, workdir, jax.process_index(), **kwargs)
        self.saves = None
        self._stack = None
        barriers.configure(cfg.train.barrier_timeout_s)

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(lock_lib.hold(self.workdir, self.is_main, _warn))
            self._stack.enter_context(self.watchdog)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def attach(self, manager):
        """The run's checkpoint manager; saves go through `guard.saves`."""
        self.saves = Saves(manager, self.cfg.train, _warn if self.is_main else (lambda _: None),
                           self.watchdog, self.phase)

    @contextlib.contextmanager
    def phase(self, name: str):
        with self.goodput.phase(_BUCKETS.get(name, name)), self.watchdog.phase(name):
            yield

    def resumed_at(self, step: int):
        self.goodput.resumed_at(step)

    def step_start(self, step: int):
        self.goodput.enter(self.goodput.step_bucket(step))

    def step_done(self, step: int):
        self.watchdog.beat(step)
        if self.saves is not None:
            self.saves.poll()

    def finishing(self):
        """Training is over: the sample, plot and summary count as other time."""
        self.goodput.enter("other")
        self.watchdog.enter("finish")

    def metrics(self, step: int) -> dict:
        return self.goodput.metrics(step)

    def summary(self, step: int) -> dict:
        totals = self.goodput.save(step)
        return {"goodput": totals["goodput"], "goodput_buckets_s": totals["buckets_s"],
                "goodput_total_s": totals["total_s"], "lost_steps": totals["lost_steps"],
                "runs": totals["runs"]}
