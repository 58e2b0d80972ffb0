"""Feature extractors. Each exposes ``out_dim`` and documents its batch-norm policy."""
