"""Atelier service: BentoML on ONNX Runtime (numpy, Pillow; no torch)."""

__version__ = "0.1.0"  # the service and its API; the manifest records the exporter's own
