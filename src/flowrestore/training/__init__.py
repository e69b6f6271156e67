"""The training loop: optimiser, EMA weights, exact resume."""
