"""Universal style transfer (reconstruction decoders + feature transforms): maths, models, data,
trainer, ONNX export, report."""
