"""Batched augmentation on uint8 image tensors, on whatever device the batch lives (GPU included).

Each pipeline maps a [B, 3, H, W] uint8 batch to a normalized [B, 3, S, S] float batch. Random
parameters come from a ``torch.Generator`` on the CPU, so a seeded run draws the same augmentations on
any device, and a resumed run the same as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("resize-crop-flip", "keras-vit", "random-resized-crop", "none")


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Squash-resize a float batch to size x size (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    B, _, H, W = x.shape
    tops = torch.randint(0, H - size + 1, (B,), generator=generator).tolist()
    lefts = torch.randint(0, W - size + 1, (B,), generator=generator).tolist()
    return torch.stack([x[i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(zip(tops, lefts))])


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def affine(x: torch.Tensor, theta: torch.Tensor, size: int, padding_mode: str = "reflection") -> torch.Tensor:
    """Sample ``size`` x ``size`` outputs; theta [B, 2, 3] maps output coords in [-1, 1] to input coords."""
    grid = F.affine_grid(theta.to(x), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def keras_vit_theta(batch: int, generator: torch.Generator, rotation: float = 0.02, zoom: float = 0.2) -> torch.Tensor:
    """Keras RandomFlip("horizontal") + RandomRotation(0.02) + RandomZoom(0.2, 0.2) as one affine map.

    Rotation is a fraction of a full turn; a zoom factor z in [-0.2, 0.2] scales the sampled area by 1 + z
    (positive zooms out), height and width independently, as Keras does.
    """
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * rotation * 2 * math.pi
    zoom_h = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * zoom
    zoom_w = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * zoom
    flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * zoom_w * flip, -sin * zoom_h
    theta[:, 1, 0], theta[:, 1, 1] = sin * zoom_w * flip, cos * zoom_h
    return theta


def random_resized_crop_theta(
    batch: int, generator: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    """Inception-style crops (area fraction ``scale``, aspect ``ratio``) with a horizontal flip, as affine maps."""
    area = scale[0] + torch.rand(batch, generator=generator) * (scale[1] - scale[0])
    log_r = math.log(ratio[0]) + torch.rand(batch, generator=generator) * (math.log(ratio[1]) - math.log(ratio[0]))
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width and height as fractions of the image side
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


class BatchTransform:
    """uint8 [B, 3, H, W] -> normalized float [B, 3, S, S], for training (``augment``) or evaluation, in the
    memory order the model runs in (``channels_last``)."""

    def __init__(
        self,
        image_size: int,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        augment: str = "none",
        train_resize: float = 1.0,
        crop_pct: float = 1.0,
        channels_last: bool = False,
    ):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"Unknown augmentation '{augment}'; choose one of {', '.join(AUGMENTATIONS)}.")
        self.size, self.augment = image_size, augment
        self.train_resize, self.crop_pct = train_resize, crop_pct
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format  # the model's
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.float().div_(255.0)
        S = self.size
        if self.augment == "none" or generator is None:  # evaluation: resize to S / crop_pct, center crop S
            x = center_crop(resize(x, int(round(S / self.crop_pct))), S)
        elif self.augment == "resize-crop-flip":  # the seed's flowers pipeline: resize 280, crop 256, flip
            x = random_hflip(random_crop(resize(x, int(round(S * self.train_resize))), S, generator), generator)
        elif self.augment == "keras-vit":  # the seed's CIFAR pipeline: resize 72, flip, rotate, zoom
            x = affine(resize(x, S), keras_vit_theta(len(x), generator), S)
        elif self.augment == "random-resized-crop":  # the paper's ImageNet pipeline
            x = affine(x, random_resized_crop_theta(len(x), generator), S)
        x = (x - self.mean.to(x)) / self.std.to(x)
        return x.contiguous(memory_format=self.memory_format)
