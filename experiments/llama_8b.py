"""Llama 3.1 8B shapes pre-trained with FSDP on a TPU v5p or v6e pod.

Expected, checked by tests/test_experiments_full_size.py: 8,030,261,248 parameters, Meta's
Llama 3.1 8B (model card: 8.03B; HF transformers' LlamaForCausalLM of the same config agrees).
Shapes: 32 layers, d_model 4096, 32 query heads and 8 key/value heads of 128 (GQA), SwiGLU
d_ff 14336, RMSNorm, RoPE theta 500000, no biases, untied embeddings, vocab 128256.

What to compare on a pod: the MFU lmjax-train prints in every log line (against the chip's
data-sheet peak, named in the log). MaxText publishes 43-65% MFU for Llama 8B-70B on v5p and
v6e; this config is the same model, sharding (FSDP) and precision
(bf16 compute), so that is the range to reach. No published loss applies to your data.

Memory: 8.03B f32 weights + 2 Adam moments = 96 GB, plus bf16 activations; sharded over 64+
chips that is under 2 GB per chip. Every layer's weight-matmul outputs are saved for the
backward pass (remat dots_with_no_batch_dims_saveable: about 22 GiB per 8192-token sequence
over 32 layers), and layers are scanned, so compile time does not grow with depth. What does
not shrink with more chips is one sequence's activations: the saved matmul outputs, XLA's
attention scores (32 heads x 8192^2, no flash kernel) and the 128k-vocabulary logits. Variants
set the global batch for a slice and, checked with lmjax-plan (README), what makes it fit:
  :v5p-128  (64 chips)   batch 256 x 8192 = 2M tokens; 4 microbatches, one sequence per chip
                         each: 69.5 GiB of 95.74 (one microbatch needs 155 GiB)
  :v5e-256  (256 chips)  batch 256 x 8192 = 2M tokens; remat full, tensor=2 (heads and vocab
                         split over chip pairs), 2 microbatches: one sequence per chip at a time,
                         within v5e's 15.75 GiB (fsdp=256 with XLA's attention needs 17.4
                         GiB even with full remat; with --config.model.attention=blockwise
                         and attention_block=256 it fits at 15.59 GiB: README)
  :v6e-256  (256 chips)  batch 512 x 8192 = 4M tokens (Llama 3's batch)

Commands (see launch/README.md for creating the slice and preparing data):
  python launch/tpu_vm.py run --name=pod --zone=us-east5-a --accelerator_type=v5p-128 -- \\
      lmjax-train --config=experiments/llama_8b.py:v5p-128 --workdir=gs://BUCKET/llama_8b \\
      --config.data.path=data/corpus
"""
import os

from lmjax.config import load_module

VARIANTS = {
    None: {"batch_size": 256},
    "v5p-128": {"batch_size": 256, "grad_accum_steps": 4},
    "v5e-256": {"batch_size": 256, "grad_accum_steps": 2, "remat_policy": "full", "tensor": 2},
    "v6e-256": {"batch_size": 512},
}


def _llama_config():
    # Experiment files are loaded by path, not as a package: load the shared builder the same way.
    return load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "llama_1b.py")).llama_config


def get_config(arg=None):
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}; use one of "
                         f"{', '.join(v for v in VARIANTS if v)}")
    c = _llama_config()(num_layers=32, d_model=4096, num_heads=32, num_kv_heads=8, d_ff=14336,
                        tie_embeddings=False)
    c.train.seq_len = 8192
    v = VARIANTS[arg]
    c.train.batch_size = v["batch_size"]
    c.optim.grad_accum_steps = v.get("grad_accum_steps", 1)
    c.model.remat_policy = v.get("remat_policy", c.model.remat_policy)
    c.mesh.tensor = v.get("tensor", 1)  # fsdp=-1 takes the chips tensor leaves
    return c
