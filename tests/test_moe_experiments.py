"""Full-size MoE experiments: total and active parameter counts (abstractly, against the
published numbers and transformers' own model of the same config), and a reduced-width copy
compiled on 8 fake devices with the experiment's expert mesh."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from lmjax.config import load_config
from lmjax.model import build_model
from lmjax.train import state as state_lib
from tests.test_experiments_full_size import COMPILE, REPO

# (experiment, published total, published active, HF config class, its kwargs)
FULL_SIZE = [
    ("experiments/mixtral_8x7b.py", 46_702_792_704, 12_879_925_248, "MixtralConfig", dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
        num_experts_per_tok=2)),
    ("experiments/qwen3_30b_a3b.py", 30_532_122_624, 3_353_032_704, "Qwen3MoeConfig", dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
        num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
        num_experts=128, num_experts_per_tok=8, norm_topk_prob=True)),
]


def abstract_params(spec):
    cfg = load_config(os.path.join(REPO, spec))
    shapes = jax.eval_shape(build_model(cfg.model).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 16), np.int32))["params"]
    return cfg, state_lib.strip_boxes(shapes)


@pytest.mark.parametrize("spec, total, active, hf_class, hf_kwargs", FULL_SIZE)
def test_total_and_active_parameter_counts(spec, total, active, hf_class, hf_kwargs):
    cfg, params = abstract_params(spec)
    m, e = cfg.model, cfg.model.moe
    assert state_lib.count_params(params) == total
    # Active: every parameter but the (num_experts - top_k) unrouted experts of each layer.
    unrouted = m.num_layers * (e.num_experts - e.top_k) * 3 * m.d_model * (e.d_ff or m.d_ff)
    assert state_lib.active_params(params, m) == total - unrouted == active
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, hf_class)(**hf_kwargs)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == total


REDUCED = {"model.num_layers": 2, "model.d_model": 64, "model.num_heads": 4,
           "model.num_kv_heads": 2, "model.head_dim": 16, "model.d_ff": 128,
           "model.moe.d_ff": 128, "model.moe.num_experts": 8, "model.moe.top_k": 2,
           "model.vocab_size": 512, "model.max_seq_len": 128,
           "train.seq_len": 64, "train.batch_size": 16}


@pytest.mark.slow
@pytest.mark.parametrize("spec, mesh", [
    ("experiments/mixtral_8x7b.py", {"data": 1, "expert": 8, "fsdp": 1, "tensor": 1}),
    ("experiments/qwen3_30b_a3b.py", {"data": 1, "expert": 8, "fsdp": 1, "tensor": 1}),
])
def test_reduced_width_compiles_with_the_expert_mesh(spec, mesh):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", COMPILE, os.path.join(REPO, spec),
                          json.dumps(REDUCED)], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mesh"] == mesh and result["compute_dtype"] == "bfloat16"
    # The experts (nearly all the weights) are split 8 ways; the rest is replicated.
    assert result["param_bytes_per_device"] < 0.5 * result["param_bytes"]
