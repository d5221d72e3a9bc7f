"""What an exported file computes.

An exported classifier takes RGB pixel values 0-255, already resized and cropped to its input size (what
``vitkit.preprocess.eval_pixels`` returns), and returns logits. The model's mean/std normalisation lives
inside the file, so a phone app feeds the camera's pixels as they are and cannot get the normalisation wrong.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

LAYOUTS = ("nhwc", "nchw")

# the extra that provides each optional module, for the error that tells a user what to install
EXTRAS = {
    "litert_torch": "tflite",
    "ai_edge_litert": "tflite",
    "ai_edge_quantizer": "tflite",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "fastapi": "serve",
    "uvicorn": "serve",
    "python_multipart": "serve",
    "prometheus_client": "serve",
}


class MissingExtra(ImportError):
    pass


def require(*modules: str) -> None:
    """Import-check optional toolchains up front, so a missing one fails in one sentence before any work."""
    from vitkit.utils import quiet_output

    for name in modules:
        try:
            with quiet_output():  # the toolchains greet with pages of C++ and deprecation logging
                importlib.import_module(name)
        except ImportError as e:
            extra = EXTRAS[name]
            raise MissingExtra(
                f'{name} is not installed ({e}); install the {extra} extra: pip install "vitkit[{extra}]"'
            ) from None


class DeployModel(nn.Module):
    """RGB pixels 0-255 in ``layout`` -> logits: normalisation and layout folded in front of ``model``."""

    def __init__(self, model: nn.Module, layout: str = "nhwc"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"Unknown layout '{layout}'; choose nhwc or nchw.")
        self.model, self.layout = model, layout
        p = model.preprocess
        mean, std = torch.tensor(p.mean), torch.tensor(p.std)
        # (pixel / 255 - mean) / std as one multiply-add per channel
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean / std).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            pixels = pixels.permute(0, 3, 1, 2)  # [B, H, W, 3] -> [B, 3, H, W]
        return self.model(pixels * self.scale + self.shift)


def to_layout(pixels: torch.Tensor, layout: str) -> torch.Tensor:
    """[N, 3, H, W] pixels in the layout a file takes."""
    return pixels.permute(0, 2, 3, 1).contiguous() if layout == "nhwc" else pixels  # [N, 3, H, W] -> [N, H, W, 3]
