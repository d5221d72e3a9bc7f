"""ONNX: one self-contained file with a dynamic batch, from torch.onnx's dynamo exporter; int8 with
onnxruntime's quantization tools; and a runner.

| quantize | what the file holds                                                   |
| -------- | --------------------------------------------------------------------- |
| none     | float32                                                               |
| dynamic  | uint8 weights, activations quantized at run time (MatMul, Conv)       |
| int8     | QDQ: int8 per-channel weights, uint8 activations calibrated (min/max) |

uint8 weights for dynamic quantization because onnxruntime's x86 kernels run them about twice as fast as int8
weights (0.98 vs 1.87 ms at batch 1 for the digits MobileViT-XXS, side by side); int8 weights with uint8
activations is the x86 recommendation for QDQ.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from vitkit.export.deploy import DeployModel, require
from vitkit.utils import quiet_output

ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
INPUT_NAME, OUTPUT_NAME = "pixels", "logits"


def convert_onnx(
    deploy: DeployModel, sample: torch.Tensor, path: str | Path, quantize: str, calibration: torch.Tensor | None
) -> None:
    require(*ONNX_MODULES)
    with tempfile.TemporaryDirectory() as tmp, quiet_output(), _quiet_logging():
        float_path = Path(tmp) / "float.onnx" if quantize != "none" else Path(path)
        if len(sample) == 1:  # traced at batch 1, the batch dimension would be specialised to 1
            sample = sample.expand(2, *sample.shape[1:])
        batch = torch.export.Dim("batch", min=1, max=65536)
        torch.onnx.export(
            deploy,
            (sample,),
            str(float_path),
            dynamo=True,
            external_data=False,  # weights inside the file, not in a .onnx.data beside it
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
        )
        _strip_debug_metadata(float_path)
        if quantize == "none":
            return
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared))  # shape inference and graph clean-up first
        if quantize == "dynamic":
            quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QUInt8)
        else:
            quantize_static(
                str(prepared),
                str(path),
                _Calibration(calibration.numpy()),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )


def _strip_debug_metadata(path: Path) -> None:
    """The exporter annotates every node with its Python stack trace and module path: a fifth of the file
    for MobileViT-XXS, and the exporting machine's file paths. Apps need none of it."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over batches of pixels."""

    def __init__(self, pixels: np.ndarray, batch_size: int = 32):
        self.batches = iter([pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


class _quiet_logging:
    """onnxruntime's quantizer logs a warning per LayerNorm weight it leaves alone; keep them out of the way."""

    def __enter__(self):
        self.level = logging.root.level
        logging.root.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.root.setLevel(self.level)


class OnnxRunner:
    """Runs a .onnx file with onnxruntime's CPU provider on float pixels [N, 3, H, W] 0-255."""

    def __init__(
        self,
        path: str | Path,
        layout: str = "nchw",
        threads: int | None = None,
        batch_size: int = 256,
        spin: bool = True,
    ):
        require("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        if not spin:  # a server shares the cores with decoding between calls: idle threads sleep instead
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        self.path, self.layout, self.chunk = str(path), layout, batch_size
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]
        self.batch_size = None  # any

    def describe(self) -> dict:
        return {
            "input": {
                "name": self.input.name,
                "shape": self.input.shape,
                "dtype": "float32",
                "layout": self.layout.upper(),
            },
            "output": {"name": self.output.name, "shape": self.output.shape, "dtype": "float32"},
        }

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.transpose(0, 2, 3, 1) if self.layout == "nhwc" else pixels  # [B, 3, H, W] -> [B, H, W, 3]
        return np.ascontiguousarray(x, dtype=np.float32)

    def invoke(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input.name: x})[0]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [self.invoke(self.prepare(pixels[i : i + self.chunk])) for i in range(0, len(pixels), self.chunk)]
        )
