"""The deployed network: export, bit packing, ONNX."""
