"""Export to phones and servers: TFLite/LiteRT and ONNX files, verified on real images, and benchmarks.

The toolchains are optional extras (``vitkit[tflite]``, ``vitkit[onnx]``), imported only when used.
"""

from vitkit.export.api import FORMATS, QUANTIZATIONS, ExportResult, export
from vitkit.export.deploy import DeployModel, MissingExtra
from vitkit.export.verify import MIN_AGREEMENT, Verification, VerificationFailed

__all__ = [
    "FORMATS",
    "MIN_AGREEMENT",
    "QUANTIZATIONS",
    "DeployModel",
    "ExportResult",
    "MissingExtra",
    "Verification",
    "VerificationFailed",
    "export",
]
