"""Atelier service: BentoML on ONNX Runtime (numpy, Pillow; no torch)."""

__version__ = "0.1.0"  # the project's version: the API's, and the exporter's in the manifest
