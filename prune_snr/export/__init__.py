"""Export: ONNX file, onnxruntime check against PyTorch, latency, int8 quantization."""

from ..errors import ExportError
from ..latency import latency
from ..onnx_io import export_onnx
from .api import export
from .checkpoint_export import export_checkpoint
from .int8 import QuantizationError, calibration_images, onnx_accuracy, quantize_int8
from .onnx import verify_onnx

# export_onnx, latency and ExportError live below the stages (prune times candidates with them too);
# they stay the export stage's public names.
__all__ = [
    "ExportError",
    "export",
    "export_checkpoint",
    "QuantizationError",
    "calibration_images",
    "export_onnx",
    "latency",
    "onnx_accuracy",
    "quantize_int8",
    "verify_onnx",
]
