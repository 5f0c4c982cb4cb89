"""Inference: restoring runs, KV-cache generation, evaluation (perplexity, lm-eval tasks), export."""
