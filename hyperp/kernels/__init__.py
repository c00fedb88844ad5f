"""Triton kernels for the optimizer hot path (planned; the torch path in hyperp.trainer.optim is used today)."""
