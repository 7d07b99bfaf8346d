"""Atelier training: datasets, models, trainers, metrics and ONNX export (PyTorch)."""
