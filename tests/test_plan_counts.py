"""lmjax-plan's loop-aware counts: matmul FLOPs from the jaxpr, HBM bytes from the HLO.

XLA counts a scan's body once; the planner counts every iteration. Checked against closed forms
(6N + 12LdT, plus what each remat policy recomputes) and against XLA's own count of the same
step with its layers unrolled, on one CPU device, in-process.
"""
import jax
import pytest

from lmjax import config as config_lib, validation
from lmjax.parallel import mesh as mesh_lib
from lmjax.plan import aot, flops, hlo
from lmjax.train import step as step_lib
from tests import helpers

L, D, F, V, T, B = 4, 64, 128, 64, 32, 4
MODEL = {"model.num_layers": L, "model.d_model": D, "model.num_heads": 4, "model.d_ff": F,
         "model.vocab_size": V, "model.max_seq_len": T, "train.seq_len": T,
         "train.batch_size": B, "model.use_bias": False, "model.positions": "rope",
         "model.attention": "einsum", "model.dropout": 0.0, "mesh.data": 1, "mesh.fsdp": 1,
         "mesh.tensor": 1}
LAYER = 4 * D * D + 2 * D * F  # q, k, v, o and the two MLP kernels
MATRICES = V * D + L * LAYER  # the tied embedding is the head
TOKENS = B * T


def config(**overrides):
    cfg = config_lib.load_config(helpers.EXPERIMENT)
    config_lib.apply_overrides(cfg, {**MODEL, **overrides})
    validation.validate(cfg, 1)
    return cfg


def traced_flops(**overrides):
    """(matmul FLOPs, once per loop body) of the train step, traced: nothing compiles."""
    cfg = config(**overrides)
    step = step_lib.build(cfg, mesh_lib.make_mesh(cfg, jax.devices("cpu")[:1]))
    with step.context():
        jaxpr = step.train_step.trace(step.abstract_state(), step.abstract_batch()).jaxpr
    return flops.matmul_flops(jaxpr), flops.matmul_flops(jaxpr, once=True)


UNROLLED = {"model.scan_layers": False, "model.remat_policy": "none"}
SCANNED = {"model.scan_layers": True, "model.remat_policy": "none"}


def test_matmul_flops_are_6n_12ldt_and_what_remat_recomputes():
    train = (6 * MATRICES + 12 * L * D * T) * TOKENS
    assert traced_flops(**UNROLLED) == (train, train)
    # Once per loop body, as XLA counts: one layer of the scan, one microbatch of the loop.
    once = (6 * V * D + 6 * LAYER + 12 * D * T) * TOKENS  # the head and one layer
    assert traced_flops(**SCANNED) == (train, once)
    assert traced_flops(**SCANNED, **{"optim.grad_accum_steps": 2}) == (train, once / 2)
    # full: each block's forward again, but for the MLP's output matmul, whose result no
    # gradient reads. dots_with_no_batch_dims_saveable keeps the weight matmuls' outputs and
    # recomputes only the attention scores and values (batched dots).
    recompute = 2 * L * (4 * D * D + D * F) + 4 * L * D * T
    assert traced_flops(**{**SCANNED, "model.remat_policy": "full"})[0] == \
        train + recompute * TOKENS
    assert traced_flops(**{**SCANNED, "model.remat_policy": "dots_with_no_batch_dims_saveable"}
                        )[0] == train + 4 * L * D * T * TOKENS


@pytest.fixture(scope="module")
def steps():
    return {name: aot.compile_step(config(**overrides), jax.devices("cpu")[:1])
            for name, overrides in (("unrolled", UNROLLED), ("scanned", SCANNED))}


@pytest.mark.slow  # two compiles: ~30 CPU-seconds
def test_hbm_bytes_count_every_iteration(steps):
    unrolled, scanned = steps["unrolled"], steps["scanned"]
    # The planner's compile carries the same counts, per device (one device here).
    assert unrolled.matmul_flops == (6 * MATRICES + 12 * L * D * T) * TOKENS
    # XLA's own count of the unrolled step: the same matmuls plus element-wise work.
    assert 1.0 <= unrolled.xla_flops / unrolled.matmul_flops < 1.2
    # Once per loop body, this accounting is XLA's own (XLA:CPU's `bytes accessed`).
    for step in (unrolled, scanned):
        assert step.hbm_bytes_once == pytest.approx(step.xla_bytes, rel=0.01)
    assert unrolled.hbm_bytes == unrolled.hbm_bytes_once
    # Scanned, the once-counted bytes fall well short of the same step unrolled; with every
    # iteration they are at least the unrolled step's (the scan adds copies and slicing).
    assert scanned.hbm_bytes_once < 0.8 * unrolled.hbm_bytes
    assert scanned.hbm_bytes > unrolled.hbm_bytes


def test_trip_counts_are_read_from_the_loop_conditions():
    text = """HloModule m

%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %n = s32[] constant(12)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %y = f32[8]{0} exponential(%x)
  %g = f32[16]{0} all-gather(%y), dimensions={0}
  ROOT %t = (s32[], f32[8]{0}) tuple(%i, %y)
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %z = s32[] constant(0)
  %t = (s32[], f32[8]{0}) tuple(%z, %a)
  %w = (s32[], f32[8]{0}) while(%t), condition=%cond, body=%body
  ROOT %r = f32[8]{0} get-tuple-element(%w), index=1
}
"""
    traffic = hlo.traffic(text)
    # exponential reads and writes 32 bytes; the all-gather reads 32 and writes 64.
    assert (traffic.hbm_once, traffic.hbm) == (32 + 32 + 32 + 64, 12 * (32 + 32 + 32 + 64))
    assert (traffic.collective_once, traffic.collective) == (64, 12 * 64)
    assert flops.matmul_flops(jax.make_jaxpr(
        lambda x: jax.lax.scan(lambda c, _: (c @ c, None), x, length=5)[0])(
            jax.numpy.ones((3, 3)))) == 5 * 2 * 27
