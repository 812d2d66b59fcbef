"""Export: ONNX file, onnxruntime check against PyTorch, latency."""
from .onnx import ExportError, export_onnx, latency, verify_onnx

__all__ = ["ExportError", "export_onnx", "latency", "verify_onnx"]
