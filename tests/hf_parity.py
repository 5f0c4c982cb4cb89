"""What the Hugging Face parity tests share: a perturbed reference model, and logits from both sides.

The reference's weights get noise added, so zero biases and unit norm gains cannot hide a mapping
bug. Callers import torch and transformers through pytest.importorskip first.
"""
import jax
import numpy as np


def perturbed_hf_model(config, directory, seed=0):
    """A float32 transformers model from `config` with noisy weights, saved to `directory`."""
    import torch
    import transformers
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(directory)
    return model


def hf_logits(model, tokens):
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


def lmjax_logits(run, tokens):
    apply = jax.jit(run.model.apply)
    return np.asarray(apply({"params": run.params}, np.asarray(tokens, np.int32)))


def random_tokens(vocab, batch=2, length=64, seed=1):
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, length))
