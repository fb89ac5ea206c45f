"""Inference runtimes: one module per kind of model (encoder, decoder) and per export step.

encoder.py      sentence embeddings with eager / torch.compile / ONNX Runtime backends
onnx_export.py  torch -> ONNX export, cached by model, opset and settings
quantize.py     ONNX Runtime graph fusions and int8 dynamic quantization
decoder.py      generation settings: KV cache, compile, prompt-length buckets
"""
