"""Atelier service: BentoML on ONNX Runtime (numpy, Pillow; no torch)."""
