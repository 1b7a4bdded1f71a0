"""Former home of the ONNX encoder; it lives in :mod:`enhanced_llm.semantic.embedders.onnx`."""

from enhanced_llm.semantic.embedders.onnx import OnnxEncoder, OnnxUnsupported, default_cache_dir

__all__ = ["OnnxEncoder", "OnnxUnsupported", "default_cache_dir"]
