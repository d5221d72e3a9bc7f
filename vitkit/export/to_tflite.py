"""TFLite / LiteRT: conversion with litert-torch, weight quantization with ai-edge-quantizer, and a runner.

| quantize | what the file holds                                   | how                                      |
| -------- | ----------------------------------------------------- | ---------------------------------------- |
| none     | float32                                               | litert-torch                             |
| dynamic  | int8 weights, float activations quantized at run time | ai-edge-quantizer dynamic_wi8_afp32      |
| fp16     | float16 weights, float32 compute (GPU delegate: fp16) | ai-edge-quantizer float casting          |
| int8     | int8 weights and activations, int8 input and output   | PT2E static, calibrated, per channel     |

Only TFLite builtin ops are allowed: a file that needs the Flex (SELECT_TF_OPS) delegate or custom ops is
refused, because it bloats the app and the GPU delegate rejects it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vitkit.export.deploy import DeployModel, require
from vitkit.utils import quiet_output

TFLITE_MODULES = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")


def convert_tflite(
    deploy: DeployModel, sample: torch.Tensor, path: str | Path, quantize: str, calibration: torch.Tensor | None
) -> None:
    """Write ``deploy`` traced at ``sample``'s shape (the file's fixed input shape) to ``path``."""
    require(*TFLITE_MODULES)
    import litert_torch

    litert_torch.config.show_progress = False
    with quiet_output(), torch.no_grad():
        if quantize == "int8":
            content = _full_int8(deploy, sample, calibration)
        else:
            content = litert_torch.convert(_Named(deploy), sample_kwargs={"pixels": sample}).model_content()
            if quantize == "dynamic":
                content = _dynamic_range(content)
            elif quantize == "fp16":
                content = _float16_weights(content)
    Path(path).write_bytes(content)
    check_builtin_ops(path)


def _full_int8(deploy: DeployModel, sample: torch.Tensor, calibration: torch.Tensor) -> bytes:
    """Static int8 with litert-torch's PT2E quantizer: per-channel symmetric weights, histogram-calibrated
    activations; the file's input and output are int8 too (scale and zero point in the tensor details)."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _fixed_softmax_quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(deploy, (sample,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    batch = sample.shape[0]  # the exported graph is specialised to this batch size
    if len(calibration) < batch:
        raise ValueError(
            f"--batch-size {batch} is larger than the {len(calibration)} calibration images; use a smaller one."
        )
    for start in range(0, len(calibration) - batch + 1, batch):
        prepared(calibration[start : start + batch])
    quantized = convert_pt2e(prepared, fold_quantize=False)
    config = QuantConfig(pt2e_quantizer=quantizer)
    return litert_torch.convert(
        _Named(quantized), sample_kwargs={"pixels": sample}, quant_config=config
    ).model_content()


def _fixed_softmax_quantizer():
    """litert-torch's PT2E quantizer, plus TFLite's fixed int8 output (scale 1/256, zero point -128) for every
    softmax. litert-torch gives it only to ``aten._softmax`` nodes whose input is already annotated;
    ``torch.export`` writes ``aten.softmax.int``, so MobileViTv2's query softmax (after a split and a
    reshape) got a calibrated scale, which LiteRT's int8 kernel refuses at load time."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
    from litert_torch.quantize.pt2e_quantizer_utils import get_fixed_qparams_qspec, get_input_act_qspec
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    softmax = {torch.ops.aten.softmax.int, torch.ops.aten._softmax.default}

    class Quantizer(PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            config = self.global_config
            for node in model.graph.nodes:
                done = node.meta.get("quantization_annotation")
                if node.op == "call_function" and node.target in softmax and not (done and done._annotated):
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={node.args[0]: get_input_act_qspec(config)},
                        output_qspec=get_fixed_qparams_qspec(config),
                        _annotated=True,
                    )
            return model

    return Quantizer()


class _Named(torch.nn.Module):
    """Names the file's signature: input "pixels", output "logits" (instead of args_0 / output_0)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model(pixels)}


def _dynamic_range(content: bytes) -> bytes:
    """What the keras.io example's TFLiteConverter(optimizations=[DEFAULT]) did: int8 per-channel weights, activations
    quantized on the fly by the hybrid kernels."""
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(bytearray(content), recipe.dynamic_wi8_afp32())
    return bytes(q.quantize().quantized_model)


def _float16_weights(content: bytes) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(bytearray(content))
    q.add_weight_only_config(
        ".*", qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING
    )
    return bytes(q.quantize().quantized_model)


def op_names(path: str | Path) -> list[str]:
    """The operator kinds a .tflite file uses, by their schema names (custom ops by their custom code)."""
    require("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model(str(path))
    ops = []
    for code in model.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)  # the schema keeps both fields
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            ops.append(f"CUSTOM:{custom}")
        else:
            ops.append(names.get(builtin, str(builtin)))
    return sorted(set(ops))


def check_builtin_ops(path: str | Path) -> list[str]:
    ops = op_names(path)
    custom = [op for op in ops if op.startswith("CUSTOM:")]
    if custom:
        raise ValueError(
            f"The converted model needs non-builtin ops ({', '.join(custom)}), which phones' LiteRT runtimes "
            "and the GPU delegate do not provide; please report the model so the layer can be rewritten."
        )
    return ops


class TFLiteRunner:
    """Runs a .tflite file on float pixels [N, 3, H, W] 0-255, any N (the file's batch size is fixed: the
    batch is cut into chunks of it and the last one padded), quantizing an int8 input and dequantizing an
    int8 output as an app would."""

    def __init__(self, path: str | Path, layout: str = "nhwc", threads: int | None = None):
        require("ai_edge_litert")
        from ai_edge_litert.interpreter import Interpreter

        self.path, self.layout = str(path), layout
        with quiet_output():  # the runtime announces its XNNPACK delegate on stderr
            self.interpreter = Interpreter(model_path=self.path, num_threads=threads or torch.get_num_threads())
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch_size = int(self.input["shape"][0])

    def describe(self) -> dict:
        return {"input": _tensor_info(self.input, self.layout), "output": _tensor_info(self.output, None)}

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One call with a batch already in the file's layout, dtype and batch size."""
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """Float [B, 3, H, W] pixels -> the input tensor the file takes."""
        x = pixels.transpose(0, 2, 3, 1) if self.layout == "nhwc" else pixels  # [B, 3, H, W] -> [B, H, W, 3]
        if self.input["dtype"] != np.float32:
            scale, zero_point = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale) + zero_point, info.min, info.max)
        return np.ascontiguousarray(x, dtype=self.input["dtype"])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        B = self.batch_size
        logits = []
        for start in range(0, len(pixels), B):
            chunk = pixels[start : start + B]
            count = len(chunk)
            if count < B:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], B - count, axis=0)])
            logits.append(self.dequantize(self.invoke(self.prepare(chunk)))[:count])
        return np.concatenate(logits)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.output["dtype"] == np.float32:
            return y.copy()
        scale, zero_point = self.output["quantization"]
        return (y.astype(np.float32) - zero_point) * scale


def _tensor_info(details: dict, layout: str | None) -> dict:
    scale, zero_point = details["quantization"]
    info = {"name": details["name"], "shape": [int(s) for s in details["shape"]], "dtype": details["dtype"].__name__}
    if layout:
        info["layout"] = layout.upper()
    if scale:
        info.update(scale=float(scale), zero_point=int(zero_point))
    return info
