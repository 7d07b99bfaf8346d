"""Fast arbitrary style transfer (AdaIN): maths, models, data, trainer and ONNX export."""
