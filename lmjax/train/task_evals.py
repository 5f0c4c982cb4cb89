"""lm-eval tasks during training: train.eval_tasks every train.eval_tasks_every steps.

The model being trained, in its training shardings, goes to the lm-eval backend `lmjax`
(lmjax.infer.lm_eval_backend) with the training mesh: every process runs the same jitted
scoring, process 0 writes the numbers. Each metric is logged as task/<name>/<metric>.
"""
import types

from lmjax.errors import ConfigError, UsageError


def parse(spec: str) -> list[tuple[str, int | None]]:
    """'lmjax_cloze:100,lmjax_choice' -> [('lmjax_cloze', 100), ('lmjax_choice', None)]."""
    tasks = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, limit = item.partition(":")
        if limit and not (limit.isdigit() and int(limit) > 0):
            raise ConfigError(f"train.eval_tasks={spec!r}: {item!r} has limit {limit!r}; write "
                              "NAME or NAME:N with N > 0 examples")
        tasks.append((name.strip(), int(limit) if limit else None))
    if not tasks:
        raise ConfigError(f"train.eval_tasks={spec!r}: names no task")
    return tasks


def check(cfg):
    """ConfigError unless lm-eval is installed and every task exists and reads its data."""
    tasks = parse(cfg.train.eval_tasks)
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError("train.eval_tasks needs lm-eval: pip install 'lmjax[eval]'") from None
    from lmjax.infer import harness
    names = [name for name, _ in tasks]
    try:
        harness.check_tasks(harness.task_manager(names), names)
    except UsageError as e:
        raise ConfigError(f"train.eval_tasks: {e}") from None


class TaskEvals:
    def __init__(self, cfg, model, mesh, tokenizer):
        from lmjax.infer import harness
        t = cfg.train
        self.tasks = parse(t.eval_tasks)
        self.every = t.eval_tasks_every or t.eval_every
        self.harness = harness
        manager = harness.task_manager([name for name, _ in self.tasks])
        # Loaded once (YAML, templates, data); each eval only builds and scores the requests.
        self.loaded = {name: manager.load([name]) for name, _ in self.tasks}
        self.cfg, self.model, self.mesh, self.tokenizer = cfg, model, mesh, tokenizer
        self.lm = None

    def due(self, step: int, last: bool) -> bool:
        return step % self.every == 0 or last

    def __call__(self, params, step: int) -> dict:
        """{"task/<name>/<metric>": value} of every task on `params`."""
        if self.lm is None:  # built once: later calls reuse its compiled functions
            from lmjax.infer.lm_eval_backend import LmjaxLM
            run = types.SimpleNamespace(cfg=self.cfg, model=self.model, params=params,
                                        tokenizer=self.tokenizer, step=step)
            self.lm = LmjaxLM(model="(training)", run=run, mesh=self.mesh,
                              batch_size=self.cfg.train.batch_size)
        self.lm.set_params(params, step)
        metrics = {}
        for name, limit in self.tasks:
            results = self.harness.evaluate_loaded(self.lm, self.loaded[name], limit)
            metrics.update(self.harness.flat_metrics(results))
        return metrics
