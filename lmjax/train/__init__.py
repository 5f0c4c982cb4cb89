"""Training: the step (loss, grads, update), the loop, the optimizer, checkpoints, metrics."""
