"""How pixels reach a model: its ``Preprocess``, and the one function that turns images into evaluation pixels.

Every path that classifies an image goes through ``eval_pixels``: training's validation pass, ``vitkit eval``,
``vitkit predict``, export's verification and calibration, and the server. Exported files take its output
(RGB uint8, ``input_size`` square) and hold the normalisation themselves, so an app resizes and crops and
does nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

RESIZE_MODES = ("shorter", "squash")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its pixels.

    A photo becomes square in one of two ways (``resize_mode``): ``"shorter"`` resizes its shorter side to
    ``resize_size`` keeping the aspect ratio, then crops the centre square, as timm and torchvision evaluate;
    ``"squash"`` resizes both sides to ``resize_size``, as the Keras example does. Then the centre
    ``input_size`` square is kept (``crop_pct`` of the resized side), and RGB values in [0, 1] are
    normalised with ``mean`` and ``std``.
    """

    input_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    resize_mode: str = "shorter"

    def __post_init__(self):
        # frozen: coerce lists (YAML, JSON) to tuples through object.__setattr__
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.input_size < 1:
            raise ValueError(f"The input size must be 1 pixel or more, not {self.input_size}.")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], not {self.crop_pct}: it is the share of the side kept.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Unknown interpolation '{self.interpolation}'; choose {', '.join(INTERPOLATIONS)}.")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"Unknown resize mode '{self.resize_mode}'; choose {', '.join(RESIZE_MODES)}.")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std take three values each, std above 0; got {self.mean} and {self.std}.")

    @property
    def resize_size(self) -> int:
        """The side an image is resized to before the centre crop: floor(input_size / crop_pct), as timm."""
        return max(self.input_size, math.floor(self.input_size / self.crop_pct + 1e-6))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocess:
        """Exactly the fields given: a checkpoint records every one, so nothing is filled in from elsewhere."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if set(values) != fields:
            missing, extra = sorted(fields - set(values)), sorted(set(values) - fields)
            raise ValueError(f"A preprocessing record needs exactly {sorted(fields)}; missing {missing}, extra {extra}.")
        return cls(**values)

    def describe(self) -> str:
        """What is done to a photo, in one sentence (for sidecar files and logs)."""
        if self.resize_mode == "shorter":
            geometry = f"shorter side resized to {self.resize_size}, centre {self.input_size}x{self.input_size} crop"
        else:
            geometry = f"resized to {self.resize_size}x{self.resize_size}" + (
                f", centre {self.input_size}x{self.input_size} crop" if self.resize_size != self.input_size else ""
            )
        return f"RGB, {geometry} ({self.interpolation}), then (pixel / 255 - mean {list(self.mean)}) / std {list(self.std)}"


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """Resize a float batch [B, C, H, W] to ``size`` with Pillow's separable kernels (antialiased when
    shrinking; bicubic with a = -0.5, as Pillow and hence timm's evaluation). PyTorch's antialiased kernels
    are used for enlarging too: unlike its plain bilinear one, they give the same bits on any number of threads,
    and the pixels every path computes must be the same."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if interpolation == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    return F.interpolate(x, size=size, mode=interpolation, align_corners=False, antialias=True)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` of [..., H, W] (the extra pixel of an odd margin goes after, as timm)."""
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def resize_square(x: torch.Tensor, side: int, mode: str = "shorter", interpolation: str = "bilinear") -> torch.Tensor:
    """A float batch [B, C, H, W] -> [B, C, side, side]: the shorter side to ``side`` and the centre square
    (``"shorter"``), or both sides to ``side`` (``"squash"``)."""
    H, W = x.shape[-2:]
    if mode == "squash" or H == W:
        return resize(x, (side, side), interpolation)
    # the longer side in proportion, truncated as torchvision's Resize(int) does
    size = (side, int(side * W / H)) if H < W else (int(side * H / W), side)
    return center_crop(resize(x, size, interpolation), side)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round float pixels 0-255 to uint8 (bicubic overshoots, hence the clamp)."""
    return x.round().clamp_(0, 255).to(torch.uint8)


def eval_pixels(images: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> uint8 [B, 3, S, S]: what the model sees of each image, before normalisation.

    Rounded to uint8 because that is what an app holds after its own resize: the exported file and this
    function then see the same numbers. Computed in contiguous NCHW whatever the input's memory order, because
    the resampling kernels of the two orders differ in the last bit.
    """
    x = resize_square(images.float().contiguous(), p.resize_size, p.resize_mode, p.interpolation)
    return to_uint8(center_crop(x, p.input_size))


def normalize(
    pixels: torch.Tensor, p: Preprocess, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """Pixels 0-255 (uint8 or float) [B, 3, S, S] -> the float input the model takes, in its memory order."""
    mean = torch.tensor(p.mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(p.std, device=pixels.device).view(1, 3, 1, 1)
    x = (pixels.float() / 255.0 - mean) / std
    return x.contiguous(memory_format=memory_format)
