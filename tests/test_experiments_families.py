"""The open-family experiments: full-size parameter counts against transformers (meta device, from
the published config.json values), and each reduced variant trained 50 steps on 8 fake devices
(fsdp=4 x tensor=2) with the losses of 1 device."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

if __name__ != "__main__":
    from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = int(os.environ.get("FAMILY_STEPS", 50))

# experiment -> (published count, transformers config class, the published config.json values)
FULL_SIZE = {
    "llama3_2_1b": (1_235_814_400, "LlamaConfig", dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
        max_position_embeddings=131072, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192})),
    "llama3_1_8b": (8_030_261_248, "LlamaConfig", dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
        max_position_embeddings=131072)),
    "qwen2_5_0_5b": (494_032_768, "Qwen2Config", dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
        max_position_embeddings=32768)),
    "qwen3_0_6b": (596_049_920, "Qwen3Config", dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
        max_position_embeddings=40960)),
    "gemma3_1b": (999_885_952, "Gemma3TextConfig", dict(
        vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
        query_pre_attn_scalar=256, max_position_embeddings=32768)),
    "mistral_7b": (7_241_732_096, "MistralConfig", dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, sliding_window=4096,
        tie_word_embeddings=False, max_position_embeddings=32768)),
}
FAST = "gemma3_1b"  # the representative CI case: every Gemma feature, mixed local layers


def spec(name, variant=None):
    path = os.path.join(REPO, "experiments", f"{name}.py")
    return f"{path}:{variant}" if variant else path


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_parameter_count_equals_transformers(name):
    import jax
    from lmjax.config import load_config
    from lmjax.model import build_model
    cfg = load_config(spec(name, "full"))
    model = build_model(cfg.model)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 16), np.int32))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    published, config_name, fields = FULL_SIZE[name]
    assert count == published
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, config_name)(**fields)
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in reference.parameters()) == count  # tied heads counted once


def train_losses(names):
    """In the 8-device process: STEPS steps of each reduced variant on 1 device and on
    fsdp=4 x tensor=2, from the same weights and batches."""
    import jax
    from lmjax import validation
    from lmjax.config import apply_overrides, load_config
    from lmjax.model.layers import SCALE_OFFSET
    from lmjax.train.state import abstract_params
    from tests import helpers
    results = {}
    for name in names:
        runs = {}
        params = None
        for mesh, devices in (("one", jax.devices()[:1]), ("fsdp4_tensor2", jax.devices())):
            cfg = load_config(spec(name, "reduced"))
            shape = (1, 1, 1) if mesh == "one" else (1, 4, 2)
            apply_overrides(cfg, {"mesh.data": shape[0], "mesh.fsdp": shape[1],
                                  "mesh.tensor": shape[2], "data.path": "",
                                  "optim.warmup_steps": 5, "train.steps": STEPS})
            validation.validate(cfg, len(devices))
            parts = helpers.TrainParts(cfg, devices)
            if params is None:
                shapes = helpers.strip_boxes(abstract_params(parts.model, cfg))
                # Gemma's (1 + w) norms store w, which lives around 0.
                center = 0.0 if cfg.model.norm in SCALE_OFFSET else 1.0
                params = helpers.randomize(shapes, seed=0, std=0.02, scale_center=center)
            state = parts.init(params)
            losses = []
            for step in range(STEPS):
                state, metrics = parts.step(state, helpers.random_tokens(cfg, seed=step % 4))
                losses.append(float(metrics["train_loss"]))
            runs[mesh] = {"losses": losses, "mesh": dict(parts.mesh.shape)}
        results[name] = runs
    print("RESULTS " + json.dumps(results))


_RESULTS = {}


def results_for(name):
    group = (FAST,) if name == FAST else tuple(n for n in FULL_SIZE if n != FAST)
    if group not in _RESULTS:
        env = helpers.cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *group], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
        _RESULTS[group] = json.loads(line[len("RESULTS "):])
    return _RESULTS[group][name]


@pytest.mark.slow  # 8-device training; CI runs the same kind in test_sharding
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == FAST else pytest.mark.slow)
                                  for n in FULL_SIZE])
def test_reduced_variant_trains_on_fsdp4_tensor2_as_on_one_device(name):
    runs = results_for(name)
    mesh = runs["fsdp4_tensor2"]["mesh"]
    assert {axis: size for axis, size in mesh.items() if size > 1} == {"fsdp": 4, "tensor": 2}
    one, sharded = runs["one"]["losses"], runs["fsdp4_tensor2"]["losses"]
    assert len(one) == STEPS and np.mean(one[-4:]) < np.mean(one[:4]) - 0.1  # it trains
    np.testing.assert_allclose(sharded, one, rtol=1e-5, atol=0)


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    train_losses(sys.argv[1:])
