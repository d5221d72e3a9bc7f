"""RandAugment and TrivialAugment on a whole batch, each image drawing its own operations.

RandAugment (Cubuk et al. 2020) applies ``ops`` operations per image, chosen uniformly from the 14 below, all
at one magnitude ``m`` of 30; TrivialAugment (Müller and Hutter 2021, the "wide" ranges) applies one operation
per image at a magnitude drawn per image. The operations and their ranges are torchvision's (its
``RandAugment`` and ``TrivialAugmentWide``), except that TrivialAugment's translation is 32/224 of the side
(torchvision: 32 pixels at any size). Geometric operations fill with ``fill`` (the data set's mean colour, as
timm does) instead of black.

kornia has both policies, but its ``RandAugment`` and ``TrivialAugment`` choose one operation for the whole
batch (kornia 0.9, ``rand_selector``); here every image chooses its own, as in the papers. The images that drew
an operation are gathered and transformed together, so a batch costs one call per operation, not per image.
Every random number comes from the CPU ``generator``: a seeded run draws the same on any device.

Images are float [B, 3, H, W] with values in [0, 255] (before normalization); the result is in the same range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

POLICIES = ("none", "randaugment", "trivialaugment")

OPS = (
    "identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize",
    "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)  # fmt: skip
# operations whose direction is drawn per image (torchvision's "signed" ones)
SIGNED = {"rotate", "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y"}
# the strength at magnitude 30 of 30: (RandAugment, TrivialAugment wide)
FULL = {
    "rotate": (30.0, 135.0),  # degrees
    "shear_x": (0.3, 0.99),  # shear factor
    "shear_y": (0.3, 0.99),
    "translate_x": (150 / 331, 32 / 224),  # fraction of the side
    "translate_y": (150 / 331, 32 / 224),
    "color": (0.9, 0.99),  # blend factor 1 +- this
    "contrast": (0.9, 0.99),
    "brightness": (0.9, 0.99),
    "sharpness": (0.9, 0.99),
    "posterize": (4.0, 6.0),  # bits removed (of 8)
    "solarize": (1.0, 1.0),  # threshold 255 * (1 - this)
}
MAX_MAGNITUDE = 30  # torchvision's 31 magnitude bins, 0..30


def rand_augment(
    x: torch.Tensor, generator: torch.Generator, ops: int = 2, magnitude: int = 9, fill=(128.0, 128.0, 128.0)
) -> torch.Tensor:
    """RandAugment: ``ops`` rounds, in each of which every image applies one operation at ``magnitude``/30."""
    level = torch.full((len(x),), magnitude / MAX_MAGNITUDE)
    for _ in range(ops):
        x = apply_ops(x, torch.randint(len(OPS), (len(x),), generator=generator), level, generator, 0, fill)
    return x


def trivial_augment(x: torch.Tensor, generator: torch.Generator, fill=(128.0, 128.0, 128.0)) -> torch.Tensor:
    """TrivialAugment (wide): one operation per image, at a magnitude drawn per image from 0..30."""
    choice = torch.randint(len(OPS), (len(x),), generator=generator)
    level = torch.randint(MAX_MAGNITUDE + 1, (len(x),), generator=generator) / MAX_MAGNITUDE
    return apply_ops(x, choice, level, generator, 1, fill)


def apply_ops(
    x: torch.Tensor, choice: torch.Tensor, level: torch.Tensor, generator: torch.Generator, table: int, fill
) -> torch.Tensor:
    """Image i gets operation ``OPS[choice[i]]`` at strength ``level[i]`` (0..1) of column ``table`` of FULL."""
    signs = torch.where(torch.rand(len(x), generator=generator) < 0.5, -1.0, 1.0)  # drawn whatever the choice
    out = x.clone()
    for k, name in enumerate(OPS):
        picked = (choice == k).nonzero().flatten()
        if name == "identity" or len(picked) == 0:
            continue
        strength = level[picked] * FULL.get(name, (1.0, 1.0))[table]
        if name in SIGNED:
            strength = strength * signs[picked]
        index = picked.to(x.device)
        out[index] = OPERATIONS[name](x[index], strength.to(x), fill)
    return out


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None, None]  # [n] -> [n, 1, 1, 1], to broadcast over channels and pixels


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as PIL's convert("L"): [n, 3, H, W] -> [n, 1, H, W]."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate), clipped to the pixel range."""
    return (degenerate + _per_image(factor) * (x - degenerate)).clamp(0, 255)


def _warp(x: torch.Tensor, theta: torch.Tensor, fill) -> torch.Tensor:
    """Sample x through affine maps theta [n, 2, 3] (output coords in [-1, 1] -> input coords); outside is fill."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    fill = torch.tensor(fill, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    # zeros padding around x - fill, then + fill: the area outside the image becomes the fill colour
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _theta(strength: torch.Tensor, a, b, c, d, e, f) -> torch.Tensor:
    """[n, 2, 3] affine maps whose entries are functions of each image's strength."""
    rows = [[a, b, c], [d, e, f]]
    return torch.stack([torch.stack([fn(strength) for fn in row], -1) for row in rows], -2)


def _one(s):
    return torch.ones_like(s)


def _zero(s):
    return torch.zeros_like(s)


def rotate(x, degrees, fill):
    angle = degrees * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, _zero(angle)], -1), torch.stack([sin, cos, _zero(angle)], -1)], -2)
    return _warp(x, theta, fill)


def shear_x(x, shear, fill):
    # about the top row (y = -1), as torchvision and PIL shear: x_in = x_out + shear * (y_out + 1)
    return _warp(x, _theta(shear, _one, lambda s: s, lambda s: s, _zero, _one, _zero), fill)


def shear_y(x, shear, fill):
    # about the left column (x = -1): y_in = y_out + shear * (x_out + 1)
    return _warp(x, _theta(shear, _one, _zero, _zero, lambda s: s, _one, lambda s: s), fill)


def translate_x(x, fraction, fill):
    return _warp(x, _theta(fraction, _one, _zero, lambda s: 2 * s, _zero, _one, _zero), fill)  # [-1, 1] spans 2


def translate_y(x, fraction, fill):
    return _warp(x, _theta(fraction, _one, _zero, _zero, _zero, _one, lambda s: 2 * s), fill)


def auto_contrast(x, _strength, _fill):
    """Stretch each channel to the full range (channels with a single value are kept)."""
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    flat = high <= low
    scale = torch.where(flat, 1.0, 255 / (high - low).clamp(min=1e-6))
    return torch.where(flat, x, (x - low) * scale).clamp(0, 255)


def equalize(x, _strength, _fill):
    """PIL's ImageOps.equalize per channel, on all channels of all images at once."""
    n, c, h, w = x.shape
    q = x.round().clamp(0, 255).long().reshape(n * c, h * w)  # [n, c, H, W] -> [n*c, H*W]
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
    # PIL: step = (pixels - count of the highest value present) // 255; a channel with step 0 is left alone
    last = 255 - (hist > 0).flip(1).float().argmax(1, keepdim=True)
    step = ((h * w - hist.gather(1, last)) // 255).clamp(min=0)
    lut = (hist.cumsum(1) + step // 2) // step.clamp(min=1)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], 1).clamp(0, 255)  # value v maps to lut[v]
    out = torch.where(step > 0, lut.gather(1, q), q.float())
    return out.reshape(n, c, h, w).to(x.dtype)  # [n*c, H*W] -> [n, c, H, W]


def solarize(x, fraction, _fill):
    threshold = _per_image(255 * (1 - fraction))
    return torch.where(x >= threshold, 255 - x, x)


def posterize(x, bits_removed, _fill):
    step = _per_image(2 ** bits_removed.round())  # keep the top 8 - bits_removed bits of each 8-bit value
    return torch.div(x.round().clamp(0, 255), step, rounding_mode="floor") * step


def color(x, strength, _fill):
    return _blend(x, _gray(x), 1 + strength)


def contrast(x, strength, _fill):
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), 1 + strength)


def brightness(x, strength, _fill):
    return _blend(x, torch.zeros_like(x[:, :1]), 1 + strength)


def sharpness(x, strength, _fill):
    """PIL's SHARPEN-smoothed blend: the 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, the border kept as is."""
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(3, 1, 3, 3)
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = F.conv2d(x, kernel, groups=3)
    return _blend(x, smooth, 1 + strength)


OPERATIONS = {
    "auto_contrast": auto_contrast, "equalize": equalize, "rotate": rotate, "solarize": solarize, "color": color,
    "posterize": posterize, "contrast": contrast, "brightness": brightness, "sharpness": sharpness,
    "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x, "translate_y": translate_y,
}  # fmt: skip
