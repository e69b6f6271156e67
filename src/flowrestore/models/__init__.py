"""Networks and their checkpoints (tensors and plain data, loaded with weights_only=True)."""
