"""Export: ONNX file, onnxruntime check against PyTorch, latency, int8 quantization."""
from .checkpoint_export import export_checkpoint
from .int8 import QuantizationError, calibration_images, onnx_accuracy, quantize_int8
from .onnx import ExportError, LatencyMeter, export_onnx, latency, verify_onnx

__all__ = ["ExportError", "export_checkpoint", "LatencyMeter", "QuantizationError", "calibration_images", "export_onnx", "latency", "onnx_accuracy",
           "quantize_int8", "verify_onnx"]
