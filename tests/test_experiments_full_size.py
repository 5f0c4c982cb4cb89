"""Full-size experiments: parameter counts at full size (abstractly), and a reduced-width copy of
each compiled on 8 fake devices with the experiment's own mesh, dtypes, scan and remat."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from lmjax.config import load_config
from lmjax.model import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (experiment, published count, HF transformers config that builds the same model)
FULL_SIZE = [
    ("experiments/gpt2_124m.py", 124_475_904, (
        "GPT2Config", dict(vocab_size=50304, n_positions=1024, n_embd=768, n_layer=12,
                           n_head=12))),
    ("experiments/llama_1b.py", 1_235_814_400, (
        "LlamaConfig", dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                            num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                            tie_word_embeddings=True))),
    ("experiments/llama_8b.py", 8_030_261_248, (
        "LlamaConfig", dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                            num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                            tie_word_embeddings=False))),
]


def abstract_param_count(spec):
    cfg = load_config(spec)
    model = build_model(cfg.model)
    tokens = jax.ShapeDtypeStruct((1, 16), np.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("spec, published, hf", FULL_SIZE)
def test_full_size_parameter_count(spec, published, hf):
    count = abstract_param_count(os.path.join(REPO, spec))
    # Published: 124M (nanoGPT, vocab padded to 50304), Llama 3.2 1B = 1.23B, Llama 3.1 8B = 8.03B.
    assert count == published
    # Independently: the same architecture in HF transformers, built on the meta device.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    name, kwargs = hf
    config = getattr(transformers, name)(**kwargs)
    model_cls = (transformers.GPT2LMHeadModel if name == "GPT2Config"
                 else transformers.LlamaForCausalLM)
    with torch.device("meta"):
        model = model_cls(config)
    # HF lists a tied head's weight once, as lmjax does.
    assert sum(p.numel() for p in model.parameters()) == count


REDUCED = {
    "width": {"model.num_layers": 2, "model.d_model": 64, "model.num_heads": 4, "model.d_ff": 128,
              "model.vocab_size": 512, "model.max_seq_len": 128, "train.seq_len": 64,
              # 4 microbatches (llama_8b:v5p-128) of one row on each of 8 devices.
              "train.batch_size": 32},
    "llama": {"model.num_kv_heads": 2, "model.head_dim": 16},
}

COMPILE = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp
    from lmjax import config as config_lib, validation
    from lmjax.parallel import mesh as mesh_lib
    from lmjax.parallel import shardings as sharding
    from lmjax.train import state as state_lib, step as step_lib

    spec, overrides = sys.argv[1], json.loads(sys.argv[2])
    cfg = config_lib.load_config(spec)
    config_lib.apply_overrides(cfg, overrides)
    with cfg.unlocked():
        cfg.data.path = ""
    validation.validate(cfg, jax.device_count())
    mesh = mesh_lib.make_mesh(cfg)
    built = step_lib.build(cfg, mesh)
    abstract = built.abstract_state()
    with built.context():
        compiled = built.train_step.lower(abstract, built.abstract_batch()).compile()
    params = abstract.params
    print(json.dumps({
        "mesh": dict(mesh.shape),
        "params": state_lib.count_params(params),
        "param_bytes_per_device": sharding.bytes_per_device(params),
        "param_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)),
        "compute_dtype": cfg.model.dtype,
        "flops": (compiled.cost_analysis() or {}).get("flops", 0.0),
    }))
""")


@pytest.mark.parametrize("spec, mesh, sharded", [
    # Same code path as the unmarked variants beside them; slow only because each compiles.
    pytest.param("experiments/gpt2_124m.py:v4-8", {"data": 8, "expert": 1, "fsdp": 1, "tensor": 1}, False,
                 marks=pytest.mark.slow),
    ("experiments/gpt2_124m.py:v5e-8", {"data": 4, "expert": 1, "fsdp": 2, "tensor": 1}, True),
    pytest.param("experiments/llama_1b.py", {"data": 1, "expert": 1, "fsdp": 8, "tensor": 1}, True,
                 marks=pytest.mark.slow),
    pytest.param("experiments/llama_8b.py:v5p-128", {"data": 1, "expert": 1, "fsdp": 8, "tensor": 1},
                 True, marks=pytest.mark.slow),
])
def test_reduced_width_compiles_on_8_devices_with_the_intended_mesh(spec, mesh, sharded):
    overrides = dict(REDUCED["width"])
    if "llama" in spec:
        overrides.update(REDUCED["llama"])
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", COMPILE, os.path.join(REPO, spec),
                          json.dumps(overrides)], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mesh"] == mesh
    assert result["compute_dtype"] == "bfloat16"
    if sharded:
        # FSDP: each device holds about 1/fsdp of the weights (norm scales and biases are small).
        fsdp = mesh["fsdp"]
        assert result["param_bytes_per_device"] < 1.1 * result["param_bytes"] / fsdp
    else:
        assert result["param_bytes_per_device"] == result["param_bytes"]
