"""Datasets (class-indexed uint8 image tensors) and tensor-native episode samplers."""
