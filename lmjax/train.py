"""The train and eval steps, and the loop that runs them: `lmjax-train` / `python -m lmjax.train`."""
import json
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from lmjax import checkpoint, config as config_lib, metrics as metrics_lib, preemption, sharding
from lmjax import state as state_lib
from lmjax.data import make_data
from lmjax.model import build_model, flops_per_token
from lmjax.optim import make_optimizer, schedule


def cross_entropy(logits_BxTxV, targets_BxT, weights_BxT=None):
    """Mean next-token loss in nats; (sum, count) so eval can average over batches exactly."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
    if weights_BxT is None:
        weights_BxT = jnp.ones_like(losses)
    return (losses * weights_BxT).sum(), weights_BxT.sum()


def model_inputs(batch, mask_documents: bool):
    if mask_documents and "segment_ids" in batch:
        return batch["inputs"], batch.get("positions"), batch["segment_ids"]
    return batch["inputs"], None, None


def make_train_step(model, tx, cfg):
    accum = cfg.optim.grad_accum_steps
    lr_schedule = schedule(cfg.optim, cfg.train.steps)
    mask_documents = cfg.model.mask_documents

    def summed_loss(params, batch):
        logits = model.apply({"params": params}, *model_inputs(batch, mask_documents))
        total, count = cross_entropy(logits, batch["targets"], batch.get("weights"))
        return total, count.astype(jnp.float32)

    def loss_fn(params, batch):
        total, count = summed_loss(params, batch)
        return total / count

    def grads_of(params, batch):
        if accum == 1:
            return jax.value_and_grad(loss_fn)(params, batch)
        # Microbatches run one after another. Summed losses and gradients are divided by the
        # whole batch's token count at the end, so the update equals one big batch's even when
        # microbatches count different numbers of tokens (weights).
        micro = jax.tree.map(lambda x: x.reshape((accum, -1) + x.shape[1:]), batch)

        def body(carry, microbatch):
            (total, count), grads = jax.value_and_grad(summed_loss, has_aux=True)(params,
                                                                                   microbatch)
            return jax.tree.map(jnp.add, carry, (total, count, grads)), None

        zeros = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
                 jax.tree.map(jnp.zeros_like, params))
        (total, count, grads), _ = jax.lax.scan(body, zeros, micro)
        return total / count, jax.tree.map(lambda g: g / count, grads)

    def train_step(state, batch):
        loss, grads = grads_of(state.params, batch)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # A non-finite step never reaches the parameters: keep the old ones, report it.
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state_lib.TrainState(step=state.step + 1, params=keep(params, state.params),
                                         opt_state=keep(opt_state, state.opt_state))
        metrics = {"train_loss": loss, "grad_norm": grad_norm,
                   "learning_rate": lr_schedule(state.step), "finite": finite}
        return new_state, metrics

    return train_step


def make_eval_step(model, cfg):
    def eval_step(params, batch):
        logits = model.apply({"params": params}, *model_inputs(batch, cfg.model.mask_documents))
        return cross_entropy(logits, batch["targets"], batch.get("weights"))
    return eval_step


class NonFiniteError(RuntimeError):
    pass


class Trainer:
    """Builds everything a run needs from a validated config; `run()` trains to train.steps."""

    def __init__(self, cfg, workdir: str):
        self.cfg, self.workdir = cfg, workdir
        self.is_main = jax.process_index() == 0
        self.mesh = sharding.make_mesh(cfg)
        self.rules = sharding.rules(cfg)
        self.model = build_model(cfg.model)
        self.tx = make_optimizer(cfg)
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
        self.data = make_data(cfg, workdir, jax.process_index(), jax.process_count())
        with self.mesh_context():
            self.state_sh = state_lib.state_shardings(self.model, self.tx, cfg, self.mesh,
                                                      self.rules)
            self.batch_sh = sharding.batch_sharding(self.mesh, self.rules)
            self.train_step = jax.jit(make_train_step(self.model, self.tx, cfg),
                                      in_shardings=(self.state_sh, self.batch_sh),
                                      out_shardings=(self.state_sh, None), donate_argnums=0)
            self.eval_step = jax.jit(make_eval_step(self.model, cfg),
                                     in_shardings=(self.state_sh.params, self.batch_sh))
        self.manager = checkpoint.make_manager(workdir, cfg.train)

    def mesh_context(self):
        return _MeshContext(self.mesh, self.rules)

    def log(self, message: str):
        if self.is_main:
            print(message, flush=True)

    def init_or_restore(self):
        """The newest readable checkpoint, read onto this mesh, or a fresh init at step 0."""
        with self.mesh_context():
            abstract = state_lib.abstract_state(self.model, self.tx, self.cfg, self.state_sh)
            found = checkpoint.restore_latest(self.manager, abstract, warn=self.warn)
            if found is None:
                params = None
                if self.cfg.init_from:  # fine-tuning: only a run with no checkpoint yet
                    from lmjax.hf.init_from import initial_params
                    params = initial_params(self.cfg, self.mesh, self.rules,
                                            self.state_sh.params, self.data.tokenizer, self.log)
                return state_lib.init_state(self.model, self.tx, self.cfg, self.state_sh,
                                           params=params), 0
        latest, state, data_item = found
        where = self.manager.directory / str(latest)
        self.data.train.set_state(checkpoint.local_data_state(data_item, str(where)))
        self.log(f"resumed from step {latest} ({where})")
        return state, latest

    def warn(self, message: str):
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def evaluate(self, params) -> float:
        total, count = 0.0, 0.0
        for batch in self.data.eval_batches():
            s, c = self.eval_step(params, sharding.global_batch(batch, self.batch_sh))
            total, count = total + float(s), count + float(c)
        return total / max(count, 1.0)

    def describe(self, state, compiled, compile_s: float):
        params = state.params
        n = state_lib.count_params(params)
        per_device = sharding.bytes_per_device(params)
        opt_bytes = sharding.bytes_per_device(state.opt_state)
        mem = compiled.memory_analysis()
        lines = [f"mesh: {sharding.describe(self.mesh)} over {jax.device_count()} "
                 f"{jax.devices()[0].platform} device(s), {jax.process_count()} process(es)",
                 f"params: {n:,} ({per_device / 2**20:.1f} MiB/device), optimizer state "
                 f"{opt_bytes / 2**20:.1f} MiB/device",
                 f"train step compiled in {compile_s:.1f} s"]
        if mem is not None:
            temp = getattr(mem, "temp_size_in_bytes", 0)
            lines[-1] += f"; compiled temp memory {temp / 2**20:.1f} MiB/device"
        for line in lines:
            self.log(line)

    def run(self) -> dict:
        cfg, t = self.cfg, self.cfg.train
        state, start = self.init_or_restore()
        self.state = state
        self.already_finished = start >= t.steps
        if self.already_finished:
            # A finished run: its metrics, summary, plot and sample stay exactly as they are.
            self.log(f"step {start} already reaches train.steps={t.steps}; nothing to do")
            return _previous_summary(self.workdir, start)
        writer = metrics_lib.MetricsWriter(self.workdir, self.is_main, cfg.metrics.tensorboard)
        writer.truncate_after(start)
        if self.is_main:
            _write(self.workdir, "config.json",
                   json.dumps(checkpoint.dump_config(cfg.to_dict()), indent=1))

        tokens_per_step = t.batch_size * t.seq_len
        flops = flops_per_token(cfg.model, t.seq_len, state_lib.matmul_params(state.params))
        peak, peak_source = metrics_lib.peak_flops_per_device(cfg.metrics.peak_flops_per_device)
        self.log(f"MFU is relative to {peak / 1e12:.3f} TFLOP/s per device ({peak_source}); "
                 f"{flops / 1e6:.2f} MFLOPs per token")

        batch = sharding.global_batch(next(self.data.train), self.batch_sh)
        with self.mesh_context():
            t0 = time.perf_counter()
            compiled = self.train_step.lower(state, batch).compile()
            self.describe(state, compiled, time.perf_counter() - t0)

        progress = _progress(start, t.steps, self.is_main and t.progress)
        pending, window_start, skipped = [], time.perf_counter(), 0
        eval_loss, train_loss, run_start = float("nan"), float("nan"), time.perf_counter()
        step = start
        with self.mesh_context(), preemption.PreemptionWatch() as watch:
            while step < t.steps:
                if step > start:
                    batch = sharding.global_batch(next(self.data.train), self.batch_sh)
                state, step_metrics = compiled(state, batch)
                step += 1
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
                        self.manager.wait_until_finished()  # the last good save completes
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
                    writer.write(step, record)
                    progress.update(step - progress.n)
                    progress.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tps:,.0f}")
                    pending, window_start = [], time.perf_counter()
                if (step % t.eval_every == 0 or last) and not stop:
                    if t.eval_steps > 0:
                        eval_loss = self.evaluate(state.params)
                        writer.write(step, {"eval_loss": eval_loss})
                        progress.write(f"step {step}: eval loss {eval_loss:.4f}") \
                            if self.is_main else None
                    window_start = time.perf_counter()
                if saving:
                    checkpoint.save(self.manager, step, state, self.data.train.get_state(),
                                    checkpoint.dump_config(cfg.to_dict()), step * tokens_per_step)
                if stop:
                    self.manager.wait_until_finished()
                    progress.close()
                    writer.close()
                    raise preemption.Preempted(
                        f"stopped on {watch.signal_name} after step {step}; checkpoint "
                        f"{self.manager.directory / str(step)} is complete. Run the same command "
                        "again to resume from it", watch.exit_code)
        self.manager.wait_until_finished()
        progress.close()
        writer.close()
        summary = {"step": step, "train_loss": train_loss, "eval_loss": eval_loss,
                   "tokens": step * tokens_per_step, "wall_time_s": time.perf_counter() - run_start,
                   "num_params": state_lib.count_params(state.params)}
        self.state = state
        return summary


class _MeshContext:
    """The mesh and the logical rules in force while tracing, so constraints resolve."""

    def __init__(self, mesh, rules):
        self.mesh, self.rules = mesh, rules

    def __enter__(self):
        self._mesh = jax.set_mesh(self.mesh)
        self._mesh.__enter__()
        self._rules = nn.logical_axis_rules(self.rules)
        self._rules.__enter__()

    def __exit__(self, *exc):
        self._rules.__exit__(*exc)
        self._mesh.__exit__(*exc)


def _progress(start, total, enabled):
    from tqdm import tqdm
    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True,
                file=sys.stdout)


def finish(trainer: Trainer, summary: dict):
    """What a person looks at after a run: a sample, the loss curve, summary.json."""
    cfg, workdir = trainer.cfg, trainer.workdir
    if cfg.train.sample_tokens > 0:
        from lmjax.generate import Generator, Sampling, generate_text
        # Every process takes part: the parameters may be sharded across all of them.
        generator = Generator(cfg, trainer.state.params, trainer.mesh)
        text = generate_text(generator, trainer.data.tokenizer, [cfg.train.sample_prompt],
                             cfg.train.sample_tokens, Sampling(temperature=0.8), cfg.seed)[0]
        if trainer.is_main:
            print("--- sample ---\n" + text + "\n--------------")
            _write(workdir, "sample.txt", text)
    if not trainer.is_main:
        return
    from lmjax.plot import plot_runs
    plot = str(epath.Path(workdir) / "loss.png")
    plot_runs([workdir], plot, title=os.path.basename(os.path.normpath(workdir)))
    _write(workdir, "summary.json", json.dumps(summary, indent=1))
    print(f"done: step {summary['step']}, train loss {summary['train_loss']:.4f}, eval loss "
          f"{summary['eval_loss']:.4f}; curves in {plot}")


def train(cfg, workdir: str) -> dict:
    if cfg.init_from:
        from lmjax.hf.init_from import adopt_architecture
        adopt_architecture(cfg, log=print if jax.process_index() == 0 else lambda _: None)
    config_lib.validate(cfg, jax.device_count())
    trainer = Trainer(cfg, workdir)
    summary = trainer.run()
    if not trainer.already_finished:
        finish(trainer, summary)
    return summary


def _write(workdir: str, name: str, text: str):
    """Writes WORKDIR/name whole or not at all; works for local and gs:// workdirs."""
    path = epath.Path(workdir) / name
    tmp = path.parent / (name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _previous_summary(workdir: str, step: int) -> dict:
    path = epath.Path(workdir) / "summary.json"
    if not path.exists():
        return {"step": step}
    return json.loads(path.read_text())


if __name__ == "__main__":
    from lmjax.main import train_main
    train_main()
