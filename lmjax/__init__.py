"""lmjax: decoder-only Transformer language models in JAX/Flax, from a laptop CPU to a pod."""
__version__ = "0.1.0"
