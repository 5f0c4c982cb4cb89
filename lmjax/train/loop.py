"""The training loop: `lmjax-train` / `python -m lmjax.train`."""
import os
import sys
import time

import jax
import numpy as np
from etils import epath

from lmjax import io, validation
from lmjax.cli import check_workdir
from lmjax.errors import NonFiniteError, UsageError
from lmjax.data import make_data
from lmjax.model import aux, flops_per_token
from lmjax.parallel import mesh as mesh_lib, shardings
from lmjax.train import (checkpoint, compile_cache, host_memory, memory, mfu, preemption,
                         profile, xla_options)
from lmjax.train import metrics as metrics_lib
from lmjax.train import state as state_lib
from lmjax.train import guard as guard_lib
from lmjax.train import step as step_lib, undo


class Trainer:
    """Builds everything a run needs from a validated config; `run()` trains to train.steps."""

    def __init__(self, cfg, workdir: str, guard: guard_lib.RunGuard | None = None):
        self.cfg, self.workdir = cfg, workdir
        self.guard = guard or guard_lib.RunGuard(cfg, workdir)
        self.is_main = jax.process_index() == 0
        # The data first: its checks (too few tokens, a tokenizer larger than the model's
        # vocabulary) refuse a run before anything is traced or compiled.
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
        self.data = make_data(cfg, workdir, jax.process_index(), jax.process_count())
        if cfg.train.sample_tokens > 0:  # refused now, not after training
            try:
                self.data.tokenizer.encode(cfg.train.sample_prompt)
            except UsageError as e:
                raise UsageError(f"train.sample_prompt={cfg.train.sample_prompt!r}: {e}") from None
        self.mesh = mesh_lib.make_mesh(cfg)
        self.step = step_lib.build(cfg, self.mesh)
        self.model, self.tx = self.step.model, self.step.tx
        self.state_sh, self.batch_sh = self.step.state_shardings, self.step.batch_sharding
        self.train_step, self.eval_step = self.step.train_step, self.step.eval_step
        self.manager = checkpoint.make_manager(workdir, cfg.train)
        self.guard.attach(self.manager)
        self.task_evals = None
        if cfg.train.eval_tasks:
            from lmjax.train.task_evals import TaskEvals
            self.task_evals = TaskEvals(cfg, self.model, self.mesh, self.data.tokenizer)

    def mesh_context(self):
        return self.step.context()

    def log(self, message: str):
        if self.is_main:
            print(message, flush=True)

    def init_or_restore(self):
        """The newest readable checkpoint, read onto this mesh, or a fresh init at step 0."""
        with self.mesh_context():
            abstract = self.step.abstract_state()
            with self.guard.phase("restore"):
                found = checkpoint.restore_latest(self.manager, abstract, warn=self.warn)
            if found is None and self.cfg.init_from.startswith("checkpoint:"):
                return self.branch(abstract)
            if found is None:
                params = None
                if self.cfg.init_from:  # fine-tuning: only a run with no checkpoint yet
                    from lmjax.hf.init_from import initial_params
                    params = initial_params(self.cfg, self.mesh, self.step.rules,
                                            self.state_sh.params, self.data.tokenizer, self.log)
                return self.step.init_state(params), 0
        latest, state, data_item = found
        where = self.manager.directory / str(latest)
        self.data.train.set_state(checkpoint.local_data_state(data_item, str(where)))
        self.log(f"resumed from step {latest} ({where})")
        return state, latest

    def branch(self, abstract):
        """init_from=checkpoint:DIR@STEP on a run with no checkpoint of its own: DIR's whole
        train state and data position at STEP, so the run continues that one exactly."""
        from lmjax.hf.init_from import checkpoint_source
        source_dir, step = checkpoint_source(self.cfg.init_from)
        source = checkpoint.make_manager(source_dir, read_only=True)
        try:
            checkpoint.check_compatible(source, step, abstract)
            state, data_item = checkpoint.restore_step(source, step, abstract)
        finally:
            source.close()
        where = f"{checkpoint.checkpoint_dir(source_dir)}/{step}"
        self.data.train.set_state(checkpoint.local_data_state(data_item, where))
        self.log(f"branched from step {step} of {source_dir} ({where})")
        return state, step

    def warn(self, message: str):
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def evaluate(self, params) -> float:
        return self.evaluate_sources(params)["eval_loss"]

    def evaluate_sources(self, params) -> dict:
        """{"eval_loss": the whole held-out set, "eval_loss/<source>": each mixture source's}."""
        sources = self.data.eval_sources or {"": self.data.eval_batches}
        sums = {}
        for name, batches in sources.items():
            total, count = 0.0, 0.0
            for batch in batches():
                s, c = self.eval_step(params, shardings.global_batch(batch, self.batch_sh))
                total, count = total + float(s), count + float(c)
            sums[name] = (total, count)
        total, count = (sum(v[i] for v in sums.values()) for i in (0, 1))
        out = {"eval_loss": total / max(count, 1.0)}
        if self.data.eval_sources:
            out.update({f"eval_loss/{name}": t / max(c, 1.0) for name, (t, c) in sums.items()})
        return out

    def release_training(self):
        """Lets go of what only training needed (the optimizer state, the train and eval
        executables) before the closing sample and plot, so the end of a run adds to the
        process's peak memory only what those two need (baby: +15 MiB instead of +50)."""
        self.state = self.state.replace(opt_state=None)
        self.train_step.clear_cache()
        self.eval_step.clear_cache()
        host_memory.release_freed_host_memory()

    def summary_from_metrics(self, state, step: int) -> dict:
        """The summary of a run that reached its last step in an earlier process: its losses as
        metrics.jsonl logged them (the eval is rerun if its last one was not logged)."""
        from lmjax.study.plot import read_metrics
        records = read_metrics(self.workdir)
        train_loss = next((r["train_loss"] for r in reversed(records) if "train_loss" in r),
                          float("nan"))
        eval_loss = next((r["eval_loss"] for r in reversed(records)
                          if "eval_loss" in r and r["step"] == step), None)
        if eval_loss is None:
            eval_loss = float("nan")
            if self.cfg.train.eval_steps > 0:
                with self.mesh_context(), self.guard.phase("eval"):
                    eval_loss = self.evaluate_sources(state.params)["eval_loss"]
        return {"step": step, "train_loss": train_loss, "eval_loss": eval_loss,
                "tokens": step * self.cfg.train.batch_size * self.cfg.train.seq_len,
                "wall_time_s": 0.0,  # this process trained no step
                "num_params": state_lib.count_params(state.params),
                "num_active_params": state_lib.active_params(state.params, self.cfg.model)}

    def describe(self, state, batch, compiled, compile_s: float):
        params = state.params
        n = state_lib.count_params(params)
        active = state_lib.active_params(params, self.cfg.model)
        per_device = shardings.bytes_per_device(params)
        opt_bytes = shardings.bytes_per_device(state.opt_state)
        mem = compiled.memory_analysis()
        lines = [f"mesh: {mesh_lib.describe(self.mesh)} over {jax.device_count()} "
                 f"{jax.devices()[0].platform} device(s), {jax.process_count()} process(es)",
                 f"params: {n:,}" + (f" total, {active:,} active per token" if active != n else "")
                 + f" ({per_device / 2**20:.1f} MiB/device), optimizer state "
                 f"{opt_bytes / 2**20:.1f} MiB/device",
                 f"train step compiled in {compile_s:.1f} s"]
        if mem is not None:
            temp = getattr(mem, "temp_size_in_bytes", 0)
            lines[-1] += f"; compiled temp memory {temp / 2**20:.1f} MiB/device"
            # The same count lmjax-plan makes ahead of time, so the two can be compared.
            lines.append(memory.describe(memory.footprint(compiled, state, batch)))
        for line in lines:
            self.log(line)

    def run(self, restored=None) -> dict:
        """Trains from `restored` (init_or_restore's result), or what init_or_restore gives."""
        cfg, t = self.cfg, self.cfg.train
        state, start = restored or self.init_or_restore()
        self.state = state
        self.guard.resumed_at(start)
        self.already_finished = start >= t.steps
        if self.already_finished:
            previous = _previous_summary(self.workdir)
            if previous is not None:
                # A finished run: its metrics, summary, plot and sample stay exactly as they are.
                self.log(f"step {start} already reaches train.steps={t.steps}; nothing to do")
                return previous
            # Stopped after its last checkpoint but before its summary: finish() completes it,
            # so a sweep waiting for summary.json does not retry it forever.
            self.log(f"step {start} already reaches train.steps={t.steps}; the run stopped "
                     "before its summary, which is written now")
            self.already_finished = False
            return self.summary_from_metrics(state, start)
        writer = metrics_lib.MetricsWriter(cfg, self.workdir, self.is_main)
        writer.truncate_after(start)
        if self.is_main:
            io.write_json(epath.Path(self.workdir) / "config.json",
                          checkpoint.dump_config(cfg.to_dict()))

        tokens_per_step = t.batch_size * t.seq_len
        flops = flops_per_token(cfg.model, t.seq_len,
                                state_lib.matmul_params(state.params, cfg.model))
        peak, peak_source = mfu.peak_flops_per_device(cfg.metrics.peak_flops_per_device)
        self.log(f"MFU is relative to {peak / 1e12:.3f} TFLOP/s per device ({peak_source}); "
                 f"{flops / 1e6:.2f} MFLOPs per token")

        batch = shardings.global_batch(next(self.data.train), self.batch_sh)
        host_memory.release_freed_host_memory()  # the init's compile and the matmul peak's buffers
        with self.mesh_context(), self.guard.phase("compile"):
            t0 = time.perf_counter()
            compiled = self.train_step.lower(state, batch).compile()
            self.describe(state, batch, compiled, time.perf_counter() - t0)
        host_memory.release_freed_host_memory()

        progress = _progress(start, t.steps, self.is_main and t.progress)
        pending, window_start, skipped = [], time.perf_counter(), 0
        eval_loss, train_loss, run_start = float("nan"), float("nan"), time.perf_counter()
        step = start
        with self.mesh_context(), preemption.PreemptionWatch() as watch, \
                profile.StepProfile(cfg, self.workdir, start, self.log) as profiler:
            while step < t.steps:
                self.guard.step_start(step + 1)
                if step > start:
                    batch = shardings.global_batch(next(self.data.train), self.batch_sh)
                with profiler.step(step + 1):
                    state, step_metrics = compiled(state, batch)
                step += 1
                profiler.step_done(step, step_metrics, compiled, self.is_main)
                self.guard.step_done(step)
                pending.append(step_metrics)
                last = step == t.steps
                # Every host asks every step, so all of them stop at the same one.
                stop = watch.should_stop(step)
                saving = step % t.checkpoint_every == 0 or last or stop
                # Metrics are flushed (and checked for NaN) before any save.
                if step % t.log_every == 0 or saving:
                    values = jax.device_get(pending)
                    bad = [start_step for start_step, m in
                           zip(range(step - len(values) + 1, step + 1), values) if not m["finite"]]
                    if bad and t.nonfinite == "error":
                        self.guard.saves.wait()  # the last good save completes
                        raise NonFiniteError(
                            f"non-finite loss or gradient norm at step {bad[0]}; the update was "
                            "not applied and no checkpoint was written. Lower optim.lr, check the "
                            "data, or set train.nonfinite=skip")
                    skipped += len(bad)
                    elapsed = time.perf_counter() - window_start
                    finite_losses = [float(m["train_loss"]) for m in values if m["finite"]]
                    train_loss = float(np.mean(finite_losses)) if finite_losses else float("nan")
                    tps = len(values) * tokens_per_step / elapsed
                    record = {"train_loss": train_loss,
                              "grad_norm": float(values[-1]["grad_norm"]),
                              "learning_rate": float(values[-1]["learning_rate"]),
                              "tokens_per_sec": tps,
                              "mfu": tps * flops / (peak * jax.device_count()),
                              "tokens": step * tokens_per_step}
                    if t.nonfinite == "skip":
                        record["skipped_steps"] = skipped
                    record.update(_layer_metrics(values))
                    record.update(self.guard.metrics(step))
                    writer.write(step, record)
                    progress.update(step - progress.n)
                    progress.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tps:,.0f}")
                    pending, window_start = [], time.perf_counter()
                if (step % t.eval_every == 0 or last) and not stop:
                    if t.eval_steps > 0:
                        with self.guard.phase("eval"):
                            losses = self.evaluate_sources(state.params)
                        host_memory.release_freed_host_memory()  # the eval step's first compile
                        eval_loss = losses["eval_loss"]
                        writer.write(step, losses)
                        progress.write(f"step {step}: eval loss {eval_loss:.4f}") \
                            if self.is_main else None
                    window_start = time.perf_counter()
                if self.task_evals and self.task_evals.due(step, last) and not stop:
                    with self.guard.phase("eval"):
                        writer.write(step, self.task_evals(state.params, step))
                    window_start = time.perf_counter()
                if saving:
                    self.guard.saves.save(step, state, self.data.train.get_state(),
                                          checkpoint.dump_config(cfg.to_dict()),
                                          step * tokens_per_step)
                if stop:
                    self.guard.saves.wait()
                    progress.close()
                    writer.close()
                    raise preemption.Preempted(
                        f"stopped on {watch.signal_name} after step {step}; checkpoint "
                        f"{self.manager.directory / str(step)} is complete. Run the same command "
                        "again to resume from it", watch.exit_code)
        self.guard.saves.wait()
        progress.close()
        writer.close()
        summary = {"step": step, "train_loss": train_loss, "eval_loss": eval_loss,
                   "tokens": step * tokens_per_step, "wall_time_s": time.perf_counter() - run_start,
                   "num_params": state_lib.count_params(state.params),
                   "num_active_params": state_lib.active_params(state.params, cfg.model)}
        self.state = state
        return summary


STEP_METRICS = ("train_loss", "grad_norm", "learning_rate", "finite")


def _layer_metrics(values) -> dict:
    """What layers reported (lmjax.model.aux, e.g. moe/*), combined over the logged steps."""
    names = [k for k in values[-1] if k not in STEP_METRICS]
    good = [m for m in values if m["finite"]] or values
    return {k: float(aux.reduce(k, np.asarray([m[k] for m in good]))) for k in names}


def _progress(start, total, enabled):
    from tqdm import tqdm
    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True,
                file=sys.stdout)


def finish(trainer: Trainer, summary: dict):
    """What a person looks at after a run: a sample, the loss curve, summary.json."""
    cfg, workdir = trainer.cfg, trainer.workdir
    trainer.guard.finishing()
    trainer.release_training()
    if cfg.train.sample_tokens > 0:
        from lmjax.infer.generate import Generator, Sampling, generate_text
        # Every process takes part: the parameters may be sharded across all of them.
        generator = Generator(cfg, trainer.state.params, trainer.mesh, compile_fast=True)
        text = generate_text(generator, trainer.data.tokenizer, [cfg.train.sample_prompt],
                             cfg.train.sample_tokens, Sampling(temperature=0.8), cfg.seed)[0]
        if trainer.is_main:
            print("--- sample ---\n" + text + "\n--------------")
            io.write_text(epath.Path(workdir) / "sample.txt", text)
    if not trainer.is_main:
        return
    from lmjax.study.plot import plot_runs, plot_tasks
    plot = str(epath.Path(workdir) / "loss.png")
    plot_runs([workdir], plot, title=os.path.basename(os.path.normpath(workdir)))
    summary.update(trainer.guard.summary(summary["step"]))
    if cfg.train.eval_tasks:
        plot_tasks(workdir, str(epath.Path(workdir) / "tasks.png"))
    io.write_json(epath.Path(workdir) / "summary.json", summary)
    print(f"done: step {summary['step']}, train loss {summary['train_loss']:.4f}, eval loss "
          f"{summary['eval_loss']:.4f}; curves in {plot}")


def train(cfg, workdir: str) -> dict:
    """Checks the config (adopting an init_from architecture first), then trains it."""
    validation.prepare(cfg, jax.device_count())
    return run(cfg, workdir)


def run(cfg, workdir: str) -> dict:
    """Trains a config that lmjax.validation.prepare has already checked.

    A run refused in its setup (data too short, another model's checkpoints) removes what it
    created: the workdir itself, WORKDIR/data prepared on first use, checkpoints/. A run refused
    because another one holds the workdir touches nothing.
    """
    # Before the first computation, while XLA's threads have not yet allocated.
    host_memory.configure_host_allocator(cfg.train.host_allocator)
    compile_cache.use_compile_cache(  # before the first compile
        cfg.train.compile_cache_dir, dumping=xla_options.dumps(cfg.train.xla_options))
    xla_options.check(cfg.train.xla_options)
    new = undo.NewEntries(workdir)
    refused_in_setup = False
    try:
        check_workdir(workdir)
        with guard_lib.RunGuard(cfg, workdir) as guard:
            try:
                trainer = Trainer(cfg, workdir, guard)
                restored = trainer.init_or_restore()
            except UsageError:
                refused_in_setup = True
                raise
            summary = trainer.run(restored)
            if not trainer.already_finished:
                finish(trainer, summary)
    except UsageError:
        if refused_in_setup:  # once the guard has let go of the workdir
            new.remove()
        raise
    return summary


def _previous_summary(workdir: str) -> dict | None:
    path = epath.Path(workdir) / "summary.json"
    return io.read_json(path) if path.exists() else None
