"""Training augmentation, batched on uint8 image tensors, on whatever device the batch lives (GPU included).

Each pipeline maps a [B, 3, H, W] uint8 batch to a normalized [B, 3, S, S] float batch. Random
parameters come from a ``torch.Generator`` on the CPU, so a seeded run draws the same augmentations on
any device, and a resumed run the same as an uninterrupted one. Evaluation has no pipeline of its own here:
it is ``vitkit.preprocess.eval_pixels``, which ``augment="none"`` also uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vitkit.data import autoaugment
from vitkit.preprocess import Preprocess, eval_pixels, normalize, resize_square

AUGMENTATIONS = ("resize-crop-flip", "keras-vit", "random-resized-crop", "none")


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    B, _, H, W = x.shape
    tops = torch.randint(0, H - size + 1, (B,), generator=generator).tolist()
    lefts = torch.randint(0, W - size + 1, (B,), generator=generator).tolist()
    return torch.stack([x[i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(zip(tops, lefts))])


def flip_signs(batch: int, generator: torch.Generator, enabled: bool) -> torch.Tensor:
    """-1 (mirror) or 1 per image, each with probability 1/2; all 1 when flips are off (the draw is made
    either way, so turning flips off changes no other random choice)."""
    signs = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    return signs if enabled else torch.ones(batch)


def random_hflip(x: torch.Tensor, generator: torch.Generator, enabled: bool = True) -> torch.Tensor:
    flip = (flip_signs(x.shape[0], generator, enabled) < 0).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def affine(x: torch.Tensor, theta: torch.Tensor, size: int, padding_mode: str = "reflection") -> torch.Tensor:
    """Sample ``size`` x ``size`` outputs; theta [B, 2, 3] maps output coords in [-1, 1] to input coords."""
    grid = F.affine_grid(theta.to(x), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def keras_vit_theta(
    batch: int, generator: torch.Generator, rotation: float = 0.02, zoom: float = 0.2, hflip: bool = True
) -> torch.Tensor:
    """Keras RandomFlip("horizontal") + RandomRotation(0.02) + RandomZoom(0.2, 0.2) as one affine map.

    Rotation is a fraction of a full turn; a zoom factor z in [-0.2, 0.2] scales the sampled area by 1 + z
    (positive zooms out), height and width independently, as Keras does.
    """
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * rotation * 2 * math.pi
    zoom_h = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * zoom
    zoom_w = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * zoom
    flip = flip_signs(batch, generator, hflip)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * zoom_w * flip, -sin * zoom_h
    theta[:, 1, 0], theta[:, 1, 1] = sin * zoom_w * flip, cos * zoom_h
    return theta


def random_resized_crop_theta(
    batch: int, generator: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: bool = True
) -> torch.Tensor:
    """Inception-style crops (area fraction ``scale``, aspect ``ratio``) with a horizontal flip, as affine maps."""
    area = scale[0] + torch.rand(batch, generator=generator) * (scale[1] - scale[0])
    log_r = math.log(ratio[0]) + torch.rand(batch, generator=generator) * (math.log(ratio[1]) - math.log(ratio[0]))
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width and height as fractions of the image side
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - h)
    flip = flip_signs(batch, generator, hflip)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def random_erasing(
    x: torch.Tensor, generator: torch.Generator, probability: float, area=(0.02, 1 / 3), log_ratio=(0.3, 3.3)
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) on a normalized batch, as timm's ``RandomErasing(mode="pixel")``: with
    ``probability``, one rectangle per image (``area`` share of it, aspect ratio log-uniform in ``log_ratio``)
    becomes per-pixel normal noise. Where timm redraws a rectangle that does not fit (up to ten times), this
    clips it to the image, so the draw count does not depend on the image. Noise is drawn for the erased images only.
    """
    B, _, H, W = x.shape
    erase = torch.rand(B, generator=generator) < probability
    share = area[0] + torch.rand(B, generator=generator) * (area[1] - area[0])
    low, high = math.log(log_ratio[0]), math.log(log_ratio[1])
    aspect = torch.exp(low + torch.rand(B, generator=generator) * (high - low))
    h = torch.sqrt(share * H * W * aspect).round().clamp(1, H)
    w = torch.sqrt(share * H * W / aspect).round().clamp(1, W)
    top = (torch.rand(B, generator=generator) * (H - h + 1)).floor()
    left = (torch.rand(B, generator=generator) * (W - w + 1)).floor()
    rows = torch.arange(H)[None, :]  # [1, H] against [B, 1] bounds
    cols = torch.arange(W)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
    chosen = erase.nonzero().flatten()
    if len(chosen) == 0:
        return x
    mask = (in_rows[chosen, :, None] & in_cols[chosen, None, :])[:, None].to(x.device)  # [k, 1, H, W]
    noise = torch.randn((len(chosen), *x.shape[1:]), generator=generator).to(x)  # only for the erased images
    x = x.clone()  # keeps the memory format
    index = chosen.to(x.device)
    x[index] = torch.where(mask, noise, x[index])
    return x


class BatchTransform:
    """uint8 [B, 3, H, W] -> normalized float [B, 3, S, S] for training, in the memory order the model runs in.

    ``augment``: ``resize-crop-flip`` resizes to ``train_side`` and takes a random S crop (at evaluation's
    ``preprocess.resize_size`` the crops have the scale of evaluation's centre crop);
    ``keras-vit`` and ``random-resized-crop`` are affine maps; ``none`` is exactly evaluation's geometry.
    ``hflip`` mirrors half of the images (all three random pipelines).
    Then, on the cropped pixels, ``auto_augment`` (``randaugment``: ``ops`` operations at ``magnitude`` of 30,
    or ``trivialaugment``), and after normalization ``erasing``: the probability of random erasing per image.
    """

    def __init__(
        self,
        preprocess: Preprocess,
        augment: str = "none",
        train_side: int | None = None,
        hflip: bool = True,
        channels_last: bool = False,
        auto_augment: str = "none",
        ops: int = 2,
        magnitude: int = 9,
        erasing: float = 0.0,
    ):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"Unknown augmentation '{augment}'; choose one of {', '.join(AUGMENTATIONS)}.")
        if auto_augment not in autoaugment.POLICIES:
            raise ValueError(f"Unknown auto_augment '{auto_augment}'; choose one of {', '.join(autoaugment.POLICIES)}.")
        self.preprocess, self.augment = preprocess, augment
        self.auto_augment, self.ops, self.magnitude, self.erasing = auto_augment, ops, magnitude, erasing
        self.fill = tuple(255 * m for m in preprocess.mean)  # geometric operations fill with the mean colour
        self.train_side, self.hflip = train_side or preprocess.resize_size, hflip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format  # the model's

    def __call__(self, images: torch.Tensor, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
        """``size``: the side of this batch's crops (multi-scale training), else the input size."""
        p = self.preprocess
        if self.augment == "none":
            x = eval_pixels(images, p).float()
        else:
            x = self.geometry(images.float(), generator, size or p.input_size)
        if self.auto_augment == "randaugment":
            x = autoaugment.rand_augment(x, generator, self.ops, self.magnitude, self.fill)
        elif self.auto_augment == "trivialaugment":
            x = autoaugment.trivial_augment(x, generator, self.fill)
        x = normalize(x, p, self.memory_format)
        if self.erasing > 0:
            x = random_erasing(x, generator, self.erasing)
        return x

    def geometry(self, x: torch.Tensor, generator: torch.Generator, S: int) -> torch.Tensor:
        """float [B, 3, H, W] -> float [B, 3, S, S], values 0-255: the random crop, scale and flip."""
        p = self.preprocess
        if self.augment == "resize-crop-flip":  # the keras.io MobileViT pipeline: resize 280, crop 256, flip
            side = round(self.train_side * S / p.input_size)  # the same zoom at every crop size
            x = resize_square(x, side, p.resize_mode, p.interpolation)
            x = random_hflip(random_crop(x, S, generator), generator, self.hflip)
        elif self.augment == "keras-vit":  # the Keras CIFAR-10 ViT pipeline: resize 72, flip, rotate, zoom
            theta = keras_vit_theta(len(x), generator, hflip=self.hflip)
            x = affine(resize_square(x, S, p.resize_mode, p.interpolation), theta, S)
        elif self.augment == "random-resized-crop":  # the paper's ImageNet pipeline
            x = affine(x, random_resized_crop_theta(len(x), generator, hflip=self.hflip), S)
        return x
