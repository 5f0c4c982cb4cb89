"""The train and eval steps, and `build`: the one wiring of model, optimizer, mesh and shardings.

The training loop, the planner, the tests and the benchmarks all get their jitted steps from
`build(cfg, mesh)`, so what they compile is the same program.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax

from lmjax.model import aux, build_model
from lmjax.parallel import shardings
from lmjax.parallel.context import context
from lmjax.train import state as state_lib, xla_options
from lmjax.train.optim import make_optimizer


# What lmjax.data's train pipeline yields per window (all int32).
BATCH_FIELDS = ("inputs", "targets", "segment_ids", "positions")


def cross_entropy(logits_BxTxV, targets_BxT, weights_BxT=None):
    """Summed next-token loss in nats and the token count, so eval can average over batches exactly."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
    if weights_BxT is None:
        weights_BxT = jnp.ones_like(losses)
    return (losses * weights_BxT).sum(), weights_BxT.sum()


def z_loss_sum(logits_BxTxV, weights_BxT=None):
    """Sum over tokens of log²Z, Z the softmax normaliser (PaLM's auxiliary z-loss)."""
    log_z = jax.nn.logsumexp(logits_BxTxV, axis=-1)
    if weights_BxT is None:
        weights_BxT = jnp.ones_like(log_z)
    return (jnp.square(log_z) * weights_BxT).sum()


def dropout_key(seed: int, step):
    """Dropout's randomness at a step: a pure function of (seed, step), so resume is exact."""
    return jax.random.fold_in(jax.random.key(seed), step)


def model_inputs(batch, mask_documents: bool):
    if mask_documents and "segment_ids" in batch:
        return batch["inputs"], batch.get("positions"), batch["segment_ids"]
    return batch["inputs"], None, None


def make_train_step(model, tx, lr_schedule, cfg):
    accum = cfg.optim.grad_accum_steps
    mask_documents = cfg.model.mask_documents
    z_loss, dropout = cfg.model.z_loss, cfg.model.dropout > 0

    def summed_loss(params, batch, rng):
        """(summed objective, (summed loss, token count, layer metrics)) of one (micro)batch.

        The objective adds the auxiliary losses layers report (lmjax.model.aux), weighted by the
        token count so that microbatches average them like the loss, and model.z_loss's log²Z.
        """
        extra = {"train": True, "rngs": {"dropout": rng}} if dropout else {}
        logits, variables = model.apply({"params": params},
                                        *model_inputs(batch, mask_documents),
                                        mutable=[aux.COLLECTION], **extra)
        total, count = cross_entropy(logits, batch["targets"], batch.get("weights"))
        count = count.astype(jnp.float32)
        aux_loss, layer_metrics = aux.collect(variables)
        objective = total + aux_loss * count
        if z_loss > 0:
            objective = objective + z_loss * z_loss_sum(logits, batch.get("weights"))
        return objective, (total, count, layer_metrics)

    def mean_loss(params, batch, rng):
        objective, (total, count, layer_metrics) = summed_loss(params, batch, rng)
        return objective / count, (total / count, layer_metrics)

    def grads_of(params, batch, rng):
        """(mean loss, metrics layers reported, gradients of the mean objective)."""
        grad_fn = jax.value_and_grad(summed_loss, has_aux=True)
        if accum == 1:
            (_, (loss, layer_metrics)), grads = jax.value_and_grad(mean_loss, has_aux=True)(
                params, batch, rng)
            return loss, layer_metrics, grads
        # Microbatches run one after another. Summed losses and gradients are divided by the
        # whole batch's token count at the end, so the update equals one big batch's even when
        # microbatches count different numbers of tokens (weights).
        micro = jax.tree.map(lambda x: x.reshape((accum, -1) + x.shape[1:]), batch)

        def body(carry, indexed):
            index, microbatch = indexed
            (_, (total, count, layer_metrics)), grads = grad_fn(
                params, microbatch, jax.random.fold_in(rng, index))
            return jax.tree.map(jnp.add, carry, (total, count, grads)), layer_metrics

        zeros = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
                 jax.tree.map(jnp.zeros_like, params))
        (total, count, grads), per_micro = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
        layer_metrics = {k: aux.reduce(k, v) for k, v in per_micro.items()}
        return total / count, layer_metrics, jax.tree.map(lambda g: g / count, grads)

    def train_step(state, batch):
        loss, layer_metrics, grads = grads_of(state.params, batch,
                                              dropout_key(cfg.seed, state.step))
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # A non-finite step never reaches the parameters: keep the old ones, report it.
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state_lib.TrainState(step=state.step + 1, params=keep(params, state.params),
                                         opt_state=keep(opt_state, state.opt_state))
        metrics = {"train_loss": loss, "grad_norm": grad_norm,
                   "learning_rate": lr_schedule(state.step), "finite": finite, **layer_metrics}
        return new_state, metrics

    return train_step


def make_eval_step(model, cfg):
    def eval_step(params, batch):
        logits = model.apply({"params": params}, *model_inputs(batch, cfg.model.mask_documents))
        return cross_entropy(logits, batch["targets"], batch.get("weights"))
    return eval_step


@dataclasses.dataclass
class Step:
    """Everything compiled training needs: the jitted steps and the shardings they run under."""

    cfg: object
    mesh: object
    rules: tuple
    model: object
    tx: object
    schedule: object
    state_shardings: state_lib.TrainState
    batch_sharding: object
    train_step: object  # jitted (state, batch) -> (state, metrics); the state is donated
    eval_step: object  # jitted (params, batch) -> (summed loss, token count)

    def context(self):
        return context(self.mesh, self.rules)

    def abstract_state(self) -> state_lib.TrainState:
        """ShapeDtypeStructs with shardings: what a checkpoint restores into, or a compile takes."""
        with self.context():
            return state_lib.abstract_state(self.model, self.tx, self.cfg, self.state_shardings)

    def abstract_batch(self) -> dict:
        """The global batch as ShapeDtypeStructs, with the fields the input pipeline yields."""
        t = self.cfg.train
        return {name: jax.ShapeDtypeStruct((t.batch_size, t.seq_len), jnp.int32,
                                           sharding=self.batch_sharding)
                for name in BATCH_FIELDS}

    def init_state(self, params=None) -> state_lib.TrainState:
        with self.context():
            return state_lib.init_state(self.model, self.tx, self.cfg, self.state_shardings,
                                        params=params)


def build(cfg, mesh) -> Step:
    """Model, optimizer and schedule from a validated config, jitted with explicit shardings."""
    rules = shardings.rules(cfg)
    model = build_model(cfg.model)
    tx, lr_schedule = make_optimizer(cfg)
    # Shardings need only the mesh and rules; outside the mesh context optax's eager
    # placeholder init also works for meshes of compile-only devices.
    state_sh = state_lib.state_shardings(model, tx, cfg, mesh, rules)
    batch_sh = shardings.batch_sharding(mesh, rules)
    options = xla_options.compiler_options(cfg)
    with context(mesh, rules):
        train_step = jax.jit(make_train_step(model, tx, lr_schedule, cfg),
                             in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None),
                             donate_argnums=0, compiler_options=options)
        eval_step = jax.jit(make_eval_step(model, cfg), in_shardings=(state_sh.params, batch_sh),
                            compiler_options=options)
    return Step(cfg, mesh, rules, model, tx, lr_schedule, state_sh, batch_sh, train_step,
                eval_step)
