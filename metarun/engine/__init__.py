"""Training, evaluation and checkpointing: the only code that updates weights or writes files."""
