"""lm-evaluation-harness tasks on an lmjax model: `lmjax-eval --tasks=...` and training-time evals.

  lmjax-eval --model=WORKDIR|EXPORT_DIR|hf:DIR --tasks=lmjax_cloze,lmjax_choice [--limit=N
             --include_path=DIR --num_fewshot=N --batch_size=N --max_length=N]

Tasks are looked up in lmjax/eval_tasks and the --include_path directories; --include_defaults
adds lm-eval's own tasks (indexing its thousands of YAMLs takes ~30 s; their data must be cached). Nothing is downloaded: run
with HF_DATASETS_OFFLINE=1, a task's data must be local (a JSONL file, or a saved HF dataset).
Prints one row per task metric, then a final JSON line {"task/<name>/<metric>": value, ...}.
"""
import json
import os

from lmjax.errors import UsageError

OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
RESULT_KEYS_SKIPPED = ("alias", "name", "sample_len", "sample_count")


def _go_offline():
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)


def task_manager(tasks, include_paths=(), include_defaults=False):
    """An lm-eval TaskManager that knows every name in `tasks`, or a UsageError naming one."""
    _go_offline()
    from lm_eval.tasks import TaskManager
    from lmjax.eval_tasks import TASKS_DIR, task_names
    for path in include_paths:
        if not os.path.isdir(path):
            raise UsageError(f"--include_path={path}: no such directory of task YAMLs")
    paths = [TASKS_DIR, *include_paths]
    manager = TaskManager(include_path=paths, include_defaults=include_defaults)
    missing = [t for t in tasks if not manager.match_tasks([t])]
    if missing:
        raise UsageError(f"--tasks: unknown task {missing[0]!r}; lmjax ships "
                         f"{', '.join(task_names())}; --include_path=DIR adds the YAMLs in DIR, "
                         "--include_defaults lm-eval's own tasks")
    return manager


def metric_name(key: str) -> str:
    """'acc,none' -> 'acc'; 'exact_match,strict-match' -> 'exact_match_strict-match'."""
    metric, _, filter_name = key.partition(",")
    return metric if filter_name in ("", "none") else f"{metric}_{filter_name}"


def flat_metrics(results: dict) -> dict:
    """{"task/<name>/<metric>": value} of lm-eval's results, standard errors left out."""
    out = {}
    for task, values in results["results"].items():
        for key, value in values.items():
            if key in RESULT_KEYS_SKIPPED or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            out[f"task/{task}/{metric_name(key)}"] = float(value)
    return out


def _first_usage_error(error: Exception):
    """The UsageError lm-eval's task loading wrapped, if any (it re-raises through layers)."""
    seen = error
    while seen is not None:
        if isinstance(seen, UsageError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def check_tasks(manager, tasks):
    """Loads the tasks once (reading and checking their data) before any model is loaded."""
    try:
        manager.load(list(tasks))
    except Exception as e:
        usage = _first_usage_error(e)
        if usage is None:
            raise
        raise UsageError(str(usage)) from None


def evaluate(lm, tasks, manager, limit=None, num_fewshot=None, log_samples=False) -> dict:
    """lm-eval's results dict for `lm` (an lm_eval LM) on `tasks`."""
    from lm_eval import simple_evaluate
    try:
        return simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                               num_fewshot=num_fewshot, bootstrap_iters=0,
                               log_samples=log_samples, random_seed=0, numpy_random_seed=0,
                               torch_random_seed=None, fewshot_random_seed=0)
    except Exception as e:
        usage = _first_usage_error(e)
        if usage is None:
            raise
        raise UsageError(str(usage)) from None


def evaluate_loaded(lm, loaded: dict, limit=None) -> dict:
    """evaluate() on tasks already loaded by manager.load (training reuses them every eval)."""
    from lm_eval.evaluator import evaluate as lm_eval_evaluate
    return lm_eval_evaluate(lm, loaded, limit=limit, bootstrap_iters=0, log_samples=False)


def split_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise UsageError("--tasks is empty; give task names separated by commas")
    return tasks


def run(args, out=print) -> dict:
    tasks = split_tasks(args.tasks)
    if args.limit is not None and args.limit <= 0:
        raise UsageError(f"--limit={args.limit}: must be > 0 (examples per task)")
    manager = task_manager(tasks, args.include_path or (), args.include_defaults)
    check_tasks(manager, tasks)
    from lmjax.infer.lm_eval_backend import LmjaxLM
    lm = LmjaxLM(model=args.model, step=args.step, batch_size=args.batch_size,
                 max_length=args.max_length or None)
    results = evaluate(lm, tasks, manager, args.limit, args.num_fewshot)
    metrics = flat_metrics(results)
    width = max(12, *(len(t) for t in results["results"]))
    out(f"{'task':<{width}}  {'metric':<24}  {'value':>12}  {'examples':>8}")
    for name in results["results"]:
        count = results.get("n-samples", {}).get(name, {}).get("effective", "")
        for key, value in metrics.items():
            _, task, metric = key.split("/", 2)
            if task == name:
                out(f"{task:<{width}}  {metric:<24}  {value:>12.4f}  {count:>8}")
    out(json.dumps(metrics))
    return metrics
