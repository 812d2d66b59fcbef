"""Export: ONNX file, onnxruntime check against PyTorch, latency, int8 quantization."""
from .int8 import QuantizationError, calibration_images, onnx_accuracy, quantize_int8
from .onnx import ExportError, LatencyMeter, export_onnx, latency, verify_onnx

__all__ = ["ExportError", "LatencyMeter", "QuantizationError", "calibration_images", "export_onnx", "latency", "onnx_accuracy",
           "quantize_int8", "verify_onnx"]
